"""Named models (``--nn-preload``): read once, loaded once per config, shared by every instance.

WasmEdge loads a preloaded model again in each instance; a server running many instances of
one guest must not, so the registry owns each loaded graph and lends it to the instances
(road segmentation: 424 ms for the first instance, then no reload at all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wasinn.core._backend import PATH_BUILDER, READS_BYTES, Backend, BackendGraph, ModelConfig, ModelFiles
from wasinn.core._errors import ConfigError, NotFound
from wasinn.core._types import ExecutionTarget, GraphEncoding

BackendResolver = Callable[[GraphEncoding], Backend]
# How each encoding takes its files (wasinn.backends.model_files); by default, as bytes.
ModelFilesLookup = Callable[[GraphEncoding], ModelFiles]


@dataclass(frozen=True)
class Preload:
    """A named model, as given by ``--nn-preload NAME:ENCODING:TARGET:PATH[:PATH...]``
    (parsed by :func:`wasinn.host.options.parse_preload`, beside the CLI's other spellings)."""

    name: str
    encoding: GraphEncoding
    target: ExecutionTarget
    paths: tuple[str, ...]

    def read_builders(self, files: ModelFiles = READS_BYTES) -> tuple[bytes, ...]:
        """Read every path now, so a missing file is reported at start-up, naming it.

        A backend that opens its files at load (GGML, BitNet) gets them unread: as in
        WasmEdge (ggml spec §2.1) the one builder is ``preload:<path>`` (missing: errno 103).
        """
        if files.opened_at_load:
            return (PATH_BUILDER + os.fsencode(":".join(self.paths)),)
        blobs = []
        for path in self.paths:
            if files.directories and os.path.isdir(path):
                from wasinn.core._archive import pack_directory  # a SavedModel: the directory as one blob

                blobs.append(pack_directory(Path(path)))
                continue
            try:
                with open(path, "rb") as file:
                    blobs.append(file.read())
            except OSError as err:
                raise ConfigError(
                    f"--nn-preload {self.name}: cannot read {path}: {err.strerror or err}"
                ) from None
        return tuple(blobs)


@dataclass(eq=False)
class SharedModel:
    """One loaded graph of a named model, owned by the registry and lent to instances."""

    name: str
    encoding: GraphEncoding
    graph: BackendGraph
    # Serialises init_execution_context across the instances sharing the graph.
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Named:
    preload: Preload
    builders: tuple[bytes, ...]


class ModelRegistry:
    """The named models of one :class:`~wasinn.Runtime`, shared by all its instances.

    Files are read at construction; a graph is built on the first ``load_by_name`` of its
    (name, config) and reused by every later one, in any instance or thread, until
    :meth:`close`.
    """

    def __init__(
        self,
        preloads: Sequence[Preload],
        resolve_backend: BackendResolver,
        model_files: ModelFilesLookup = lambda _encoding: READS_BYTES,
    ) -> None:
        self._resolve_backend = resolve_backend
        self.model_files = model_files
        self._named: dict[str, _Named] = {}
        for preload in preloads:
            if preload.name not in self._named:  # the first entry of a name wins, as in WasmEdge
                self._named[preload.name] = _Named(
                    preload, preload.read_builders(model_files(preload.encoding))
                )
        self._loaded: dict[tuple[str, bytes], SharedModel] = {}
        self._loading: dict[tuple[str, bytes], threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._named)

    def preload(self, name: str) -> Preload:
        """How ``name`` was preloaded (its encoding and paths)."""
        return self._entry(name).preload

    def model_bytes(self, name: str) -> int:
        return sum(len(blob) for blob in self._entry(name).builders)

    def get(self, name: str, config: bytes = b"") -> SharedModel:
        """The shared graph of ``name`` under ``config``, loading it on first use."""
        entry = self._entry(name)
        key = (name, config)
        with self._lock:
            shared = self._loaded.get(key)
            if shared is not None:
                return shared
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one build per key; other callers wait for it rather than build twice
            with self._lock:
                shared = self._loaded.get(key)
            if shared is not None:
                return shared
            backend = self._resolve_backend(entry.preload.encoding)
            # Unlike WasmEdge, which appends the config as one more builder (which only GGML
            # reads), wasinn gives every backend a parsed config (docs/backends.md).
            settings = ModelConfig.parse(config, backend) if config else ModelConfig()
            target = settings.device if settings.device is not None else entry.preload.target
            graph = backend.load_graph(entry.builders, target, settings)
            shared = SharedModel(name, backend.encoding, graph)
            with self._lock:
                self._loaded[key] = shared
                self._loading.pop(key, None)
            return shared

    def _entry(self, name: str) -> _Named:
        entry = self._named.get(name)
        if entry is None:
            known = ", ".join(sorted(self._named)) or "none"
            raise NotFound(f"no preloaded model named {name!r} (preloaded: {known})")
        return entry

    def close(self) -> None:
        """Release every loaded graph; instances still running must be closed first."""
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), {}
        for shared in loaded:
            shared.graph.release()  # contexts still open then get Lifecycle.GRAPH_RELEASED
