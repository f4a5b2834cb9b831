"""One instantiated guest: the contract a module and a component both keep, and the module.

:class:`GuestInstance` is what the runtime hands out and the server runs: ``run()`` returns
the exit code or raises the wasinn exception for what stopped the guest (a trap, a limit, an
interruption), ``restart_clock()`` starts the time limit for a pre-instantiated guest, and
``close()`` releases its WASI-NN handles and then its store (its linear memory), at once
rather than at the next cyclic collection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import wasmtime

from wasinn.abi._fastcall import define_i32_func
from wasinn.abi.ephemeral import EphemeralNN
from wasinn.abi.ephemeral_rpc import RemoteEphemeralNN
from wasinn.abi.nnrpc_client import RpcClient
from wasinn.abi.wasmedge_plugins import plugin_modules
from wasinn.core import GuestExit, GuestTrap, Interruption, LimitExceeded, ModuleError, NNSession
from wasinn.host._cache import first_line
from wasinn.host._epoch import EpochWatch
from wasinn.host.limits import Limits, RunClock, new_store
from wasinn.host.options import DirMapping
from wasinn.host.wasi import Stdio


class GuestHost(Protocol):
    """What an instance takes from the runtime that makes it (:class:`wasinn.host.Runtime`)."""

    engine: wasmtime.Engine
    limits: Limits
    dirs: list[DirMapping]
    nn_rpc: RpcClient | None  # set: wasi_ephemeral_nn goes to this nn-rpc server

    def wasi_config(self, argv: Sequence[str], stdio: Stdio | None = None) -> wasmtime.WasiConfig: ...

    def new_session(
        self, deadline: Callable[[], float | None], interruption: Interruption | None = None
    ) -> NNSession: ...


class GuestInstance(ABC):
    """A module or a component, instantiated with its own store, WASI state and NN session."""

    def __init__(
        self,
        host: GuestHost,
        argv: Sequence[str],
        stdio: Stdio | None,
        interruption: Interruption | None,
    ) -> None:
        self.limits = host.limits
        self.store = new_store(host.engine, host.limits)
        self.store.set_wasi(host.wasi_config(argv, stdio))
        self.clock = RunClock(host.limits, interruption)
        # An interruptible guest's wasm code is checked at every epoch tick (time limit included).
        self._watch = EpochWatch(self.store, self.clock.stop_reason) if interruption is not None else None
        self.clock.start(self.store, watched=self._watch is not None)
        self.nn = host.new_session(self.clock.time_left, interruption)
        self._closed = False

    def restart_clock(self) -> None:
        """Start the time limit now: a pre-instantiated (warm) instance counts from its run."""
        self.clock.start(self.store, watched=self._watch is not None)

    def run(self) -> int:
        """Run the guest's command entry point; its exit code."""
        if self._watch is not None:
            self._watch.stopped = None
        try:
            return self._run()
        except GuestExit as exit_:
            return exit_.code

    @abstractmethod
    def _run(self) -> int:
        """Call the entry point; raise what stopped the guest, translated."""

    def _stopped_at_tick(self) -> BaseException | None:
        """Why the epoch check stopped the guest, if it did (the trap itself says less)."""
        return self._watch.stopped if self._watch is not None else None

    @abstractmethod
    def _release(self) -> None:
        """Release the guest's WASI-NN (and plug-in) state."""

    def close(self) -> None:
        """Release the guest's handles, then its store; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()
        finally:
            # The store holds the guest's linear memory (a request's megabytes) and sits in a
            # reference cycle: without this it waits for Python's cyclic collector (a server's
            # RSS climbed ~7 MB a request and fell by 150 MB at each collection).
            self.store.close()

    def __enter__(self) -> GuestInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def translate_exit(error: BaseException) -> BaseException | None:
    """What a module and a component share: exits and wasinn's own stops, or None."""
    if isinstance(error, GuestExit | GuestTrap):
        return error
    if isinstance(error, wasmtime.ExitTrap):
        return GuestExit(error.code)
    return None


class Instance(GuestInstance):
    """One instantiated core module: its store, WASI preview 1 state and WASI-NN handles."""

    def __init__(
        self,
        host: GuestHost,
        module: wasmtime.Module,
        argv: Sequence[str],
        stdio: Stdio | None = None,
        interruption: Interruption | None = None,
    ) -> None:
        super().__init__(host, argv, stdio, interruption)
        self._pending: BaseException | None = None  # raised by a host function of this instance
        remote = host.nn_rpc
        self._abi = (
            EphemeralNN(self.nn, self._park)
            if remote is None
            else RemoteEphemeralNN(self.nn, self._park, remote)
        )
        linker = wasmtime.Linker(host.engine)
        linker.define_wasi()
        # wasmtime's proc_exit refuses codes of 126 and above; guests may use any u8 code.
        linker.allow_shadowing = True
        self._proc_exit = define_i32_func(
            linker, "wasi_snapshot_preview1", "proc_exit", 1, _proc_exit, self._park, returns=False
        )
        self._abi.define(linker)
        self._plugins = plugin_modules(module, self._park, [(d.guest, d.host) for d in host.dirs])
        for plugin in self._plugins:
            plugin.define(linker)
        try:
            self.instance = linker.instantiate(self.store, module)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"{argv[0]}: cannot link: {first_line(err)}") from None
        self.memory: wasmtime.Memory | None = next(
            (
                item
                for item in self.instance.exports(self.store).values()
                if isinstance(item, wasmtime.Memory)
            ),
            None,
        )
        self._abi.attach(self.store, self.memory)
        for plugin in self._plugins:
            plugin.attach(self.store, self.memory)

    def _park(self, error: BaseException) -> None:
        self._pending = error

    def call(self, name: str, *params: Any) -> Any:
        """Call an exported function, turning traps and exits into wasinn exceptions."""
        function = self.instance.exports(self.store).get(name)
        if not isinstance(function, wasmtime.Func):
            raise ModuleError(f"the module exports no function {name!r}")
        self._pending = None
        if self._watch is not None:
            self._watch.stopped = None
        try:
            return function(self.store, *params)
        except Exception as err:
            pending, self._pending = self._pending, None
            stopped = self._stopped_at_tick()
            if stopped is not None:
                raise stopped from None
            raise self._translate(pending or err) from None

    def _translate(self, error: BaseException) -> BaseException:
        """The wasinn exception for what stopped the guest."""
        if isinstance(error, LimitExceeded):
            return self.limits.time_limit_exceeded(" during compute")
        known = translate_exit(error)
        if known is not None:
            return known
        if isinstance(error, wasmtime.Trap):
            if error.trap_code is wasmtime.TrapCode.INTERRUPT:
                return self.limits.time_limit_exceeded()
            if error.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
                return LimitExceeded(f"gas limit of {self.limits.gas} exceeded")
            return GuestTrap(describe_trap(error))
        if isinstance(error, wasmtime.WasmtimeError):
            return GuestTrap(first_line(error))
        return error

    def _run(self) -> int:
        if "_start" not in self.instance.exports(self.store):
            raise ModuleError("the module has no _start export: it is not a WASI command")
        self.call("_start")
        return 0

    def _release(self) -> None:
        self._abi.close()
        for plugin in self._plugins:
            plugin.close()


def _proc_exit(code: int) -> None:
    # Raised through wasmtime as a trap; the instance re-raises it where the guest was entered.
    raise GuestExit(code & 0xFFFFFFFF)


def describe_trap(trap: wasmtime.Trap) -> str:
    """``guest trapped: <what> in function <name>``, one line."""
    kind = first_line(trap).removeprefix("wasm trap: ")
    frames = trap.frames
    if not frames:
        return f"guest trapped: {kind}"
    top = frames[0]
    where = top.func_name or f"#{top.func_index}"
    return f"guest trapped: {kind} in function {where}"
