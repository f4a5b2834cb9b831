"""The runtime: a guest's world (directories, environment, models, limits) and running it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component

from wasinn.abi._plugin import resolve_guest_path
from wasinn.abi.nnrpc_client import ClientOptions, nn_rpc_client
from wasinn.backends import get_backend, model_files
from wasinn.core import ConfigError, Interruption, ModelRegistry, NNSession, Preload
from wasinn.core._paths import user_cache_dir
from wasinn.host._cache import ComponentCache, ModuleCache, is_component, shared_engine
from wasinn.host._epoch import epoch_ticker
from wasinn.host.component import ComponentInstance
from wasinn.host.instance import GuestInstance, Instance
from wasinn.host.limits import Limits
from wasinn.host.options import DirMapping, parse_env, parse_preload
from wasinn.host.wasi import InputStream, OutputStream, Stdio, wasi_config

# A guest compiled by Runtime.compile_guest: a core module or a component.
CompiledGuest = wasmtime.Module | component.Component


class Runtime:
    """Runs WASI command modules and components that may import ``wasi_ephemeral_nn``/``wasi:nn``.

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
        limits: Limits | None = None,
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
        self.registry = ModelRegistry(self.preloads, get_backend, model_files)
        self.limits = limits = limits if limits is not None else Limits()
        # Files for the guest's standard streams; None passes this process's own through.
        self.stdio: Stdio = (stdin, stdout, stderr)
        self.engine = shared_engine(fuel=limits.gas is not None)
        directory = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "modules"
        self.modules = ModuleCache(
            self.engine, directory if cache else None, f"fuel={limits.gas is not None}"
        )
        # Components beside modules: same directory, engine and key.
        self.components = self.modules.sibling(ComponentCache)
        self._ticker_lock = threading.Lock()
        self._ticking = False

    def compile_guest(self, path: str | Path) -> CompiledGuest:
        """The compiled module or component at ``path`` (by its header), through the caches."""
        cache = self.components if is_component(path) else self.modules
        compiled: CompiledGuest = cache.load(Path(path))
        return compiled

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
        """Instantiate a core ``module`` with WASI and WASI-NN, without running it.

        ``stdin``/``stdout``/``stderr`` override the runtime's streams for this instance
        only (a server gives each request its own); ``stdin`` may also be the bytes
        themselves, and an output stream a callable that receives each chunk the guest
        writes (a Python call per chunk of at most 4 KiB: slower than a file for megabytes).
        With ``interruption``, another thread can stop the run (it then raises
        :class:`~wasinn.core.GuestCancelled`); its wasm code notices within an epoch tick,
        so the engine's epoch ticker must run while it does (:meth:`run_guest` sees to it).
        """
        if isinstance(module, wasmtime.Module):
            compiled, program = module, "main.wasm"
        else:
            compiled, program = self.modules.load(Path(module)), str(module)
        return Instance(self, compiled, [program, *args], self._stdio(stdin, stdout, stderr), interruption)

    def instantiate_guest(
        self,
        compiled: CompiledGuest | str | Path,
        args: Sequence[str] = (),
        *,
        stdin: InputStream | None = None,
        stdout: OutputStream | None = None,
        stderr: OutputStream | None = None,
        interruption: Interruption | None = None,
    ) -> GuestInstance:
        """:meth:`instantiate` for a module or a component (compiled, or a path to either)."""
        program = "main.wasm"
        if isinstance(compiled, str | Path):
            program, compiled = str(compiled), self.compile_guest(compiled)
        stdio = self._stdio(stdin, stdout, stderr)
        if isinstance(compiled, wasmtime.Module):
            return Instance(self, compiled, [program, *args], stdio, interruption)
        if self.nn_rpc is not None:
            raise ConfigError("--nn-rpc-uri forwards wasi_ephemeral_nn modules; this is a component")
        return ComponentInstance(self, compiled, [program, *args], stdio, interruption)

    def run_guest(
        self,
        compiled: CompiledGuest,
        args: Sequence[str] = (),
        *,
        stdin: InputStream | None = None,
        stdout: OutputStream | None = None,
        stderr: OutputStream | None = None,
        interruption: Interruption | None = None,
    ) -> int:
        """Instantiate, run and close one guest, interruptible from another thread; its exit
        code. What a server does per request: the time limit counts from the run, and the
        epoch ticker (owned by this runtime from the first such run until :meth:`close`) runs."""
        self._keep_ticking()
        instance = self.instantiate_guest(
            compiled,
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            interruption=interruption or Interruption(),
        )
        with instance:
            instance.restart_clock()
            return instance.run()

    def run(self, module: str | Path, args: Sequence[str] = ()) -> int:
        """Run the module's ``_start`` (or the component's ``wasi:cli/run``); its exit code.

        Raises :class:`~wasinn.core.GuestTrap` when the guest traps and
        :class:`~wasinn.core.ModuleError` when the module cannot be loaded.
        """
        if self.limits.time_limit_ms is None:
            with self.instantiate_guest(module, args) as instance:
                return instance.run()
        with epoch_ticker(self.engine), self.instantiate_guest(module, args) as instance:
            return instance.run()

    def _keep_ticking(self) -> None:
        with self._ticker_lock:
            if not self._ticking:
                epoch_ticker(self.engine).__enter__()
                self._ticking = True

    def close(self) -> None:
        """Release the preloaded models and the epoch ticker; instances made by this runtime
        must be closed first."""
        with self._ticker_lock:
            if self._ticking:
                epoch_ticker(self.engine).__exit__(None, None, None)
                self._ticking = False
        self.registry.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stdio(
        self, stdin: InputStream | None, stdout: OutputStream | None, stderr: OutputStream | None
    ) -> Stdio:
        default_in, default_out, default_err = self.stdio
        return (default_in if stdin is None else stdin, stdout or default_out, stderr or default_err)

    def new_session(
        self, deadline: Callable[[], float | None], interruption: Interruption | None = None
    ) -> NNSession:
        """The WASI-NN state of one guest: this runtime's models and limits."""
        return NNSession(get_backend, self.registry, **self.session_options(deadline, interruption))

    def session_options(
        self, deadline: Callable[[], float | None], interruption: Interruption | None
    ) -> dict[str, Any]:
        """The keyword arguments of an :class:`NNSession` for one guest of this runtime."""
        limits = self.limits
        return {
            "max_graphs": limits.max_graphs,
            "max_contexts": limits.max_contexts,
            "max_model_bytes": limits.max_model_bytes,
            "max_tensor_bytes": limits.max_tensor_bytes,
            "deadline": deadline,
            "guest_path": partial(resolve_guest_path, [(d.guest, d.host) for d in self.dirs]),
            "interruption": interruption,
        }

    def wasi_config(self, argv: Sequence[str], stdio: Stdio | None = None) -> wasmtime.WasiConfig:
        """WASI for one guest; ``stdio`` replaces the runtime's streams for this guest only."""
        return wasi_config(argv, self.env, self.dirs, stdio or self.stdio)
