"""From a server description (routes, models, limits) to the ASGI app, and running it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette

from wasinn.core import ConfigError
from wasinn.runtime import Limits, Runtime
from wasinn.serve.app import DEFAULT_MAX_BODY_BYTES, GuestRoute, RouteHandler, ServerState, create_app
from wasinn.serve.metrics import bound_malloc
from wasinn.serve.pool import GuestPool

ROAD_ROUTE = "road-segmentation"  # the demo's route and preloaded model name
# A served request's guest gets a minute unless told otherwise: past it a worker counts as
# stuck (/metrics, /healthz); None (``--time-limit 0``) means no limit.
DEFAULT_TIME_LIMIT_MS = 60_000


@dataclass(frozen=True)
class ServeConfig:
    """``wasinn serve``'s options, usable from Python (tests, Ray) as well."""

    routes: dict[str, Path] = field(default_factory=dict)
    workers: int = 2
    dirs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    limits: Limits = Limits(time_limit_ms=DEFAULT_TIME_LIMIT_MS)
    cache: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_waiting: int = 64
    demo: bool = False
    # Preloaded GGML models served at /v1/chat/completions and /v1/embeddings (the first is
    # the default), through the llm-serve guest (``openai_guest``, default: the built one).
    openai: tuple[str, ...] = ()
    openai_guest: Path | None = None
    # Chat requests of one --openai model decoded together (the GGML graph's n-parallel
    # sequence slots, continuous batching); as many guests run at once.
    parallel: int = 4
    # A route's response body is its guest's stdout file mapped, not read into bytes (4-5 ms
    # less for 7.3 MB): a memoryview, which uvicorn sends as it is but ASGI (bytes) does not
    # promise, and Ray Serve cannot pickle. ``wasinn serve`` turns it on for its uvicorn.
    mapped_responses: bool = False
    # After SIGTERM: requests in flight may finish, and the process is gone, within this
    # (wasinn.serve.lifecycle; the command's uvicorn only, not Ray Serve).
    drain_seconds: float = 30.0


def parse_route(text: str) -> tuple[str, Path]:
    """``ROUTE=MODULE.wasm`` → (route, module); the route is a single path segment."""
    name, sep, module = text.partition("=")
    name = name.strip("/")
    if not sep or not name or not module:
        raise ConfigError(f"bad route {text!r}: expected ROUTE=MODULE.wasm, e.g. segment=nn-pipe.wasm")
    if "/" in name or name in {"healthz", "metrics", "demo", "v1"}:
        raise ConfigError(f"bad route {text!r}: {name!r} is reserved or not a single path segment")
    path = Path(module)
    if not path.is_file():
        raise ConfigError(f"route {name}: {module}: no such file")
    return name, path


def parse_routes(texts: Sequence[str]) -> dict[str, Path]:
    routes: dict[str, Path] = {}
    for text in texts:
        name, path = parse_route(text)
        if name in routes:
            raise ConfigError(f"route {name!r} is given twice")
        routes[name] = path
    return routes


def with_demo(config: ServeConfig, *, download: bool = True) -> ServeConfig:
    """The config plus the demo's road-segmentation route and model (found or downloaded)."""
    from wasinn.core import ModelError
    from wasinn.demo import MODEL_ID, find_guest
    from wasinn.models import ensure_model

    try:
        model_dir = ensure_model(MODEL_ID, download_missing=download)
    except ModelError as err:
        raise ConfigError(str(err)) from None
    xml, weights = model_dir / f"{MODEL_ID}.xml", model_dir / f"{MODEL_ID}.bin"
    routes = {ROAD_ROUTE: find_guest("nn-pipe.wasm"), **config.routes}
    preload = (f"{ROAD_ROUTE}:openvino:cpu:{xml}:{weights}", *config.preload)
    return ServeConfig(**{**vars(config), "routes": routes, "preload": preload, "demo": True})


def build_app(config: ServeConfig) -> Starlette:
    """One :class:`Runtime` for the whole server, so each preloaded model is loaded once."""
    bound_malloc()
    if not config.routes and not config.openai:
        raise ConfigError("no routes: give at least one ROUTE=MODULE.wasm (or --demo, or --openai MODEL)")
    runtime = Runtime(
        dirs=config.dirs, env=config.env, preload=config.preload, cache=config.cache, limits=config.limits
    )
    for name in runtime.registry.names:
        # Load now: no request pays for it, and a model that cannot load stops the start.
        runtime.registry.get(name)
    state = ServerState(
        max_body_bytes=config.max_body_bytes,
        max_waiting=config.max_waiting,
        mapped_responses=config.mapped_responses,
    )
    state.closers.append(runtime.close)
    handlers: list[RouteHandler] = []
    routes: dict[str, GuestRoute] = {}
    for name, module in config.routes.items():
        pool = GuestPool(runtime, module, config.workers, name=name)
        state.pools.append(pool)
        routes[name] = GuestRoute(name, pool, state)
        handlers.append(routes[name])
    if config.demo:
        from wasinn.serve.page import demo_handlers

        handlers.extend(demo_handlers(routes[ROAD_ROUTE], state))
    if config.openai:
        from wasinn.serve.openai import openai_handlers, openai_models

        models = openai_models(runtime, config.openai, config.openai_guest, state, config.parallel)
        handlers.extend(openai_handlers(models, state))
    return create_app(handlers, state)
