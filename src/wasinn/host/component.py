"""Running WebAssembly *components*: ``wasi:cli`` commands that import ``wasi:nn`` (WIT).

``wasinn run`` hands a file here when its header says component (layer 1) rather than core
module. The component gets WASI preview 2 from wasmtime (``Linker.add_wasip2``), the
``wasi:nn`` front-end of :mod:`wasinn.abi.wit` and the same directories, environment,
preloaded models and limits as a module would. Compiled components are cached by content
hash like modules (a Python guest takes seconds to compile and milliseconds to deserialize).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import wasmtime
from wasmtime import component

from wasinn.abi import _bytelists
from wasinn.abi.wit import WitNN
from wasinn.backends import backends
from wasinn.core import (
    GraphEncoding,
    GuestExit,
    GuestTrap,
    Interruption,
    LimitExceeded,
    ModuleError,
    TimeLimitExceeded,
)
from wasinn.host._cache import first_line
from wasinn.host.instance import GuestHost, GuestInstance, translate_exit
from wasinn.host.wasi import Stdio

RUN_INTERFACE = "wasi:cli/run@0.2.0"
# wasmtime-py lifts guest→host values against a per-call budget (spec wit-wasi-nn.md §9.3).
HOSTCALL_BYTE_LIMIT = 2_796_201
_EXIT_STATUS = re.compile(r"[Ee]xited with i32 exit status (\d+)")


def _installed_backends() -> set[GraphEncoding]:
    return {info.encoding for info in backends() if info.installed}


class ComponentInstance(GuestInstance):
    """One instantiated component: its store, WASI p2 state and ``wasi:nn`` resources.

    The host functions live in wasmtime-py's global table until the store is freed, so
    nothing they reach may hold this object (or its store) alive: the session's deadline is
    the clock's, and the clock holds no store.
    """

    def __init__(
        self,
        host: GuestHost,
        compiled: component.Component,
        argv: Sequence[str],
        stdio: Stdio | None = None,
        interruption: Interruption | None = None,
    ) -> None:
        super().__init__(host, argv, stdio, interruption)
        _bytelists.install()
        installed = _installed_backends()
        self.wit = WitNN(self.nn, installed.__contains__)
        # A linker per store: wasmtime-py's host functions cannot tell stores apart (§9.3).
        linker = component.Linker(host.engine)
        linker.add_wasip2()
        self.wit.define(linker)
        try:
            self.instance = linker.instantiate(self.store, compiled)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"{argv[0]}: cannot link: {first_line(err)}") from None

    def _run(self) -> int:
        """Call the component's ``wasi:cli/run`` export; its exit code."""
        outer = self.instance.get_export_index(self.store, RUN_INTERFACE)
        inner = self.instance.get_export_index(self.store, "run", outer) if outer is not None else None
        function = self.instance.get_func(self.store, inner) if inner is not None else None
        if function is None:
            raise ModuleError(f"the component exports no {RUN_INTERFACE}: it is not a WASI command")
        try:
            outcome = function(self.store)
            function.post_return(self.store)
        except Exception as err:
            stopped = self._stopped_at_tick()
            if stopped is not None:
                raise stopped from None
            raise self._translate(err) from None
        return 0 if getattr(outcome, "tag", "ok") == "ok" else 1

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, TimeLimitExceeded):  # raised in a host call: named as a module's is
            return self.limits.time_limit_exceeded(" during compute")
        known = translate_exit(error)
        if known is not None:
            return known
        text = str(error)
        status = _EXIT_STATUS.search(text)
        if status:
            return GuestExit(int(status.group(1)))
        # A component call reports traps as plain WasmtimeErrors: recognise them by their text.
        trap_code = error.trap_code if isinstance(error, wasmtime.Trap) else None
        if trap_code is wasmtime.TrapCode.INTERRUPT or "wasm trap: interrupt" in text:
            return self.limits.time_limit_exceeded()
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

    def _release(self) -> None:
        self.wit.close()
        self.nn.close()
