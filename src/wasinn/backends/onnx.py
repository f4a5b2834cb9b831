"""ONNX Runtime backend (encoding 1): one ``.onnx`` builder, one InferenceSession per graph.

WasmEdge only stubs ONNX (every call answers errno 1); wasinn runs it with ONNX Runtime.
Inputs and outputs are positional, in the order of ``session.get_inputs()`` /
``get_outputs()``. A context keeps its own feeds (copied once out of guest memory in
``set_input``) and the outputs of its last ``compute`` as numpy arrays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from wasinn.backends._common import (
    check_builder_count,
    check_index,
    dims_mismatch,
    dtype_label,
    error_lines,
    resolve_type,
    typed_array,
)
from wasinn.core import (
    Backend,
    BackendContext,
    BackendError,
    BackendGraph,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    Tensor,
    TensorType,
)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
# Tried in this order for target AUTO, each only when this onnxruntime build has it; CPU ends
# the list so nodes the accelerator cannot run still run. TensorRT is left out on purpose: it
# builds an engine per model (minutes), which a guest asking for "auto" does not expect.
AUTO_PREFERENCE = (
    CUDA,
    "ROCMExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    OPENVINO,
)
# The element types a guest can send (spec §3.4). F64 is missing on purpose: code 2 is the
# legacy U8 code (spec §11), so wasinn reads it as U8 and never as F64 for an ONNX input.
_INPUT_TYPES: dict[str, TensorType] = {
    "tensor(float16)": TensorType.F16,
    "tensor(float)": TensorType.F32,
    "tensor(uint8)": TensorType.U8,
    "tensor(int32)": TensorType.I32,
    "tensor(int64)": TensorType.I64,
}
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")

ProviderList = list[str | tuple[str, dict[str, str]]]


def short_message(err: BaseException) -> str:
    """ONNX Runtime prefixes ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ``; keep the first line."""
    lines = error_lines(err)
    first = lines[0] if lines else type(err).__name__
    return _ORT_PREFIX.sub("", first)


def intra_op_threads() -> int:
    """The CPUs this process may run on (ONNX Runtime's default counts the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def providers_for(target: ExecutionTarget, available: Sequence[str]) -> ProviderList:
    """The execution providers for a target; a device this build cannot reach is errno 1."""
    if target is ExecutionTarget.CPU:
        return [CPU]
    if target is ExecutionTarget.GPU:
        if CUDA in available:
            return [CUDA, CPU]
        if OPENVINO in available:
            return [(OPENVINO, {"device_type": "GPU"}), CPU]
        raise InvalidArgument(
            "onnx: target GPU needs the CUDA or OpenVINO execution provider, which this onnxruntime "
            f"does not have (available: {', '.join(available)}); install onnxruntime-gpu"
        )
    if target is ExecutionTarget.AUTO:
        return [*(p for p in AUTO_PREFERENCE if p in available), CPU]
    raise InvalidArgument("onnx: target TPU is not supported; use cpu, gpu or auto")


def _describe(provider: str | tuple[str, dict[str, str]]) -> str:
    if isinstance(provider, str):
        return provider
    name, options = provider
    return f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"


def _provider_name(provider: str | tuple[str, dict[str, str]]) -> str:
    return provider if isinstance(provider, str) else provider[0]


def refuse_external_data(model_bytes: bytes) -> None:
    """A model must carry its own weights: external data would be read from host files."""
    import onnx

    try:
        model = onnx.load_model_from_string(bytes(model_bytes))
    except Exception as err:
        raise InvalidArgument(f"onnx: cannot parse the model: {short_message(err)}") from None
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise InvalidArgument(
                f"onnx: tensor {tensor.name!r} keeps its data in an external file; a guest's model "
                "must carry its weights (onnx.save_model(..., save_as_external_data=False))"
            )


def _all_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


class ONNXBackend(Backend):
    encoding = GraphEncoding.ONNX
    name = "onnx"
    config_keys = frozenset({"device", "threads"})

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> ONNXGraph:
        check_builder_count("onnx", builders, 1, "the .onnx model")
        refuse_external_data(builders[0])
        providers = providers_for(target, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads if config and config.threads else intra_op_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings would go to the guest's stderr
        try:
            session = ort.InferenceSession(bytes(builders[0]), options, providers=providers)
        except Exception as err:
            message = short_message(err)
            if "protobuf" in message.lower() or "no graph" in message.lower():
                raise InvalidArgument(f"onnx: cannot parse the model: {message}") from None
            on = ", ".join(_describe(p) for p in providers)
            raise InvalidArgument(f"onnx: cannot create a session on {on}: {message}") from None
        wanted = _provider_name(providers[0])
        if target is ExecutionTarget.GPU and session.get_providers()[0] != wanted:
            # ONNX Runtime falls back to CPU, with only a warning, when a provider fails to start.
            raise InvalidArgument(
                f"onnx: target GPU: {wanted} failed to initialise (missing CUDA libraries or no "
                f"device?); the session would run on {', '.join(session.get_providers())}"
            )
        return ONNXGraph(session)


class ONNXGraph(BackendGraph):
    def __init__(self, session: Any) -> None:
        self.session: Any = session
        self.inputs: list[Any] = list(session.get_inputs())
        self.outputs: list[Any] = list(session.get_outputs())

    @property
    def input_names(self) -> list[str]:
        return [node.name for node in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [node.name for node in self.outputs]

    def init_execution_context(self) -> ONNXContext:
        return ONNXContext(self)

    def _release(self) -> None:
        self.session = None


class ONNXContext(BackendContext):
    def __init__(self, graph: ONNXGraph) -> None:
        self._graph = graph
        self._feeds: dict[str, npt.NDArray[np.generic]] = {}
        self._results: list[Any] | None = None

    def _set_input(self, index: int, tensor: Tensor) -> None:
        check_index("onnx", "input", index, len(self._graph.inputs))
        node = self._graph.inputs[index]
        what = f"onnx: input {index} ({node.name})"
        kind = _INPUT_TYPES.get(node.type)
        if kind is None:
            raise InvalidArgument(f"{what}: the model expects {node.type} data, which WASI-NN cannot send")
        resolve_type(tensor, kind.dtype, what)
        self._check_dims(node.shape, tensor.dims, what)
        # The one copy: guest memory → an aligned array ONNX Runtime reads directly.
        self._feeds[node.name] = np.array(typed_array(tensor, kind, what))

    @staticmethod
    def _check_dims(shape: Sequence[int | str | None] | None, dims: tuple[int, ...], what: str) -> None:
        if shape is None:  # the model gives no shape at all: anything goes
            return
        fits = len(shape) == len(dims) and all(
            not isinstance(want, int) or want == got for want, got in zip(shape, dims, strict=True)
        )
        if not fits:
            shown = "x".join("?" if not isinstance(d, int) else str(d) for d in shape) or "scalar"
            raise dims_mismatch(what, shown, dims)

    def _compute(self) -> None:
        graph = self._graph
        assert graph.session is not None  # the core refuses a released graph (Lifecycle)
        missing = [i for i, node in enumerate(graph.inputs) if node.name not in self._feeds]
        if missing:
            raise BackendError(f"onnx: compute before set_input of input(s) {missing}")
        self._results = None
        try:
            self._results = list(graph.session.run(None, self._feeds))
        except Exception as err:
            raise BackendError(f"onnx: inference failed: {short_message(err)}") from None

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        check_index("onnx", "output", index, len(self._graph.outputs))
        return super()._output_before_compute(index)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        check_index("onnx", "output", index, len(self._graph.outputs))
        assert self._results is not None  # the base calls this only after a compute
        result = self._results[index]
        name = self._graph.outputs[index].name
        if not isinstance(result, np.ndarray):
            raise BackendError(
                f"onnx: output {index} ({name}) is a {type(result).__name__}, not a tensor; "
                "WASI-NN can only return tensors"
            )
        if result.dtype.kind in "OUS":
            raise BackendError(
                f"onnx: output {index} ({name}) holds {dtype_label(result.dtype)} values, "
                "which have no byte layout WASI-NN can return"
            )
        return np.ascontiguousarray(result)

    def _release(self) -> None:
        self._feeds.clear()
        self._results = None
