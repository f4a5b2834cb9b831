"""From a server description (routes, models, limits) to the ASGI app, and running it."""

from __future__ import annotations

from starlette.applications import Starlette

from wasinn.core import ConfigError
from wasinn.host import Runtime
from wasinn.serve.app import GuestRoute, RouteHandler, ServerState, create_app
from wasinn.serve.config import ServeConfig
from wasinn.serve.metrics import bound_malloc
from wasinn.serve.pool import GuestPool

ROAD_ROUTE = "road-segmentation"  # the demo's route and preloaded model name


def with_demo(config: ServeConfig, *, download: bool = True) -> ServeConfig:
    """The config plus the demo's road-segmentation route and model (found or downloaded)."""
    from wasinn.core import ModelError
    from wasinn.tools.demo import MODEL_ID, find_guest
    from wasinn.tools.models import ensure_model

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
        from wasinn.serve.openai_routes import openai_handlers, openai_models

        models = openai_models(
            runtime,
            config.openai,
            config.openai_guest,
            state,
            config.chat_template,
            parallel=config.parallel,
            ctx_size=config.ctx_size,
        )
        handlers.extend(openai_handlers(models, state))
    return create_app(handlers, state)
