"""The wasm side: engine, compiled-module cache, WASI preview 1, and running a guest."""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wasmtime

from wasinn._epoch import EPOCH_TICK_SECONDS, NO_DEADLINE, EpochWatch, epoch_ticker
from wasinn.abi._fastcall import define_i32_func
from wasinn.abi._plugin import resolve_guest_path
from wasinn.abi.ephemeral import EphemeralNN
from wasinn.abi.ephemeral_rpc import RemoteEphemeralNN
from wasinn.abi.wasmedge_plugins import plugin_modules
from wasinn.backends import get_backend
from wasinn.core import (
    ConfigError,
    GuestCancelled,
    GuestExit,
    GuestTrap,
    Interruption,
    LimitExceeded,
    ModelRegistry,
    ModuleError,
    NNSession,
    Preload,
    TimeLimitExceeded,
)
from wasinn.options import DirMapping, parse_env, parse_preload
from wasinn.paths import user_cache_dir
from wasinn.rpc.client import ClientOptions, nn_rpc_client

if TYPE_CHECKING:
    from wasmtime.component import Component

    from wasinn.component import ComponentInstance

# Bump when the engine configuration below changes: it is part of the cache key.
ENGINE_FINGERPRINT = "cranelift-epoch-v2"
WASM_PAGE = 65536


@dataclass(frozen=True)
class Limits:
    """What a guest may use; ``None`` means unlimited. Mirrors WasmEdge's option names.

    ``memory_pages``: linear memory cap in 64 KiB pages (memory.grow past it returns -1).
    ``time_limit_ms``: wall-clock limit for the whole run, native inference included.
    ``gas``: wasmtime fuel, roughly one unit per wasm instruction.
    The rest are host-side caps, reported to the guest as errno 5 (runtime_error).
    """

    memory_pages: int | None = None
    time_limit_ms: int | None = None
    gas: int | None = None
    max_model_bytes: int | None = None
    max_tensor_bytes: int | None = None
    max_graphs: int | None = None
    max_contexts: int | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value < 0:
                raise ConfigError(f"limit {name} must not be negative, got {value}")


class ModuleCache:
    """Compiled modules serialized under a cache directory, keyed by content and engine."""

    def __init__(self, engine: wasmtime.Engine, directory: Path | None, fingerprint: str = "") -> None:
        self._engine = engine
        self._directory = directory
        self._fingerprint = fingerprint  # what else about the engine changes compiled code

    def load(self, path: Path) -> Any:
        try:
            wasm = path.read_bytes()
        except OSError as err:
            raise ModuleError(f"cannot read {path}: {err.strerror or err}") from None
        if self._directory is None:
            return self._compile(path, wasm)
        cached = self._directory / f"{self._key(wasm)}.cwasm"
        if cached.is_file():
            try:
                return self._deserialize(cached)
            except wasmtime.WasmtimeError:
                pass  # stale or damaged: compile again and overwrite
        module = self._compile(path, wasm)
        self._store(cached, module)
        return module

    def _deserialize(self, cached: Path) -> Any:
        return wasmtime.Module.deserialize_file(self._engine, str(cached))

    def _compile(self, path: Path, wasm: bytes) -> Any:
        try:
            return wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "invalid module"
            raise ModuleError(f"{path} is not a valid WebAssembly module: {reason}") from None

    def _key(self, wasm: bytes) -> str:
        digest = hashlib.sha256(wasm)
        digest.update(f"\0{_wasmtime_version()}\0{ENGINE_FINGERPRINT}\0{self._fingerprint}".encode())
        return digest.hexdigest()

    @staticmethod
    def _store(target: Path, module: Any) -> None:
        # A cache that cannot be written only costs speed, never the run.
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                file.write(module.serialize())
            os.replace(temporary, target)
        except OSError:
            pass


# A file for a guest output stream, or a callable given each chunk the guest writes.
OutputStream = str | Path | Callable[[bytes], object]
# A file for a guest's stdin, or the bytes themselves (a server's request body: no file).
InputStream = str | Path | bytes
Stdio = tuple[InputStream | None, OutputStream | None, OutputStream | None]

_version_lock = threading.Lock()
_versions: dict[str, str] = {}


def _wasmtime_version() -> str:
    with _version_lock:
        if "wasmtime" not in _versions:
            _versions["wasmtime"] = metadata.version("wasmtime")
        return _versions["wasmtime"]


_engines: dict[bool, wasmtime.Engine] = {}


def shared_engine(*, fuel: bool = False) -> wasmtime.Engine:
    """One engine per process (and fuel setting): compiled modules belong to their engine.

    Epoch interruption is always on, so a time limit costs nothing to switch on; fuel
    metering slows every guest, so it has its own engine, used only with a gas limit.
    """
    with _version_lock:
        engine = _engines.get(fuel)
        if engine is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            engine = _engines[fuel] = wasmtime.Engine(config)
        return engine


class Runtime:
    """Runs WASI command modules that may import ``wasi_ephemeral_nn``.

    >>> Runtime(dirs=[".:."], preload=["m:openvino:cpu:m.xml:m.bin"]).run("app.wasm", ["x"])  # doctest: +SKIP
    0

    Options mirror ``wasinn run``: ``dirs`` as ``--dir`` (``"GUEST:HOST"`` strings or
    :class:`DirMapping`), ``env`` as ``--env``, ``preload`` as ``--nn-preload``, ``limits``
    as the limit options, ``cache=False`` as ``--no-cache``. Preloaded files are read here,
    so a missing one fails at construction with its name. ``stdin``/``stdout``/``stderr``
    name files for the guest's streams (by default it shares this process's).
    """

    def __init__(
        self,
        *,
        dirs: Sequence[str | DirMapping] = (),
        env: Mapping[str, str] | Iterable[str] = (),
        preload: Sequence[str | Preload] = (),
        cache: bool = True,
        cache_dir: str | Path | None = None,
        limits: Limits = Limits(),
        stdin: str | Path | None = None,
        stdout: str | Path | None = None,
        stderr: str | Path | None = None,
        nn_rpc: ClientOptions | None = None,
    ) -> None:
        self.dirs = [d if isinstance(d, DirMapping) else DirMapping.parse(d) for d in dirs]
        for mapping in self.dirs:
            mapping.check()
        self.env = parse_env(env)
        # With nn_rpc the models live on the server: --nn-preload is ignored, as WasmEdge does.
        self.nn_rpc = nn_rpc_client(nn_rpc, preload)
        self.preloads = [] if nn_rpc else [p if isinstance(p, Preload) else parse_preload(p) for p in preload]
        # Read now, loaded once on first use and shared by every instance of this runtime.
        self.registry = ModelRegistry(self.preloads, get_backend)
        self.limits = limits
        # Files for the guest's standard streams; None passes this process's own through.
        self.stdio = (stdin, stdout, stderr)
        self.engine = shared_engine(fuel=limits.gas is not None)
        directory = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "modules"
        self.modules = ModuleCache(
            self.engine, directory if cache else None, f"fuel={limits.gas is not None}"
        )

    def instantiate(
        self,
        module: str | Path | wasmtime.Module,
        args: Sequence[str] = (),
        *,
        stdin: InputStream | None = None,
        stdout: OutputStream | None = None,
        stderr: OutputStream | None = None,
        interruption: Interruption | None = None,
    ) -> Instance:
        """Instantiate ``module`` with WASI and WASI-NN, without running it.

        ``stdin``/``stdout``/``stderr`` override the runtime's streams for this instance
        only (a server gives each request its own); ``stdin`` may also be the bytes
        themselves, and an output stream a callable that receives each chunk the guest
        writes (a Python call per chunk of at most 4 KiB: slower than a file for megabytes).
        With ``interruption``, another thread can stop the run (it then raises
        :class:`~wasinn.core.GuestCancelled`); its wasm code notices within an epoch tick,
        so the engine's :func:`epoch_ticker` must run while it does.
        """
        if isinstance(module, wasmtime.Module):
            compiled, program = module, "main.wasm"
        else:
            compiled, program = self.modules.load(Path(module)), str(module)
        return Instance(self, compiled, [program, *args], self._stdio(stdin, stdout, stderr), interruption)

    def compile_guest(self, path: Path) -> wasmtime.Module | Component:
        """The compiled module or component at ``path`` (by its header), through the caches."""
        from wasinn.component import component_cache, is_component  # it builds on this module

        if is_component(path):
            built: Component = component_cache(self).load(path)
            return built
        compiled: wasmtime.Module = self.modules.load(path)
        return compiled

    def instantiate_guest(
        self,
        compiled: wasmtime.Module | Component,
        args: Sequence[str] = (),
        *,
        stdin: InputStream | None = None,
        stdout: OutputStream | None = None,
        stderr: OutputStream | None = None,
        interruption: Interruption | None = None,
    ) -> Instance | ComponentInstance:
        """:meth:`instantiate` for a module or a component from :meth:`compile_guest`."""
        if isinstance(compiled, wasmtime.Module):
            return self.instantiate(
                compiled, args, stdin=stdin, stdout=stdout, stderr=stderr, interruption=interruption
            )
        from wasinn.component import ComponentInstance

        stdio = self._stdio(stdin, stdout, stderr)
        return ComponentInstance(self, compiled, ["main.wasm", *args], stdio, interruption)

    def _stdio(
        self, stdin: InputStream | None, stdout: OutputStream | None, stderr: OutputStream | None
    ) -> Stdio:
        default_in, default_out, default_err = self.stdio
        return (default_in if stdin is None else stdin, stdout or default_out, stderr or default_err)

    def run(self, module: str | Path, args: Sequence[str] = ()) -> int:
        """Run the module's ``_start`` and return its exit code.

        Raises :class:`~wasinn.core.GuestTrap` when the guest traps and
        :class:`~wasinn.core.ModuleError` when the module cannot be loaded.
        """
        if self.limits.time_limit_ms is None:
            with self._instantiate_any(module, args) as instance:
                return instance.run()
        with epoch_ticker(self.engine), self._instantiate_any(module, args) as instance:
            return instance.run()

    def close(self) -> None:
        """Release the preloaded models; instances made by this runtime must be closed first."""
        self.registry.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _instantiate_any(self, module: str | Path, args: Sequence[str]) -> Instance | ComponentInstance:
        from wasinn.component import instantiate_component, is_component  # it builds on this module

        if is_component(module):
            if self.nn_rpc is not None:
                raise ConfigError("--nn-rpc-uri forwards wasi_ephemeral_nn modules; this is a component")
            return instantiate_component(self, Path(module), args)
        return self.instantiate(module, args)

    def new_store(self) -> tuple[wasmtime.Store, float | None]:
        """A store with this runtime's limits applied, and its deadline (``time.monotonic``)."""
        limits = self.limits
        store = wasmtime.Store(self.engine)
        deadline = None
        if limits.time_limit_ms is not None:
            deadline = time.monotonic() + limits.time_limit_ms / 1000
            store.set_epoch_deadline(max(1, math.ceil(limits.time_limit_ms / 1000 / EPOCH_TICK_SECONDS)))
        else:
            store.set_epoch_deadline(NO_DEADLINE)
        if limits.gas is not None:
            store.set_fuel(limits.gas)
        if limits.memory_pages is not None:
            store.set_limits(memory_size=limits.memory_pages * WASM_PAGE)
        return store, deadline

    def new_session(
        self, deadline: Callable[[], float | None], interruption: Interruption | None = None
    ) -> NNSession:
        """The WASI-NN state of one guest: this runtime's models and limits."""
        limits = self.limits
        return NNSession(
            get_backend,
            self.registry,
            max_graphs=limits.max_graphs,
            max_contexts=limits.max_contexts,
            max_model_bytes=limits.max_model_bytes,
            max_tensor_bytes=limits.max_tensor_bytes,
            deadline=deadline,
            guest_path=partial(resolve_guest_path, [(d.guest, d.host) for d in self.dirs]),
            interruption=interruption,
        )

    def wasi_config(self, argv: Sequence[str], stdio: Stdio | None = None) -> wasmtime.WasiConfig:
        """WASI for one guest (preview 1 for modules, preview 2 for components); ``stdio``
        replaces the runtime's streams for this guest only."""
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(argv)
        wasi.env = list(self.env.items())
        for mapping in self.dirs:
            wasi.preopen_dir(str(mapping.host), mapping.guest, not mapping.readonly)
        stdin, stdout, stderr = stdio or self.stdio
        if stdin is None:
            wasi.inherit_stdin()
        elif isinstance(stdin, bytes):
            set_stdin_bytes(wasi, stdin)
        else:
            wasi.stdin_file = str(stdin)
        if stdout is None:
            wasi.inherit_stdout()
        elif callable(stdout):
            wasi.stdout_custom = stdout
        else:
            wasi.stdout_file = str(stdout)
        if stderr is None:
            wasi.inherit_stderr()
        elif callable(stderr):
            wasi.stderr_custom = stderr
        else:
            wasi.stderr_file = str(stderr)
        return wasi


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """The guest reads ``data`` as its stdin, straight from memory (wasmtime-py exposes
    only files; a file's stream is read ahead in small pieces: 10 ms more for 5.5 MB)."""
    from wasmtime import _ffi as ffi

    vector = ffi.wasm_byte_vec_t()
    # wasm_byte_vec_new copies data; the config then owns (and frees) the copy.
    source = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))  # no copy
    ffi.wasm_byte_vec_new(ctypes.byref(vector), len(data), source)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vector))


class Instance:
    """One instantiated guest: its store, WASI state and WASI-NN handles."""

    def __init__(
        self,
        runtime: Runtime,
        module: wasmtime.Module,
        argv: Sequence[str],
        stdio: Stdio | None = None,
        interruption: Interruption | None = None,
    ) -> None:
        self.limits = runtime.limits
        self.store, self._deadline = runtime.new_store()
        self.store.set_wasi(runtime.wasi_config(argv, stdio))
        self._interruption = interruption
        # An interruptible guest's wasm code is checked at every epoch tick (time limit included).
        self._watch = EpochWatch(self.store, self._on_epoch) if interruption is not None else None
        self.nn = runtime.new_session(self._time_left, interruption)
        self._pending: BaseException | None = None  # raised by a host function of this instance
        self._abi = (
            EphemeralNN(self.nn, self._park)
            if runtime.nn_rpc is None
            else RemoteEphemeralNN(self.nn, self._park, runtime.nn_rpc)
        )
        linker = wasmtime.Linker(runtime.engine)
        linker.define_wasi()
        # wasmtime's proc_exit refuses codes of 126 and above; guests may use any u8 code.
        linker.allow_shadowing = True
        self._proc_exit = define_i32_func(
            linker, "wasi_snapshot_preview1", "proc_exit", 1, _proc_exit, self._park, returns=False
        )
        self._abi.define(linker)
        self._plugins = plugin_modules(module, self._park, [(d.guest, d.host) for d in runtime.dirs])
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

    def restart_clock(self) -> None:
        """Start the time limit now: a pre-instantiated (warm) instance counts from its run."""
        limit = self.limits.time_limit_ms
        self._deadline = None if limit is None else time.monotonic() + limit / 1000
        if self._watch is not None:
            self.store.set_epoch_deadline(1)  # _on_epoch checks the deadline at each tick
        elif limit is None:
            self.store.set_epoch_deadline(NO_DEADLINE)
        else:
            self.store.set_epoch_deadline(max(1, math.ceil(limit / 1000 / EPOCH_TICK_SECONDS)))

    def _on_epoch(self) -> BaseException | None:
        """At each epoch tick of an interruptible guest: why it must stop, or None."""
        reason = self._interruption.reason if self._interruption is not None else None
        if reason is not None:
            return GuestCancelled(reason)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return TimeLimitExceeded(f"time limit of {self.limits.time_limit_ms} ms exceeded")
        return None

    def _time_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

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
            if self._watch is not None and self._watch.stopped is not None:
                raise self._watch.stopped from None  # stopped at an epoch tick: why
            raise self._translate(pending or err) from None

    def _translate(self, error: BaseException) -> BaseException:
        """The wasinn exception for what stopped the guest."""
        if isinstance(error, LimitExceeded):
            return TimeLimitExceeded(f"time limit of {self.limits.time_limit_ms} ms exceeded during compute")
        if isinstance(error, GuestExit | GuestTrap):
            return error
        if isinstance(error, wasmtime.ExitTrap):
            return GuestExit(error.code)
        if isinstance(error, wasmtime.Trap):
            if error.trap_code is wasmtime.TrapCode.INTERRUPT:
                return TimeLimitExceeded(f"time limit of {self.limits.time_limit_ms} ms exceeded")
            if error.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
                return LimitExceeded(f"gas limit of {self.limits.gas} exceeded")
            return GuestTrap(describe_trap(error))
        if isinstance(error, wasmtime.WasmtimeError):
            return GuestTrap(first_line(error))
        return error

    def run(self) -> int:
        if "_start" not in self.instance.exports(self.store):
            raise ModuleError("the module has no _start export: it is not a WASI command")
        try:
            self.call("_start")
        except GuestExit as exit_:
            return exit_.code
        return 0

    def close(self) -> None:
        self._abi.close()
        for plugin in self._plugins:
            plugin.close()

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _proc_exit(code: int) -> None:
    # Raised through wasmtime as a trap; the instance re-raises it where the guest was entered.
    raise GuestExit(code & 0xFFFFFFFF)


def first_line(err: BaseException) -> str:
    """The informative line of a wasmtime error: its cause, not the backtrace header."""
    text = str(err).strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1].strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def describe_trap(trap: wasmtime.Trap) -> str:
    """``guest trapped: <what> in function <name>``, one line."""
    kind = first_line(trap).removeprefix("wasm trap: ")
    frames = trap.frames
    if not frames:
        return f"guest trapped: {kind}"
    top = frames[0]
    where = top.func_name or f"#{top.func_index}"
    return f"guest trapped: {kind} in function {where}"
