"""One ``wasinn run`` command line inside the warm host: parsed, isolated, answered.

The only module of the warm host that uses the host API (:mod:`wasinn.host`); the
command line is parsed, and errors become exit codes, by the cold command's own code
(:func:`wasinn.cli.host.parse_run`, :func:`wasinn.cli.host.outcome`). Each run gets its own
store, WASI context and WASI-NN session;
what runs share is what is safe to share: the engine, compiled guests and loaded models.
Paths in the command line are the client's: they are resolved against its cwd here, as
the daemon's own cwd means nothing to the caller.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import wasmtime

from wasinn.backends import get_backend, model_files
from wasinn.cli import LOG_FORMAT
from wasinn.cli.host import outcome, parse_run
from wasinn.cli.options import limits_from
from wasinn.core import (
    PATH_BUILDER,
    ConfigError,
    ExecutionTarget,
    Graph,
    GraphEncoding,
    Interruption,
    ModelRegistry,
    NNSession,
    Preload,
    SharedModel,
)
from wasinn.host import ComponentInstance, Instance, Runtime, epoch_ticker, shared_engine
from wasinn.host._epoch import EpochTicker
from wasinn.host.options import DirMapping, parse_preload
from wasinn.warm.cache import LruCache, budget_from_env, file_identity

log = logging.getLogger("wasinn.warm")
Outcome = tuple[int, str | None]  # exit code, and the one error line the client prints
MAX_GUESTS = 32  # compiled guests kept in memory (the disk cache keeps the rest)
TICKER_LINGER_S = 10.0


class ClientStderr(logging.Handler):
    """What the host logs while a run's thread serves it (the warning a failed WASI-NN call
    leaves, say) goes to that run's client's stderr, as a cold run prints it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter(LOG_FORMAT))  # the cold command's
        self.fds: dict[int, int] = {}  # a run's thread -> its client's stderr

    def emit(self, record: logging.LogRecord) -> None:
        fd = self.fds.get(record.thread or 0)
        if fd is None or record.name.startswith(log.name):
            return  # another thread's, or the daemon's own
        with contextlib.suppress(OSError):  # a closed stderr: the daemon's log still has it
            os.write(fd, (self.format(record) + "\n").encode(errors="replace"))


class WarmState:
    """What outlives a run: compiled guests, preloaded registries, graphs loaded from bytes."""

    def __init__(self, budget: int | None = None) -> None:
        self.client_stderr = ClientStderr()
        logging.getLogger("wasinn").addHandler(self.client_stderr)
        self.models: LruCache[Any] = LruCache(budget_from_env() if budget is None else budget)
        self._guests: OrderedDict[Hashable, Any] = OrderedDict()
        self._guests_lock = threading.Lock()
        self.runs = 0
        # Each engine's epoch ticker (a 10 ms thread) is kept on while runs keep coming:
        # starting it for every run costs a thread start; idle, it is stopped.
        self._ticking: dict[int, EpochTicker] = {}
        self._last_run = 0.0
        self._ticker_lock = threading.Lock()
        self._janitor: threading.Thread | None = None

    def compiled(self, runtime: Runtime, path: Path, cache: bool) -> Any:
        identity = file_identity(path)
        if not cache or identity is None:
            return runtime.compile_guest(path)
        key = (identity, runtime.limits.gas is not None)
        with self._guests_lock:
            guest = self._guests.get(key)
            if guest is not None:
                self._guests.move_to_end(key)
                return guest
        guest = runtime.compile_guest(path)
        with self._guests_lock:
            self._guests[key] = guest
            while len(self._guests) > MAX_GUESTS:
                self._guests.popitem(last=False)
        return guest

    def keep_ticking(self, engine: wasmtime.Engine) -> EpochTicker:
        with self._ticker_lock:
            self._last_run = time.monotonic()
            ticker = epoch_ticker(engine)
            if id(engine) not in self._ticking:
                self._ticking[id(engine)] = ticker.__enter__()
            if self._janitor is None:
                self._janitor = threading.Thread(target=self._stop_idle_tickers, daemon=True)
                self._janitor.start()
        return ticker

    def _stop_idle_tickers(self) -> None:
        while True:
            time.sleep(1.0)
            with self._ticker_lock:
                if time.monotonic() - self._last_run < TICKER_LINGER_S:
                    continue
                idle, self._ticking = list(self._ticking.values()), {}
            for ticker in idle:  # a run still going holds its own reference
                ticker.__exit__(None, None, None)

    def registry(self, preloads: Sequence[Preload]) -> tuple[ModelRegistry, Hashable | None]:
        """The registry of these preloads, shared with earlier runs naming the same files."""
        if not preloads:
            return ModelRegistry([], get_backend, model_files), None
        key: list[Hashable] = ["preload"]
        size = 0
        for preload in preloads:
            identities = tuple(file_identity(path) for path in preload.paths)
            if any(identity is None for identity in identities):
                return ModelRegistry(preloads, get_backend, model_files), None  # it reports the missing file
            size += sum(identity[1] for identity in identities if identity is not None)
            key.append((preload.name, preload.encoding, preload.target, identities))
        frozen = tuple(key)
        registry = self.models.acquire(
            frozen, lambda: (ModelRegistry(preloads, get_backend, model_files), size), lambda r: r.close()
        )
        return registry, frozen

    def run(self, argv: Sequence[str], cwd: str, fds: Sequence[int], interruption: Interruption) -> Outcome:
        """``wasinn run ARGV`` as the client at ``cwd`` typed it, its stdio on ``fds``: its exit
        code and error line, parsed and mapped by the cold command's own code (cli/host.py)."""
        self.runs += 1
        params = parse_run(argv)
        if isinstance(params, tuple):
            return params  # click's usage error
        thread = threading.get_ident()
        self.client_stderr.fds[thread] = fds[2]
        try:
            return outcome(lambda: self._run(params, cwd, fds, interruption))
        finally:
            del self.client_stderr.fds[thread]

    def _run(self, params: dict[str, Any], cwd: str, fds: Sequence[int], interruption: Interruption) -> int:
        module: str = params["module"]
        path = Path(cwd, module)
        if not path.is_file():
            raise ConfigError(f"{module}: no such file" if not path.exists() else f"{module}: not a file")
        registry_key: Hashable | None = None
        try:
            limits = limits_from(params)
            dirs = [_client_dir(text, cwd) for text in params["dirs"]]
            runtime = WarmRuntime(
                self, dirs=dirs, env=params["env"], cache=not params["no_cache"], limits=limits
            )
            preloads = _client_preloads(params["preload"], cwd)
            runtime.preloads = preloads
            runtime.registry, registry_key = self.registry(preloads)
            compiled = self.compiled(runtime, path, not params["no_cache"])
            stdio = (Path(f"/proc/self/fd/{fds[0]}"), _writer(fds[1]), _writer(fds[2]))
            guest_argv = [module, *params["args"]]
            with self.keep_ticking(runtime.engine):
                instance: Instance | ComponentInstance
                if isinstance(compiled, wasmtime.Module):
                    instance = Instance(runtime, compiled, guest_argv, stdio, interruption)
                else:
                    instance = ComponentInstance(runtime, compiled, guest_argv, stdio, interruption)
                with instance:
                    return instance.run()
        finally:
            if registry_key is not None:
                self.models.release_key(registry_key)

    def warm_up(self) -> None:
        """Build the engine and import the installed frameworks before the first run needs them."""
        try:
            shared_engine()
            for encoding in (GraphEncoding.OPENVINO,):  # the common one; others on first use
                get_backend(encoding)
        except Exception as err:  # only costs the first run its imports
            log.debug("warm-up: %s", err)

    def close(self) -> None:
        logging.getLogger("wasinn").removeHandler(self.client_stderr)
        self.models.clear()


class WarmRuntime(Runtime):
    """A runtime whose instances take models from the warm state's caches."""

    def __init__(self, state: WarmState, **options: Any) -> None:
        super().__init__(**options)
        self.state = state

    def new_session(
        self, deadline: Callable[[], float | None], interruption: Interruption | None = None
    ) -> NNSession:
        options = self.session_options(deadline, interruption)
        return WarmSession(self.state.models, get_backend, self.registry, **options)


class WarmSession(NNSession):
    """A session whose ``load`` of model bytes reuses a graph an earlier run loaded.

    Hashing a 14 MB model costs 25 ms here, half a warm run; so the key is the builders'
    lengths and a digest of samples of them (~1 MB), and a hit is confirmed by comparing
    the bytes themselves with the copy the cache keeps (a memcmp: ~1 ms).
    """

    def __init__(self, cache: LruCache[Any], *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.cache = cache
        self.keys: list[Hashable] = []

    def load(self, builders: Sequence[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> Graph:
        self._check_model_size(sum(len(blob) for blob in builders))
        backend = self._resolve_backend(encoding)
        builders = [bytes(blob) for blob in self._sandboxed(builders, encoding)]
        key, size = _bytes_key(builders, encoding, target)
        if key is None:
            return self._adopt(backend.load_graph(builders, target), backend.encoding, None)

        def build() -> tuple[tuple[SharedModel, list[bytes]], int]:
            shared = SharedModel("", backend.encoding, backend.load_graph(builders, target))
            return (shared, builders), 2 * size  # the graph, and the bytes kept to compare

        shared, kept = self.cache.acquire(key, build, lambda entry: entry[0].graph.release())
        if kept != builders:  # the samples matched, the bytes do not: another model
            self.cache.release_key(key)
            return self._adopt(backend.load_graph(builders, target), backend.encoding, None)
        self.keys.append(key)
        return self._adopt(shared.graph, shared.encoding, shared)

    def close(self) -> None:
        try:
            super().close()
        finally:
            keys, self.keys = self.keys, []
            for key in keys:
                self.cache.release_key(key)


SAMPLE = 1 << 16  # bytes per sample
SAMPLES = 16  # samples spread over a builder, besides its head and tail


def _bytes_key(
    builders: Sequence[bytes], encoding: GraphEncoding, target: ExecutionTarget
) -> tuple[Hashable | None, int]:
    """The cache key of a ``load``'s builders (lengths and sampled digest; a ``preload:``
    path also by its file's identity) and the bytes it stands for."""
    digest = hashlib.sha256()
    size = 0
    for blob in builders:
        digest.update(len(blob).to_bytes(8, "little"))
        view = memoryview(blob)
        if len(blob) <= (SAMPLES + 2) * SAMPLE:
            digest.update(view)
        else:
            stride = len(blob) // (SAMPLES + 1)
            for start in (0, *range(stride, len(blob) - SAMPLE, stride), len(blob) - SAMPLE):
                digest.update(view[start : start + SAMPLE])
        size += len(blob)
        if bytes(blob[: len(PATH_BUILDER)]) == PATH_BUILDER:
            identity = file_identity(os.fsdecode(bytes(blob[len(PATH_BUILDER) :])))
            if identity is None:
                return None, 0  # let the backend report the missing file
            digest.update(repr(identity).encode())
            size += identity[1]
    return ("bytes", encoding, target, digest.hexdigest()), size


def _client_dir(text: str, cwd: str) -> DirMapping:
    """``--dir`` with its host side resolved against the client's cwd, checked as the cold
    command checks it (the message names the path as the person typed it)."""
    mapping = DirMapping.parse(text)
    resolved = DirMapping(mapping.guest, Path(cwd, mapping.host), mapping.readonly)
    if not resolved.host.is_dir():
        problem = "does not exist" if not resolved.host.exists() else "is not a directory"
        raise ConfigError(f"--dir {mapping.guest}:{mapping.host}: the host path {problem}")
    return resolved


def _client_preloads(specs: Sequence[str], cwd: str) -> list[Preload]:
    preloads: list[Preload] = []
    for text in specs:
        preload = parse_preload(text)
        paths = tuple(os.path.join(cwd, path) for path in preload.paths)
        files = model_files(preload.encoding)
        if preload.name not in {p.name for p in preloads} and not files.opened_at_load:
            for typed, path in zip(preload.paths, paths, strict=True):
                if not os.access(path, os.R_OK) and not (files.directories and os.path.isdir(path)):
                    reason = os.strerror(errno.ENOENT if not os.path.exists(path) else errno.EACCES)
                    raise ConfigError(f"--nn-preload {preload.name}: cannot read {typed}: {reason}")
        preloads.append(Preload(preload.name, preload.encoding, preload.target, paths))
    return preloads


def _writer(fd: int) -> Callable[[bytes], int]:
    """A guest output stream that writes to the client's descriptor itself (its pipe,
    terminal or file, at that file's own offset and mode)."""

    def write(data: bytes) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            return -(err.errno or errno.EIO)
        return len(data)

    return write
