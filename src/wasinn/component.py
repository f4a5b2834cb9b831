"""Running WebAssembly *components*: ``wasi:cli`` commands that import ``wasi:nn`` (WIT).

``wasinn run`` hands a file here when its header says component (layer 1) rather than core
module. The component gets WASI preview 2 from wasmtime (``Linker.add_wasip2``), the
``wasi:nn`` front-end of :mod:`wasinn.abi.wit` and the same directories, environment,
preloaded models and limits as a module would. Compiled components are cached by content
hash like modules (a Python guest takes seconds to compile and milliseconds to deserialize).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime
from wasmtime import component

from wasinn._epoch import EPOCH_TICK_SECONDS, EpochWatch
from wasinn.abi import _bytelists
from wasinn.abi.wit import WitNN
from wasinn.backends import backends
from wasinn.core import (
    GraphEncoding,
    GuestCancelled,
    GuestExit,
    GuestTrap,
    Interruption,
    LimitExceeded,
    ModuleError,
    TimeLimitExceeded,
)
from wasinn.runtime import ModuleCache, Stdio, first_line

if TYPE_CHECKING:
    from wasinn.runtime import Runtime

WASM_MAGIC = b"\0asm"
COMPONENT_LAYER = b"\x01\x00"  # bytes 6-7 of the header: 0 for a core module, 1 for a component
RUN_INTERFACE = "wasi:cli/run@0.2.0"
# wasmtime-py lifts guest→host values against a per-call budget (spec wit-wasi-nn.md §9.3).
HOSTCALL_BYTE_LIMIT = 2_796_201
_EXIT_STATUS = re.compile(r"[Ee]xited with i32 exit status (\d+)")


def is_component(path: str | Path) -> bool:
    """Whether ``path`` holds a component (rather than a core module), by its 8-byte header."""
    try:
        with open(path, "rb") as file:
            header = file.read(8)
    except OSError:
        return False
    return header[:4] == WASM_MAGIC and header[6:8] == COMPONENT_LAYER


class ComponentCache(ModuleCache):
    """Compiled components, serialized like modules and keyed by content hash."""

    def _deserialize(self, cached: Path) -> component.Component:
        return component.Component.deserialize_file(self._engine, str(cached))

    def _compile(self, path: Path, wasm: bytes) -> component.Component:
        try:
            return component.Component(self._engine, wasm)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"{path} is not a valid WebAssembly component: {first_line(err)}") from None


def component_cache(runtime: Runtime) -> ComponentCache:
    """The runtime's component cache, beside its module cache (same directory and key)."""
    cache: ComponentCache | None = getattr(runtime, "_components", None)
    if cache is None:
        modules = runtime.modules
        cache = ComponentCache(modules._engine, modules._directory, modules._fingerprint)
        runtime._components = cache  # type: ignore[attr-defined]
    return cache


def _installed_backends() -> set[GraphEncoding]:
    return {info.encoding for info in backends() if info.installed}


class ComponentInstance:
    """One instantiated component: its store, WASI p2 state and ``wasi:nn`` resources."""

    def __init__(
        self,
        runtime: Runtime,
        compiled: component.Component,
        argv: Sequence[str],
        stdio: Stdio | None = None,
        interruption: Interruption | None = None,
    ) -> None:
        self.limits = runtime.limits
        self.store, deadline = runtime.new_store()
        self.store.set_wasi(runtime.wasi_config(argv, stdio))
        # The host functions live in wasmtime-py's global table until the store is freed, so
        # nothing they reach may hold this object (or its store) alive: no bound method here,
        # only a cell that restart_clock moves.
        self._deadline = [deadline]
        cell = self._deadline
        self.nn = runtime.new_session(
            lambda: None if cell[0] is None else cell[0] - time.monotonic(), interruption
        )
        # As a module's Instance: an interruptible guest's wasm code is checked at every tick.
        self._watch = (
            EpochWatch(self.store, partial(_stop_reason, interruption, cell, self.limits.time_limit_ms))
            if interruption is not None
            else None
        )
        _bytelists.install()
        installed = _installed_backends()
        self.wit = WitNN(self.nn, installed.__contains__)
        # A linker per store: wasmtime-py's host functions cannot tell stores apart (§9.3).
        linker = component.Linker(runtime.engine)
        linker.add_wasip2()
        self.wit.define(linker)
        try:
            self.instance = linker.instantiate(self.store, compiled)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"{argv[0]}: cannot link: {first_line(err)}") from None

    def restart_clock(self) -> None:
        """Start the time limit now (as :meth:`wasinn.runtime.Instance.restart_clock`)."""
        limit = self.limits.time_limit_ms
        self._deadline[0] = None if limit is None else time.monotonic() + limit / 1000
        if self._watch is not None:
            self.store.set_epoch_deadline(1)  # _stop_reason checks the deadline at each tick
        elif limit is not None:
            self.store.set_epoch_deadline(max(1, math.ceil(limit / 1000 / EPOCH_TICK_SECONDS)))

    def run(self) -> int:
        """Call the component's ``wasi:cli/run`` export; its exit code."""
        outer = self.instance.get_export_index(self.store, RUN_INTERFACE)
        inner = self.instance.get_export_index(self.store, "run", outer) if outer is not None else None
        function = self.instance.get_func(self.store, inner) if inner is not None else None
        if function is None:
            raise ModuleError(f"the component exports no {RUN_INTERFACE}: it is not a WASI command")
        if self._watch is not None:
            self._watch.stopped = None
        try:
            outcome = function(self.store)
            function.post_return(self.store)
        except Exception as err:
            if self._watch is not None and self._watch.stopped is not None:
                raise self._watch.stopped from None  # stopped at an epoch tick: why
            stopped = self._translate(err)
            if isinstance(stopped, GuestExit):
                return stopped.code
            raise stopped from None
        return 0 if getattr(outcome, "tag", "ok") == "ok" else 1

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, GuestExit | GuestTrap):
            return error
        if isinstance(error, wasmtime.ExitTrap):
            return GuestExit(error.code)
        text = str(error)
        status = _EXIT_STATUS.search(text)
        if status:
            return GuestExit(int(status.group(1)))
        # A component call reports traps as plain WasmtimeErrors: recognise them by their text.
        trap_code = error.trap_code if isinstance(error, wasmtime.Trap) else None
        if trap_code is wasmtime.TrapCode.INTERRUPT or "wasm trap: interrupt" in text:
            return TimeLimitExceeded(f"time limit of {self.limits.time_limit_ms} ms exceeded")
        if trap_code is wasmtime.TrapCode.OUT_OF_FUEL or "all fuel consumed" in text:
            return LimitExceeded(f"gas limit of {self.limits.gas} exceeded")
        if "fuel allocated for hostcalls has been exhausted" in text:
            return GuestTrap(
                f"guest trapped: one call passed the host more than {HOSTCALL_BYTE_LIMIT:,} bytes, "
                "wasmtime-py's per-call limit for a component; load big models by name "
                "(--nn-preload) and pass big tensors in pieces (wasinn:nn/chunks, docs/components.md)"
            )
        if isinstance(error, wasmtime.WasmtimeError):
            return GuestTrap(f"guest trapped: {first_line(error)}")
        return error

    def close(self) -> None:
        self.wit.close()
        self.nn.close()

    def __enter__(self) -> ComponentInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_reason(
    interruption: Interruption, deadline: list[float | None], limit_ms: int | None
) -> BaseException | None:
    """At each epoch tick of an interruptible component: why it must stop, or None."""
    if interruption.reason is not None:
        return GuestCancelled(interruption.reason)
    if deadline[0] is not None and time.monotonic() >= deadline[0]:
        return TimeLimitExceeded(f"time limit of {limit_ms} ms exceeded")
    return None


def instantiate_component(runtime: Runtime, path: Path, args: Sequence[str]) -> ComponentInstance:
    return ComponentInstance(runtime, component_cache(runtime).load(path), [str(path), *args])
