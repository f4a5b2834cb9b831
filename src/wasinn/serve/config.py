"""``wasinn serve``'s settings, declared once: the command's options are made from these fields.

Importable without the ``serve`` extra (the command line builds its options from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasinn.core import ConfigError
from wasinn.host.limits import Limits

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WAITING = 64  # per route: requests waiting for one of its worker slots


def _setting(default: Any, help: str) -> Any:
    """A field that is also a ``wasinn serve`` option (wasinn.cli.options.config_option)."""
    return field(default=default, metadata={"help": help})


# A served request's guest gets a minute unless told otherwise: past it a worker counts as
# stuck (/metrics, /healthz); None (``--time-limit 0``) means no limit.
DEFAULT_TIME_LIMIT_MS = 60_000


@dataclass(frozen=True)
class ServeConfig:
    """``wasinn serve``'s options, usable from Python (tests, Ray) as well."""

    routes: dict[str, Path] = field(default_factory=dict)
    workers: int = _setting(
        2, "Guest runs at a time per route (threads in this one process, sharing its models)."
    )
    dirs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    limits: Limits = Limits(time_limit_ms=DEFAULT_TIME_LIMIT_MS)
    cache: bool = True
    max_body_bytes: int = _setting(DEFAULT_MAX_BODY_BYTES, "Largest request body; more: 413.")
    max_waiting: int = _setting(
        DEFAULT_MAX_WAITING, "Requests of one route that may wait for one of its workers; the next gets 503."
    )
    demo: bool = False
    # Preloaded GGML models served at /v1/chat/completions and /v1/embeddings (the first is
    # the default), through the llm-serve guest (``openai_guest``, default: the built one).
    openai: tuple[str, ...] = ()
    openai_guest: Path | None = None
    # Chat requests of one --openai model decoded together (the GGML graph's n-parallel
    # sequence slots, continuous batching); as many chat guests run at once.
    parallel: int = _setting(
        4, "With --openai: chat requests per model decoded together (continuous batching)."
    )
    ctx_size: int = _setting(0, "With --openai: context tokens of each chat (0: the model's).")
    # A Jinja chat template file used instead of each model's GGUF tokenizer.chat_template.
    chat_template: Path | None = None
    # A route's response body is its guest's stdout file mapped, not read into bytes (4-5 ms
    # less for 7.3 MB): a memoryview, which uvicorn sends as it is but ASGI (bytes) does not
    # promise, and Ray Serve cannot pickle. ``wasinn serve`` turns it on for its uvicorn.
    mapped_responses: bool = False
    # After SIGTERM: requests in flight may finish, and the process is gone, within this
    # (wasinn.serve.lifecycle; the command's uvicorn only, not Ray Serve).
    drain_seconds: float = _setting(
        30.0, "After SIGTERM: new requests get 503, those in flight may finish; the process ends within it."
    )


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
