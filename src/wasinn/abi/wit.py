"""The component-model ``wasi:nn`` front-end: WIT resources in, core objects out.

Serves ``wasi:nn`` 0.2.0-rc-2024-10-28, -08-19 and -06-25 from one linker
(``shared/spec/wit-wasi-nn.md``). A guest sees four resources (tensor, graph,
graph-execution-context, error); each is an integer *rep* in a table of one :class:`WitNN`,
which lives as long as its store. WIT enums arrive as case names and are translated by name
(WIT's numbering differs from WasmEdge's: ``U8`` is 4 here and 3 there, §2.2). Like the legacy
front-end this layer only converts values: the core does the work and no framework is
imported here.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from wasmtime.component import Linker, LinkerInstance, ResourceAny, ResourceHost, ResourceType, Variant

from wasinn.abi._errors import answer
from wasinn.core import (
    BackendError,
    Errno,
    ExecutionContext,
    ExecutionTarget,
    Graph,
    GraphEncoding,
    GuestTrap,
    InvalidArgument,
    InvalidEncoding,
    LimitExceeded,
    NNError,
    NNSession,
    Tensor,
    TensorType,
)

log = logging.getLogger("wasinn.nn")

V_2024_10_28 = "0.2.0-rc-2024-10-28"
V_2024_08_19 = "0.2.0-rc-2024-08-19"
V_2024_06_25 = "0.2.0-rc-2024-06-25"
VERSIONS = (V_2024_10_28, V_2024_08_19, V_2024_06_25)
CHUNKS_INTERFACE = "wasinn:nn/chunks@0.1.0"

# Host resource type ids; one id per resource serves all three versions (§5).
TENSOR, GRAPH, CONTEXT, ERROR = 1, 2, 3, 4
MAX_REP = 0xFFFFFFFF

# WIT case names in case-index order (§2.2): a guest's enum value is the position here.
TENSOR_TYPE_CASES = ("FP16", "FP32", "FP64", "BF16", "U8", "I32", "I64")
ENCODING_CASES = ("openvino", "onnx", "tensorflow", "pytorch", "tensorflowlite", "ggml", "autodetect")
TARGET_CASES = ("cpu", "gpu", "tpu")
ERROR_CODE_CASES = (
    "invalid-argument",
    "invalid-encoding",
    "timeout",
    "runtime-error",
    "unsupported-operation",
    "too-large",
    "not-found",
    "security",
    "unknown",
)

_TENSOR_TYPES: dict[str, TensorType] = {
    "FP16": TensorType.F16,
    "FP32": TensorType.F32,
    "FP64": TensorType.F64,
    "BF16": TensorType.BF16,
    "U8": TensorType.U8,
    "I32": TensorType.I32,
    "I64": TensorType.I64,
}
_CASE_OF_TENSOR_TYPE = {kind: case for case, kind in _TENSOR_TYPES.items()}
_ENCODINGS = {case: GraphEncoding[case.upper()] for case in ENCODING_CASES}
_TARGETS = {case: ExecutionTarget[case.upper()] for case in TARGET_CASES}
# The witx errno with the same meaning (§2.2); the rest have no WIT twin.
_ERROR_CODE_OF_ERRNO: dict[Errno, str] = {
    Errno.INVALID_ARGUMENT: "invalid-argument",
    Errno.INVALID_ENCODING: "invalid-encoding",
    Errno.BUSY: "timeout",
    Errno.RUNTIME_ERROR: "runtime-error",
    Errno.UNSUPPORTED_OPERATION: "unsupported-operation",
    Errno.TOO_LARGE: "too-large",
    Errno.NOT_FOUND: "not-found",
}


def error_code_of(errno: Errno) -> str:
    return _ERROR_CODE_OF_ERRNO.get(errno, "unknown")


def describe(error: BaseException) -> str:
    """The message with its cause chain: wasmtime's text stops at the top level (§3.4)."""
    parts = [str(error) or type(error).__name__]
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    while cause is not None and len(parts) < 8:
        parts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return ": caused by: ".join(parts)


@dataclass(eq=False)
class HostTensor:
    """A tensor as the guest built it: stored unchanged, checked only when computed (§3.1)."""

    dims: tuple[int, ...]
    case: str  # the WIT tensor-type case, e.g. "FP32"
    data: bytes | bytearray

    def to_core(self) -> Tensor:
        return Tensor(self.dims, _TENSOR_TYPES[self.case], np.frombuffer(self.data, dtype=np.uint8))

    @classmethod
    def from_output(cls, name: str, array: npt.NDArray[np.generic]) -> HostTensor:
        output = np.ascontiguousarray(array)
        try:
            kind = TensorType.from_dtype(output.dtype)
        except InvalidArgument:
            raise InvalidArgument(f"output {name!r}: no WIT tensor type for {output.dtype}") from None
        dims = output.shape if output.ndim else (1,)  # a scalar is [1] in WIT (§2.1)
        return cls(tuple(int(d) for d in dims), _CASE_OF_TENSOR_TYPE[kind], output.tobytes())


@dataclass(eq=False)
class HostContext:
    """An execution context plus the state the 08-19/06-25 calls keep between calls."""

    context: ExecutionContext
    inputs: dict[str, HostTensor] = field(default_factory=dict)  # set-input, bound at compute
    outputs: dict[str, HostTensor] | None = None  # the last compute's, for get-output


T = TypeVar("T")


class WitNN:
    """The ``wasi:nn`` component imports of one store.

    Destructors run only when the guest drops a handle, never when the store goes away
    (§9.3, pitfall 3): :meth:`close` frees what the guest still held.
    """

    def __init__(self, session: NNSession, has_backend: Callable[[GraphEncoding], bool]) -> None:
        self.session = session
        self._has_backend = has_backend
        self.tensors: dict[int, HostTensor] = {}
        self.graphs: dict[int, Graph] = {}
        self.contexts: dict[int, HostContext] = {}
        self.errors: dict[int, tuple[str, str]] = {}
        self._reps = itertools.count(1)

    # -- registration

    def define(self, linker: Linker) -> None:
        """Add all three versions, plus wasinn's chunk extension, to ``linker``."""
        with linker.root() as root:
            for version in VERSIONS:
                self._define_version(root, version)
            with root.add_instance(CHUNKS_INTERFACE) as chunks:
                chunks.add_func("append", self._append)
                chunks.add_func("load-parts", self._load_parts)

    def _define_version(self, root: LinkerInstance, version: str) -> None:
        with root.add_instance(f"wasi:nn/tensor@{version}") as tensor:
            tensor.add_resource("tensor", ResourceType.host(TENSOR), self._drop_tensor)
            tensor.add_func("[constructor]tensor", self._tensor_new)
            tensor.add_func("[method]tensor.dimensions", self._tensor_dimensions)
            tensor.add_func("[method]tensor.ty", self._tensor_ty)
            tensor.add_func("[method]tensor.data", self._tensor_data)
        with root.add_instance(f"wasi:nn/errors@{version}") as errors:
            errors.add_resource("error", ResourceType.host(ERROR), self._drop_error)
            errors.add_func("[method]error.code", self._error_code)
            errors.add_func("[method]error.data", self._error_data)
            if version == V_2024_06_25:
                errors.add_func("[constructor]error", self._error_new)
        with root.add_instance(f"wasi:nn/inference@{version}") as inference:
            inference.add_resource("graph-execution-context", ResourceType.host(CONTEXT), self._drop_context)
            prefix = "[method]graph-execution-context."
            if version == V_2024_10_28:
                inference.add_func(prefix + "compute", self._compute)
            else:
                inference.add_func(prefix + "set-input", self._set_input)
                inference.add_func(prefix + "compute", self._compute_bound)
                inference.add_func(prefix + "get-output", self._get_output)
        with root.add_instance(f"wasi:nn/graph@{version}") as graph:
            graph.add_resource("graph", ResourceType.host(GRAPH), self._drop_graph)
            graph.add_func("[method]graph.init-execution-context", self._init_execution_context)
            graph.add_func("load", self._load)
            graph.add_func("load-by-name", self._load_by_name)

    # -- tables

    def _add(self, table: dict[int, T], entry: T, type_id: int) -> ResourceHost:
        rep = next(self._reps)
        if rep > MAX_REP:
            raise GuestTrap("wasi:nn: resource representation space exhausted")
        table[rep] = entry
        return ResourceHost.own(rep, type_id)

    @staticmethod
    def _rep(store: Any, handle: ResourceAny) -> int:
        # Converting releases a borrow, which must happen before returning (§9.3, pitfall 1).
        rep: int = handle.to_host(store).rep
        return rep

    def _error(self, operation: str, error: NNError) -> ResourceHost:
        code, message = error_code_of(error.errno), describe(error)
        log.warning("%s: %s", operation, message)
        return self._add(self.errors, (code, message), ERROR)

    def _guarded(self, operation: str, work: Callable[[], T]) -> T | ResourceHost:
        """``work()``, or an error resource: an :class:`NNError`'s code, and ``runtime-error``
        for an unexpected exception (logged and counted, abi/_errors.py), as wasmtime answers
        every backend failure (§3.3, §6). A stop (a limit, an interruption) still stops the
        guest. What traps is what cannot reach here: a stale handle (the canonical ABI) and a
        resource-table failure in the lookups before ``work`` (wasmtime's ``ErrorCode::Trap``,
        §3.4, §11 case 31), and calls with no error result (the tensor constructor, getters)."""
        try:
            return work()
        except Exception as error:
            return self._error(operation, answer(error, "wasi:nn", operation, Errno.RUNTIME_ERROR))

    def _tagged(self, operation: str, work: Callable[[], ResourceHost]) -> Variant:
        """``result<own R, own error>``: both arms are resources, so wasmtime-py needs tags (§9.2)."""
        outcome = self._guarded(operation, work)
        if self._is_error(outcome):
            return Variant("err", outcome)
        return Variant("ok", outcome)

    def _is_error(self, outcome: object) -> bool:
        return isinstance(outcome, ResourceHost) and outcome.type == ERROR

    # -- tensor

    def _tensor_new(self, store: Any, dims: list[int], case: str, data: bytes) -> ResourceHost:
        self._check_size(len(data))
        return self._add(self.tensors, HostTensor(tuple(dims), case, data), TENSOR)

    def _check_size(self, size: int) -> None:
        """The host's tensor and model caps, applied as the guest builds a buffer: checked only at
        compute or load, a guest could grow host memory without bound. The constructor and
        ``append`` have no error result (§3.1), so going past the cap traps, as a limit does."""
        limit = self.session.buffer_limit
        if limit is not None and size > limit:
            raise LimitExceeded(
                f"wasi:nn: a tensor of {size:,} bytes exceeds the host's limit of {limit:,} bytes "
                "(max_tensor_bytes / max_model_bytes)"
            )

    def _tensor_dimensions(self, store: Any, self_: ResourceAny) -> list[int]:
        return list(self.tensors[self._rep(store, self_)].dims)

    def _tensor_ty(self, store: Any, self_: ResourceAny) -> str:
        return self.tensors[self._rep(store, self_)].case

    def _tensor_data(self, store: Any, self_: ResourceAny) -> bytes:
        data = self.tensors[self._rep(store, self_)].data
        return data if isinstance(data, bytes) else bytes(data)

    def _drop_tensor(self, store: Any, rep: int) -> None:
        self.tensors.pop(rep, None)

    def _take_tensor(self, store: Any, handle: ResourceAny) -> HostTensor:
        """An owned tensor moved into the host: it leaves the table, no destructor follows (§4)."""
        return self.tensors.pop(self._rep(store, handle))

    # -- errors

    def _error_new(self, store: Any, code: str, data: str) -> ResourceHost:
        return self._add(self.errors, (code, data), ERROR)

    def _error_code(self, store: Any, self_: ResourceAny) -> str:
        return self.errors[self._rep(store, self_)][0]

    def _error_data(self, store: Any, self_: ResourceAny) -> str:
        return self.errors[self._rep(store, self_)][1]

    def _drop_error(self, store: Any, rep: int) -> None:
        self.errors.pop(rep, None)

    # -- graph

    def _load(self, store: Any, builders: list[bytes], encoding: str, target: str) -> Variant:
        return self._tagged("load", lambda: self._load_graph(builders, encoding, target))

    def _load_graph(self, builders: Sequence[bytes], case: str, target: str) -> ResourceHost:
        encoding = _ENCODINGS[case]
        if not self._has_backend(encoding):
            raise InvalidEncoding(f"no backend for the {case} encoding in this wasinn")
        try:
            graph = self.session.load(builders, encoding, _TARGETS[target])
        except InvalidArgument as err:
            # wasmtime reports every backend failure in load as runtime-error (§3.2, §11 case 9-10);
            # the legacy ABI keeps WasmEdge's invalid_argument for the same mistakes.
            raise BackendError(str(err)) from None
        return self._add(self.graphs, graph, GRAPH)

    def _load_by_name(self, store: Any, name: str) -> Variant:
        return self._tagged(
            "load-by-name", lambda: self._add(self.graphs, self.session.load_by_name(name), GRAPH)
        )

    def _init_execution_context(self, store: Any, self_: ResourceAny) -> Variant:
        graph = self.graphs[self._rep(store, self_)]
        return self._tagged(
            "init-execution-context",
            lambda: self._add(self.contexts, HostContext(graph.init_execution_context()), CONTEXT),
        )

    def _drop_graph(self, store: Any, rep: int) -> None:
        graph = self.graphs.pop(rep, None)
        if graph is not None:
            graph.release()  # its contexts keep a reference and keep working (§4)

    # -- inference, 10-28

    def _compute(self, store: Any, self_: ResourceAny, inputs: list[tuple[str, ResourceAny]]) -> object:
        host = self.contexts[self._rep(store, self_)]
        moved = [(name, self._take_tensor(store, handle)) for name, handle in inputs]  # freed either way
        # result<list<named-tensor>, error>: a bare list or a bare error (§9.2).
        return self._guarded("compute", lambda: self._outputs(self._run(host.context, moved)))

    def _run(
        self, context: ExecutionContext, inputs: Iterable[tuple[str, HostTensor]]
    ) -> list[tuple[str, HostTensor]]:
        bound = [(key, tensor.to_core()) for key, tensor in _keys(context, inputs)]
        return [(name, HostTensor.from_output(name, array)) for name, array in context.compute_with_io(bound)]

    def _outputs(self, outputs: list[tuple[str, HostTensor]]) -> list[tuple[str, ResourceHost]]:
        return [(name, self._add(self.tensors, tensor, TENSOR)) for name, tensor in outputs]

    def _drop_context(self, store: Any, rep: int) -> None:
        host = self.contexts.pop(rep, None)
        if host is not None:
            host.context.close()

    # -- inference, 08-19 and 06-25

    def _set_input(
        self, store: Any, self_: ResourceAny, name: str, handle: ResourceAny
    ) -> ResourceHost | None:
        host = self.contexts[self._rep(store, self_)]
        tensor = self._take_tensor(store, handle)  # moved, whatever the outcome

        def set_input() -> None:
            graph = host.context.graph
            if graph.input_names:  # a bad name is set-input's invalid-argument (§6), not compute's
                graph.index_of("input", name)
            host.inputs[name] = tensor

        outcome = self._guarded("set-input", set_input)
        return outcome if isinstance(outcome, ResourceHost) else None  # result<_, error>: ok is None

    def _compute_bound(self, store: Any, self_: ResourceAny) -> ResourceHost | None:
        host = self.contexts[self._rep(store, self_)]

        def compute() -> None:
            host.outputs = None
            host.outputs = dict(self._run(host.context, host.inputs.items()))

        outcome = self._guarded("compute", compute)
        return outcome if isinstance(outcome, ResourceHost) else None  # result<_, error>: ok is None

    def _get_output(self, store: Any, self_: ResourceAny, name: str) -> Variant:
        host = self.contexts[self._rep(store, self_)]

        def get_output() -> ResourceHost:
            if host.outputs is None:
                raise InvalidArgument(f"get-output {name!r}: no outputs yet; call compute first")
            tensor = host.outputs.get(name)
            if tensor is None:
                known = ", ".join(host.outputs) or "none"
                raise InvalidArgument(
                    f"get-output: the model has no output named {name!r} (outputs: {known})"
                )
            return self._add(self.tensors, HostTensor(tensor.dims, tensor.case, tensor.data), TENSOR)

        return self._tagged("get-output", get_output)

    # -- wasinn:nn/chunks: more than one call's worth of bytes (§9.3, pitfall 5)

    def _append(self, store: Any, target: ResourceAny, data: bytes) -> None:
        tensor = self.tensors[self._rep(store, target)]
        self._check_size(len(tensor.data) + len(data))
        if isinstance(tensor.data, bytes):
            tensor.data = bytearray(tensor.data)
        tensor.data += data

    def _load_parts(self, store: Any, parts: list[ResourceAny], encoding: str, target: str) -> Variant:
        builders = [bytes(self.tensors[self._rep(store, part)].data) for part in parts]
        return self._tagged("load-parts", lambda: self._load_graph(builders, encoding, target))

    # -- lifetime

    def close(self) -> None:
        """Free what the guest still held: closing a store runs no destructors (§9.3, pitfall 3)."""
        contexts, graphs = list(self.contexts.values()), list(self.graphs.values())
        self.contexts.clear()
        self.graphs.clear()
        self.tensors.clear()
        self.errors.clear()
        for host in contexts:
            host.context.close()
        for graph in graphs:
            graph.release()


def _keys(
    context: ExecutionContext, inputs: Iterable[tuple[str, HostTensor]]
) -> list[tuple[int | str, HostTensor]]:
    """How each named input binds: by the model's names, else a decimal name as an index (§7).
    A backend that names no inputs binds other names in list order, as wasmtime's PyTorch
    backend does (§3.3)."""
    if context.graph.input_names:
        return [(name, tensor) for name, tensor in inputs]
    return [
        (int(name) if name.isdecimal() else position, tensor)
        for position, (name, tensor) in enumerate(inputs)
    ]
