"""The host: engine, compiled-guest caches, limits, instances and the runtime that makes them.

Layer above :mod:`wasinn.abi` (which it links into each store) and below ``serve``/``cli``.
"""

from wasinn.host._cache import (
    ComponentCache,
    ModuleCache,
    first_line,
    is_component,
    pool_instances,
    shared_engine,
)
from wasinn.host._epoch import EPOCH_TICK_SECONDS, EpochWatch, epoch_ticker
from wasinn.host.component import HOSTCALL_BYTE_LIMIT, ComponentInstance
from wasinn.host.instance import GuestHost, GuestInstance, Instance, describe_trap
from wasinn.host.limits import Limits, RunClock
from wasinn.host.options import DirMapping, parse_env, parse_preload
from wasinn.host.runtime import CompiledGuest, Runtime
from wasinn.host.wasi import InputStream, OutputStream, Stdio

__all__ = [
    "EPOCH_TICK_SECONDS",
    "HOSTCALL_BYTE_LIMIT",
    "CompiledGuest",
    "ComponentCache",
    "ComponentInstance",
    "DirMapping",
    "EpochWatch",
    "GuestHost",
    "GuestInstance",
    "InputStream",
    "Instance",
    "Limits",
    "ModuleCache",
    "OutputStream",
    "Runtime",
    "RunClock",
    "Stdio",
    "describe_trap",
    "epoch_ticker",
    "first_line",
    "is_component",
    "parse_env",
    "parse_preload",
    "pool_instances",
    "shared_engine",
]
