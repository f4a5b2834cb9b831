"""Graphs, execution contexts, tensors and errors: the WASI-NN model with no wasm and no framework.

The numbers (errno, encodings, targets, tensor types) are the contract of
``shared/spec/wasi-nn-abi.md``; the ABI front-ends translate guest memory into calls on
:class:`NNHost`, and :class:`NNHost` dispatches to backends through :mod:`wasinn.backends`.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

log = logging.getLogger("wasinn")

MAX_HANDLE = 0xFFFFFFFF
CANCEL_GRACE_SECONDS = 10.0


# --------------------------------------------------------------------------- errors


class Errno(enum.IntEnum):
    """The i32 a ``wasi_ephemeral_nn`` call returns (spec §3.1, WasmEdge 0.14+ numbering)."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_ENCODING = 2
    MISSING_MEMORY = 3
    BUSY = 4
    RUNTIME_ERROR = 5
    UNSUPPORTED_OPERATION = 6
    TOO_LARGE = 7
    NOT_FOUND = 8
    END_OF_SEQUENCE = 100
    CONTEXT_FULL = 101
    PROMPT_TOO_LONG = 102
    MODEL_NOT_FOUND = 103


class WasinnError(Exception):
    """Root of every error wasinn raises on purpose."""


class ConfigError(WasinnError):
    """A bad option from the person running wasinn: a --dir, --env or --nn-preload string."""


class ModuleError(WasinnError):
    """A WebAssembly module that cannot be read, compiled or linked."""


class GuestTrap(WasinnError):
    """The guest trapped (unreachable, out-of-bounds access, …) or broke the host's rules."""


class LimitExceeded(GuestTrap):
    """The guest ran past a limit it was given: time, gas (fuel) or memory."""


class GuestExit(WasinnError):
    """The guest called ``proc_exit``; carries its exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with code {code}")
        self.code = code


class NNError(WasinnError):
    """A WASI-NN failure reported to the guest as ``errno``; the message is for the person."""

    errno: Errno = Errno.RUNTIME_ERROR

    def __init__(self, message: str, errno: Errno | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class InvalidArgument(NNError):
    errno = Errno.INVALID_ARGUMENT


class InvalidEncoding(NNError):
    errno = Errno.INVALID_ENCODING


class MissingModel(NNError):
    """Spec's ``missing_memory``: the backend has no model for this graph or context."""

    errno = Errno.MISSING_MEMORY


class Busy(NNError):
    errno = Errno.BUSY


class BackendError(NNError):
    """The framework failed while loading or running a model (``runtime_error``)."""

    errno = Errno.RUNTIME_ERROR


class UnsupportedOperation(NNError):
    errno = Errno.UNSUPPORTED_OPERATION


class TooLarge(NNError):
    """The guest's output buffer is smaller than the output; ``needed`` is its byte size."""

    errno = Errno.TOO_LARGE

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class NotFound(NNError):
    errno = Errno.NOT_FOUND


# --------------------------------------------------------------------------- enumerations


class GraphEncoding(enum.IntEnum):
    """``load``'s encoding parameter, WasmEdge numbering (spec §3.2)."""

    OPENVINO = 0
    ONNX = 1
    TENSORFLOW = 2
    PYTORCH = 3
    TENSORFLOWLITE = 4
    AUTODETECT = 5
    GGML = 6
    NEURALSPEED = 7
    WHISPER = 9
    MLX = 10
    PIPER = 11
    CHATTTS = 12
    OPENVINOGENAI = 13
    BITNET = 14

    @classmethod
    def from_guest(cls, code: int) -> GraphEncoding:
        # WasmEdge casts the u32 to an 8-bit enum, so 256 behaves as OpenVINO.
        try:
            return cls(code & 0xFF)
        except ValueError:
            raise InvalidEncoding(f"unknown graph encoding {code}") from None

    @classmethod
    def from_name(cls, name: str) -> GraphEncoding:
        """Parse an ``--nn-preload`` spelling (case-insensitive, spec §5)."""
        key = name.lower()
        if key == "pytorchaoti":
            return cls.PYTORCH
        for member in cls:
            if member.name.lower() == key:
                return member
        spellings = ", ".join(m.name.lower() for m in cls)
        raise ConfigError(f"unknown encoding {name!r}; expected one of: {spellings}")


class ExecutionTarget(enum.IntEnum):
    """``load``'s target parameter (spec §3.3). wasinn accepts AUTO in ``load`` too."""

    CPU = 0
    GPU = 1
    TPU = 2
    AUTO = 3

    @classmethod
    def from_guest(cls, code: int) -> ExecutionTarget:
        try:
            return cls(code)
        except ValueError:
            raise InvalidArgument(f"unknown execution target {code}; expected 0 (CPU) to 3 (AUTO)") from None

    @classmethod
    def from_name(cls, name: str) -> ExecutionTarget:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ConfigError(f"unknown target {name!r}; expected one of: cpu, gpu, tpu, auto") from None


class TensorType(enum.IntEnum):
    """Tensor-type code in the tensor record (spec §3.4)."""

    F16 = 0
    F32 = 1
    F64 = 2
    U8 = 3
    I32 = 4
    I64 = 5

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return _DTYPES[self]

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_guest(cls, word: int) -> TensorType:
        # Only the low byte counts: WasmEdge reads a u32 and casts it to an 8-bit enum.
        try:
            return cls(word & 0xFF)
        except ValueError:
            raise InvalidArgument(f"unknown tensor type {word & 0xFF}; expected 0 (f16) to 5 (i64)") from None

    @classmethod
    def from_dtype(cls, dtype: npt.DTypeLike) -> TensorType:
        wanted = np.dtype(dtype)
        for member, candidate in _DTYPES.items():
            if candidate == wanted:
                return member
        raise InvalidArgument(f"no WASI-NN tensor type for numpy dtype {wanted}")


_DTYPES: dict[TensorType, np.dtype[np.generic]] = {
    TensorType.F16: np.dtype("<f2"),
    TensorType.F32: np.dtype("<f4"),
    TensorType.F64: np.dtype("<f8"),
    TensorType.U8: np.dtype("u1"),
    TensorType.I32: np.dtype("<i4"),
    TensorType.I64: np.dtype("<i8"),
}


def format_dims(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims) if dims else "scalar"


@dataclass(frozen=True)
class Tensor:
    """A tensor as the guest described it.

    ``data`` is a flat ``uint8`` array. When it comes from ``set_input`` it is a view of
    guest memory that is valid only for the duration of that call: a backend copies what it
    needs (into the framework's own tensor) before returning.
    """

    dims: tuple[int, ...]
    type: TensorType
    data: npt.NDArray[np.uint8]

    @classmethod
    def from_array(cls, array: npt.ArrayLike) -> Tensor:
        arr = np.ascontiguousarray(array)
        kind = TensorType.from_dtype(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        return cls(tuple(arr.shape), kind, arr.reshape(-1).view(np.uint8))

    @property
    def element_count(self) -> int:
        return math.prod(self.dims)

    @property
    def expected_nbytes(self) -> int:
        return self.element_count * self.type.dtype.itemsize

    def array(self, what: str = "tensor") -> npt.NDArray[np.generic]:
        """The data as a typed, shaped view (no copy); checks the byte length against the dims."""
        if self.data.nbytes != self.expected_nbytes:
            raise InvalidArgument(
                f"{what}: {self.type.label} dims {format_dims(self.dims)} need {self.expected_nbytes} bytes, "
                f"the guest passed {self.data.nbytes}"
            )
        try:
            return self.data.view(self.type.dtype).reshape(self.dims)
        except ValueError:  # e.g. a zero-element shape whose other dims overflow numpy's index
            raise InvalidArgument(f"{what}: dims {format_dims(self.dims)} cannot shape the data") from None

    def describe(self) -> str:
        return f"{self.type.label}[{format_dims(self.dims)}]"


# --------------------------------------------------------------------------- backend interface


class BackendContext:
    """One inference session on a graph. Subclasses implement set_input/compute/get_output."""

    def set_input(self, index: int, tensor: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> None:
        raise NotImplementedError

    def get_output(self, index: int) -> npt.NDArray[np.generic]:
        """The output's data, C-contiguous; the caller copies its bytes before the next call."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop a ``compute`` running on another thread, where the framework can; best effort."""

    def compute_single(self) -> None:
        raise InvalidArgument("this backend has no token streaming (compute_single)")

    def get_output_single(self, index: int) -> npt.NDArray[np.generic]:
        raise InvalidArgument("this backend has no token streaming (get_output_single)")

    def fini_single(self) -> None:
        raise InvalidArgument("this backend has no token streaming (fini_single)")

    def close(self) -> None:
        """Release framework resources; idempotent."""


class BackendGraph:
    """A loaded model; shared by its contexts (and by instances, for preloaded models)."""

    def largest_tensor_bytes(self) -> int | None:
        """The byte size of the model's largest static input or output, when known before
        anything is allocated; lets the host refuse a tiny model that declares huge tensors."""
        return None

    def init_execution_context(self) -> BackendContext:
        raise NotImplementedError

    def close(self) -> None:
        """Release framework resources; idempotent."""


@dataclass(frozen=True)
class ModelConfig:
    """Settings a guest passes to ``load_by_name_with_config`` as a JSON object.

    ``threads``: the framework's intra-op threads for this graph; ``device``: a target
    spelling (cpu, gpu, tpu, auto) that replaces the preloaded target. Each backend lists
    the keys it honours in :attr:`Backend.config_keys`; any other key is errno 1.
    """

    threads: int | None = None
    device: ExecutionTarget | None = None

    @classmethod
    def parse(cls, raw: bytes) -> ModelConfig:
        try:
            fields = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidEncoding(f"the model config is not valid JSON: {err}") from None
        if not isinstance(fields, dict):
            raise InvalidArgument(f"the model config must be a JSON object, got {type(fields).__name__}")
        unknown = sorted(set(fields) - {"threads", "device"})
        if unknown:
            raise InvalidArgument(f"unknown model config key(s) {unknown}; known: device, threads")
        threads = fields.get("threads")
        if threads is not None and (type(threads) is not int or threads < 1):
            raise InvalidArgument(f"model config: threads must be a positive integer, got {threads!r}")
        device = fields.get("device")
        if device is not None and not isinstance(device, str):
            raise InvalidArgument(f"model config: device must be a string, got {device!r}")
        try:
            target = ExecutionTarget.from_name(device) if device is not None else None
        except ConfigError as err:
            raise InvalidArgument(f"model config: {err}") from None
        return cls(threads, target)

    def require_honoured(self, backend: Backend) -> None:
        """Errno 1 when a key was given that ``backend`` does not apply."""
        given = {key for key in ("threads", "device") if getattr(self, key) is not None}
        unhonoured = sorted(given - backend.config_keys)
        if unhonoured:
            honoured = ", ".join(sorted(backend.config_keys))
            raise InvalidArgument(
                f"{backend.name}: model config key(s) {unhonoured} not honoured (only {honoured})"
            )


class Backend:
    """One framework. ``load`` turns builder blobs into a :class:`BackendGraph`."""

    encoding: GraphEncoding
    name: str = ""
    # The ModelConfig fields this backend applies (``device`` is applied by the host).
    config_keys: frozenset[str] = frozenset({"device"})

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> BackendGraph:
        raise NotImplementedError


BackendResolver = Callable[[GraphEncoding], Backend]


# --------------------------------------------------------------------------- handles


class GraphStatus(enum.Enum):
    READY = "ready"
    INVALID = "invalid"
    DETACHED = "detached"


@dataclass(eq=False)
class GraphEntry:
    backend_graph: BackendGraph
    encoding: GraphEncoding
    name: str = ""
    status: GraphStatus = GraphStatus.READY
    # Serialises every operation on the graph across its contexts (spec §4.0).
    lock: threading.Lock = field(default_factory=threading.Lock)
    contexts: int = 0

    def release_if_unused(self) -> None:
        if self.status is GraphStatus.DETACHED and self.contexts == 0:
            self.backend_graph.close()


@dataclass(eq=False)
class ContextEntry:
    graph: GraphEntry
    backend_context: BackendContext


T = TypeVar("T")


class HandleTable(Generic[T]):
    """Handles count from 0, only go up and are never reused (spec §4.0)."""

    def __init__(self, kind: str, limit: int | None = None) -> None:
        self._kind = kind
        self._entries: dict[int, T] = {}
        self._next = 0
        self._limit = limit

    def add(self, entry: T) -> int:
        if self._next >= MAX_HANDLE:
            raise BackendError(f"{self._kind} handle space exhausted")
        if self._limit is not None and len(self._entries) >= self._limit:
            raise BackendError(f"too many live {self._kind}s (limit {self._limit})")
        handle = self._next
        self._next += 1
        self._entries[handle] = entry
        return handle

    def get(self, handle: int) -> T:
        try:
            return self._entries[handle]
        except KeyError:
            raise InvalidArgument(f"unknown {self._kind} handle {handle}") from None

    def pop(self, handle: int) -> T:
        entry = self.get(handle)
        del self._entries[handle]
        return entry

    def values(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- named models


@dataclass(frozen=True)
class Preload:
    """A named model, as given by ``--nn-preload NAME:ENCODING:TARGET:PATH[:PATH...]``."""

    name: str
    encoding: GraphEncoding
    target: ExecutionTarget
    paths: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Preload:
        fields = text.split(":")
        if len(fields) < 4 or not all(fields[:3]) or not any(fields[3:]):
            raise ConfigError(
                f"bad --nn-preload {text!r}: expected NAME:ENCODING:TARGET:PATH[:PATH...], "
                "e.g. default:openvino:cpu:model.xml:model.bin"
            )
        name, encoding, target, *paths = fields
        return cls(name, GraphEncoding.from_name(encoding), ExecutionTarget.from_name(target), tuple(paths))

    def read_builders(self) -> tuple[bytes, ...]:
        """Read every path now, so a missing file is reported at start-up, naming it."""
        blobs = []
        for path in self.paths:
            if self.encoding is GraphEncoding.TENSORFLOW and os.path.isdir(path):
                from wasinn.archive import pack_directory  # a SavedModel: the directory as one blob

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


@dataclass(frozen=True)
class NamedModel:
    preload: Preload
    builders: tuple[bytes, ...]

    @classmethod
    def from_preload(cls, preload: Preload) -> NamedModel:
        return cls(preload, preload.read_builders())


# --------------------------------------------------------------------------- the host


class NNHost:
    """The WASI-NN state of one wasm instance: its graphs, contexts and named models.

    Every method raises :class:`NNError` (or a subclass) on failure; the ABI layer turns
    that into the errno. Checks follow the order of spec §4 where they are not about
    guest memory.
    """

    def __init__(
        self,
        resolve_backend: BackendResolver,
        named_models: Sequence[NamedModel] = (),
        *,
        max_graphs: int | None = None,
        max_contexts: int | None = None,
        max_model_bytes: int | None = None,
        max_tensor_bytes: int | None = None,
        deadline: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._resolve_backend = resolve_backend
        self._max_model_bytes = max_model_bytes
        self._max_tensor_bytes = max_tensor_bytes
        self._remaining = deadline
        self._named: dict[str, NamedModel] = {}
        for model in named_models:
            self._named.setdefault(model.preload.name, model)  # the first entry of a name wins
        self._name_cache: dict[str, int] = {}
        self._graphs: HandleTable[GraphEntry] = HandleTable("graph", max_graphs)
        self._contexts: HandleTable[ContextEntry] = HandleTable("context", max_contexts)
        self._lock = threading.Lock()

    # -- graphs

    def load(self, builders: Sequence[bytes], encoding: int, target: ExecutionTarget) -> int:
        self._check_model_size(builders)
        backend = self._resolve_backend(GraphEncoding.from_guest(encoding))
        graph = backend.load(builders, target)
        return self._add_graph(GraphEntry(graph, backend.encoding))

    def load_by_name(self, name: str, config: bytes = b"") -> int:
        with self._lock:
            cached = self._name_cache.get(name)
            if cached is not None:
                return cached  # spec §4.3: a cached name ignores the config
        model = self._named.get(name)
        if model is None:
            known = ", ".join(sorted(self._named)) or "none"
            raise NotFound(f"no preloaded model named {name!r} (preloaded: {known})")
        # Unlike WasmEdge, which appends the config as one more builder (which only GGML
        # reads), wasinn gives every backend a parsed config (docs/backends.md).
        settings = ModelConfig.parse(config) if config else ModelConfig()
        self._check_model_size(model.builders)
        backend = self._resolve_backend(model.preload.encoding)
        settings.require_honoured(backend)
        target = settings.device if settings.device is not None else model.preload.target
        graph = backend.load(model.builders, target, settings)
        with self._lock:
            cached = self._name_cache.get(name)
            if cached is not None:  # a concurrent build won; keep the first
                graph.close()
                return cached
            handle = self._add_graph(GraphEntry(graph, backend.encoding, name=name))
            self._name_cache[name] = handle
            return handle

    def _check_model_size(self, builders: Sequence[bytes]) -> None:
        size = sum(len(blob) for blob in builders)
        if self._max_model_bytes is not None and size > self._max_model_bytes:
            raise BackendError(f"the model's {size} bytes exceed the limit of {self._max_model_bytes} bytes")

    def _add_graph(self, entry: GraphEntry) -> int:
        declared, limit = entry.backend_graph.largest_tensor_bytes(), self._max_tensor_bytes
        if limit is not None and declared is not None and declared > limit:
            entry.backend_graph.close()
            raise BackendError(f"the model declares a {declared}-byte tensor, over the {limit}-byte limit")
        try:
            return self._graphs.add(entry)
        except NNError:
            entry.backend_graph.close()
            raise

    def unload(self, graph: int) -> None:
        with self._lock:
            entry = self._graphs.pop(graph)
            entry.status = GraphStatus.DETACHED
            if entry.name and self._name_cache.get(entry.name) == graph:
                del self._name_cache[entry.name]
        entry.release_if_unused()

    # -- contexts

    def init_execution_context(self, graph: int) -> int:
        entry = self._graphs.get(graph)
        self._require(entry, GraphStatus.READY, "init_execution_context")
        with entry.lock:
            backend_context = entry.backend_graph.init_execution_context()
        entry.contexts += 1
        try:
            return self._contexts.add(ContextEntry(entry, backend_context))
        except NNError:
            self._release_context(ContextEntry(entry, backend_context))
            raise

    def finalize_execution_context(self, context: int) -> None:
        self._release_context(self._contexts.pop(context))

    @staticmethod
    def _release_context(entry: ContextEntry) -> None:
        entry.backend_context.close()
        entry.graph.contexts -= 1
        entry.graph.release_if_unused()

    def set_input(self, context: int, index: int, tensor: Tensor) -> None:
        entry = self._contexts.get(context)
        if entry.graph.status is GraphStatus.DETACHED:
            raise InvalidArgument(f"set_input: the graph of context {context} was unloaded")
        size = tensor.data.nbytes
        if self._max_tensor_bytes is not None and size > self._max_tensor_bytes:
            raise BackendError(
                f"input {index}: {size} bytes exceed the limit of {self._max_tensor_bytes} bytes"
            )
        with entry.graph.lock:
            entry.backend_context.set_input(index, tensor)

    def compute(self, context: int) -> None:
        entry = self._contexts.get(context)
        self._require(entry.graph, GraphStatus.READY, "compute")
        with entry.graph.lock:
            remaining = self._remaining()
            if remaining is None:
                entry.backend_context.compute()
            else:
                run_within(entry.backend_context, remaining)

    def get_output(self, context: int, index: int) -> npt.NDArray[np.generic]:
        entry = self._contexts.get(context)
        with entry.graph.lock:
            return entry.backend_context.get_output(index)

    def compute_single(self, context: int) -> None:
        entry = self._contexts.get(context)
        self._require(entry.graph, GraphStatus.READY, "compute_single")
        with entry.graph.lock:
            entry.backend_context.compute_single()

    def get_output_single(self, context: int, index: int) -> npt.NDArray[np.generic]:
        entry = self._contexts.get(context)
        if entry.graph.status is GraphStatus.INVALID:
            raise InvalidArgument("get_output_single: the graph is invalid")
        with entry.graph.lock:
            return entry.backend_context.get_output_single(index)

    def fini_single(self, context: int) -> None:
        entry = self._contexts.get(context)
        with entry.graph.lock:
            entry.backend_context.fini_single()

    @staticmethod
    def _require(entry: GraphEntry, status: GraphStatus, operation: str) -> None:
        if entry.status is not status:
            raise InvalidArgument(f"{operation}: the graph is {entry.status.value}, not {status.value}")

    # -- lifetime

    @property
    def live_graphs(self) -> int:
        return len(self._graphs)

    @property
    def live_contexts(self) -> int:
        return len(self._contexts)

    def close(self) -> None:
        """Free every context and graph this instance still holds."""
        for context in self._contexts.values():
            self._release_context(context)
        for graph in self._graphs.values():
            graph.status = GraphStatus.DETACHED
            graph.release_if_unused()
        self._contexts = HandleTable("context")
        self._graphs = HandleTable("graph")
        self._name_cache.clear()


def run_within(context: BackendContext, seconds: float) -> None:
    """Run ``compute`` on a worker thread and stop waiting after ``seconds``.

    A guest must not escape its time limit through one long native inference: past the
    limit the framework is asked to cancel and the guest is stopped.
    """
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            context.compute()
            outcome.append(None)
        except BaseException as err:  # handed to the waiting thread below
            outcome.append(err)

    worker = threading.Thread(target=work, name="wasinn-compute", daemon=True)
    worker.start()
    worker.join(max(seconds, 0.0))
    if worker.is_alive():
        context.cancel()
        # A framework thread still running at interpreter exit aborts the process.
        worker.join(CANCEL_GRACE_SECONDS)
        raise LimitExceeded("time limit exceeded during native inference")
    error = outcome[0] if outcome else None
    if error is not None:
        raise error
