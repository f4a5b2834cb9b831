"""What a guest may use, and one run's clock: its time limit and its stop request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from wasinn.core import ConfigError, GuestCancelled, Interruption, TimeLimitExceeded
from wasinn.host._epoch import EPOCH_TICK_SECONDS, NO_DEADLINE

WASM_PAGE = 65536


def _flag(flag: str, metavar: str, help: str) -> Any:
    """A limit's field: unlimited by default, with its command-line flag (one declaration for
    ``wasinn run``, ``serve`` and ``rpc-server``: wasinn.cli.options)."""
    return field(default=None, metadata={"flag": flag, "metavar": metavar, "help": help})


@dataclass(frozen=True)
class Limits:
    """What a guest may use; ``None`` means unlimited. Mirrors WasmEdge's option names.

    ``memory_pages``: linear memory cap in 64 KiB pages (memory.grow past it returns -1).
    ``time_limit_ms``: wall-clock limit for the whole run, native inference included.
    ``gas``: wasmtime fuel, roughly one unit per wasm instruction.
    The rest are host-side caps, reported to the guest as errno 5 (runtime_error).
    The command line's limit options are made from these fields (``wasinn.cli.options``).
    """

    memory_pages: int | None = _flag(
        "--memory-page-limit",
        "PAGES",
        "Cap the guest's linear memory (64 KiB pages); memory.grow past it returns -1.",
    )
    time_limit_ms: int | None = _flag(
        "--time-limit",
        "MS",
        "Stop the guest after MS milliseconds of wall-clock time, native inference included.",
    )
    gas: int | None = _flag(
        "--gas-limit", "N", "Stop the guest after N units of wasmtime fuel (about one per instruction)."
    )
    max_model_bytes: int | None = _flag(
        "--max-model-bytes", "BYTES", "Refuse a model larger than BYTES (the guest gets errno 5)."
    )
    max_tensor_bytes: int | None = _flag(
        "--max-tensor-bytes", "BYTES", "Refuse a model that declares a tensor larger than BYTES (errno 5)."
    )
    max_graphs: int | None = _flag(
        "--max-graphs", "N", "At most N graphs loaded at once per guest; the next load fails."
    )
    max_contexts: int | None = _flag(
        "--max-contexts", "N", "At most N execution contexts at once per guest; the next one fails."
    )

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value < 0:
                raise ConfigError(f"limit {name} must not be negative, got {value}")

    def time_limit_exceeded(self, during: str = "") -> TimeLimitExceeded:
        return TimeLimitExceeded(f"time limit of {self.time_limit_ms} ms exceeded{during}")


def new_store(engine: wasmtime.Engine, limits: Limits) -> wasmtime.Store:
    """A store with ``limits``' fuel and memory caps (its clock is set by :class:`RunClock`)."""
    store = wasmtime.Store(engine)
    if limits.gas is not None:
        store.set_fuel(limits.gas)
    if limits.memory_pages is not None:
        store.set_limits(memory_size=limits.memory_pages * WASM_PAGE)
    return store


class RunClock:
    """One run's deadline and stop request, shared by its NN calls and its epoch check.

    It holds no store: host functions reach it, and they live in wasmtime-py's global table
    until the store is freed, so a store reachable from here would never be freed.
    """

    def __init__(self, limits: Limits, interruption: Interruption | None = None) -> None:
        self.limits = limits
        self.interruption = interruption
        self.deadline: float | None = None

    def start(self, store: wasmtime.Store, *, watched: bool) -> None:
        """Count the time limit from now. A watched store (an :class:`EpochWatch` on it) is
        checked at every tick; otherwise the epoch deadline itself is the time limit."""
        limit = self.limits.time_limit_ms
        self.deadline = None if limit is None else time.monotonic() + limit / 1000
        if watched:
            store.set_epoch_deadline(1)
        elif limit is None:
            store.set_epoch_deadline(NO_DEADLINE)
        else:
            store.set_epoch_deadline(max(1, math.ceil(limit / 1000 / EPOCH_TICK_SECONDS)))

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def stop_reason(self) -> BaseException | None:
        """At each epoch tick of a watched guest: why it must stop, or None."""
        if self.interruption is not None and self.interruption.reason is not None:
            return GuestCancelled(self.interruption.reason)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return self.limits.time_limit_exceeded()
        return None
