"""OpenVINO backend (encoding 0): IR XML + weights, compiled once per graph.

``load`` reads the model; the graph compiles it on first use, once per input layout, and
keeps every compiled variant. A context takes an infer request at its first ``set_input``
(one a finished context gave back, else a new one) and gives it back when released, so a
server's per-request contexts reuse warm buffers. When a guest's input dims are the model's
4-D shape permuted between NCHW and NHWC, the variant for that layout converts it in its
pre-processing, so the guest needs no transpose loop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from wasinn.backends._common import (
    check_builder_count,
    check_index,
    dims_mismatch,
    error_lines,
    resolve_type,
    typed_array,
)
from wasinn.backends._offline import openvino_telemetry_off
from wasinn.backends.autodetect import is_openvino_ir
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

with openvino_telemetry_off():  # OpenVINO's first import would otherwise phone home (a fork)
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

MAX_DIMS = 8  # WasmEdge's limit for an OpenVINO input
IDLE_REQUESTS = 2  # finished contexts' infer requests kept per compiled variant, for the next
DEVICES = {
    ExecutionTarget.CPU: "CPU",
    ExecutionTarget.GPU: "GPU",
    ExecutionTarget.TPU: "NPU",
    ExecutionTarget.AUTO: "AUTO",
}
# (tensor layout, model layout) for a guest tensor whose dims are the model's shape permuted.
_PERMUTATIONS: dict[tuple[str, str], tuple[int, ...]] = {
    ("NHWC", "NCHW"): (0, 2, 3, 1),
    ("NCHW", "NHWC"): (0, 3, 1, 2),
}
# Input index → (tensor layout, model layout); empty when the guest sends the model's own shape.
LayoutKey = tuple[tuple[int, tuple[str, str]], ...]
# What a context decided about one (index, dims, type): the type to read the data as, and
# the layout conversion (None for the model's own shape).
Acceptance = tuple[TensorType, tuple[str, str] | None]


def short_message(err: BaseException) -> str:
    """OpenVINO's messages carry C++ file names and blank lines; keep the informative line."""
    lines = error_lines(err)
    useful = [line for line in lines if not line.startswith(("Exception from src/", "Check '"))]
    return (useful or lines or [type(err).__name__])[0]


def _port_name(port: ov.Output, index: int) -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # an unnamed output is addressed by its index
        return str(index)


class OpenVINOBackend(Backend):
    encoding = GraphEncoding.OPENVINO
    name = "openvino"
    config_keys = frozenset({"device", "threads"})

    def __init__(self) -> None:
        self._core: ov.Core | None = None
        self._core_lock = threading.Lock()

    @property
    def core(self) -> ov.Core:
        # Created on first use so that a missing or broken OpenVINO only affects its users.
        with self._core_lock:
            if self._core is None:
                self._core = ov.Core()
            return self._core

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> OpenVINOGraph:
        check_builder_count("openvino", builders, 2, "IR xml, weights")
        xml, weights = builders
        if not is_openvino_ir(xml):
            # read_model also takes ONNX and other formats, some of which read files named
            # in the model (external weights) relative to the host's working directory.
            raise BackendError("openvino: cannot read the IR model: builder 0 is not XML whose root is <net>")
        device = DEVICES[target]
        available = self.core.available_devices
        if device not in ("AUTO", *available) and not any(d.startswith(device + ".") for d in available):
            raise BackendError(
                f"openvino: target {target.name} needs the {device} device, which this machine "
                f"does not have (available: {', '.join(available)})"
            )
        try:
            model = self.core.read_model(model=bytes(xml), weights=bytes(weights))
        except Exception as err:
            raise BackendError(f"openvino: cannot read the IR model: {short_message(err)}") from None
        properties = {"INFERENCE_NUM_THREADS": config.threads} if config and config.threads else {}
        return OpenVINOGraph(self.core, model, device, properties)


class OpenVINOGraph(BackendGraph):
    """A parsed model; compiled lazily, once per input layout a guest actually sends.

    Compiling at ``load`` would waste a compile whenever the guest's first ``set_input``
    asks for a layout conversion (the seed's NHWC tensor, for example).
    """

    def __init__(
        self, core: ov.Core, model: ov.Model, device: str, properties: dict[str, int] | None = None
    ) -> None:
        self._core = core
        self._properties = properties or {}
        self.model = model
        self.device = device
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)
        self._input_names = [port.get_any_name() for port in self.inputs]
        self._output_names = [_port_name(port, i) for i, port in enumerate(self.outputs)]
        self.input_dtypes = [np.dtype(port.get_element_type().to_dtype()) for port in self.inputs]
        self._variants: dict[LayoutKey, ov.CompiledModel] = {}
        self._idle: dict[LayoutKey, list[ov.InferRequest]] = {}
        self._lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        return self._input_names

    @property
    def output_names(self) -> list[str]:
        return self._output_names

    def largest_tensor_bytes(self) -> int | None:
        sizes = [
            math.prod(port.get_shape()) * np.dtype(port.get_element_type().to_dtype()).itemsize
            for port in (*self.inputs, *self.outputs)
            if port.get_partial_shape().is_static
        ]
        return max(sizes, default=None)

    def compiled(self, key: LayoutKey) -> ov.CompiledModel:
        """The model compiled for these input layouts; each variant compiles once."""
        with self._lock:
            compiled = self._variants.get(key)
            if compiled is None:
                model = self.model if not key else self._with_layouts(key)
                try:
                    compiled = self._core.compile_model(model, self.device, self._properties)
                except Exception as err:
                    raise BackendError(
                        f"openvino: cannot compile the model for {self.device}: {short_message(err)}"
                    ) from None
                self._variants[key] = compiled
            return compiled

    def take_request(self, key: LayoutKey) -> ov.InferRequest:
        """An infer request of the variant: one a finished context gave back, else a new one.

        A server makes a context per request; a new infer request's buffers are fresh pages
        that fault in during its first inference (2-3 ms of a 20 ms road segmentation).
        """
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return self.compiled(key).create_infer_request()

    def give_back(self, key: LayoutKey, request: ov.InferRequest) -> None:
        """Keep a finished context's request for the next one (at most IDLE_REQUESTS a variant)."""
        if request.query_state():
            request.reset_state()  # a stateful model's next context starts from its initial state
        with self._lock:
            if key not in self._variants:
                return  # the graph was closed
            idle = self._idle.setdefault(key, [])
            if len(idle) < IDLE_REQUESTS:
                idle.append(request)

    def _with_layouts(self, key: LayoutKey) -> ov.Model:
        ppp = PrePostProcessor(self.model)
        for index, (tensor_layout, model_layout) in key:
            ppp.input(index).tensor().set_layout(ov.Layout(tensor_layout))
            ppp.input(index).model().set_layout(ov.Layout(model_layout))
        return ppp.build()

    def layout_for(self, index: int, dims: tuple[int, ...], what: str) -> tuple[str, str] | None:
        """None when ``dims`` fit the model's input as they are, else the layout conversion."""
        shape = self.inputs[index].get_partial_shape()
        if shape.is_static:
            model_dims = tuple(int(d) for d in shape.to_shape())
            if model_dims == dims:
                return None
            for layouts, order in _PERMUTATIONS.items():
                if len(model_dims) == 4 and tuple(model_dims[i] for i in order) == dims:
                    return layouts
            raise dims_mismatch(what, model_dims, dims)
        if not shape.compatible(ov.PartialShape(list(dims))):
            raise dims_mismatch(what, str(shape), dims)
        return None

    def init_execution_context(self) -> OpenVINOContext:
        return OpenVINOContext(self)

    def _release(self) -> None:
        with self._lock:
            self._variants.clear()
            self._idle.clear()


class OpenVINOContext(BackendContext):
    def __init__(self, graph: OpenVINOGraph) -> None:
        self._graph = graph
        self._layouts: dict[int, tuple[str, str]] = {}
        self._request: ov.InferRequest | None = None  # taken on the first set_input
        self._request_key: LayoutKey = ()
        self._cancelled = False
        self._inputs_set: set[int] = set()
        # Shape and type checks run once per (index, dims, type), not on every set_input.
        self._accepted: dict[tuple[int, tuple[int, ...], TensorType], Acceptance] = {}

    @property
    def request(self) -> ov.InferRequest:
        if self._request is None:
            self._request_key = self._key()
            self._request = self._graph.take_request(self._request_key)
            # Views of the request's own tensors: building one costs more than a small copy.
            self._input_views: dict[int, npt.NDArray[np.generic]] = {}
            self._output_views: dict[int, npt.NDArray[np.generic]] = {}
        return self._request

    def _key(self) -> LayoutKey:
        return tuple(sorted(self._layouts.items()))

    def _set_input(self, index: int, tensor: Tensor) -> None:
        check_index("openvino", "input", index, len(self._graph.inputs))
        what = f"openvino: input {index} ({self._graph.input_names[index]})"
        accepted = self._accepted.get((index, tensor.dims, tensor.type))
        if accepted is None:
            accepted = self._accept(index, tensor, what)
        kind, layout = accepted
        array = typed_array(tensor, kind, what)
        if self._layouts.get(index) != layout:
            self._switch_layout(index, layout)
        request = self.request
        try:
            target = self._input_views.get(index)
            if target is None or target.shape != array.shape:
                target = self._input_views[index] = request.get_input_tensor(index).data
            if target.shape == array.shape:
                np.copyto(target, array)  # the one copy: guest memory → OpenVINO's tensor
            else:  # a dynamic input takes a tensor of the guest's shape
                request.set_input_tensor(index, ov.Tensor(np.array(array)))
                del self._input_views[index]
        except Exception as err:
            raise BackendError(f"{what}: {short_message(err)}") from None
        self._inputs_set.add(index)

    def _accept(self, index: int, tensor: Tensor, what: str) -> Acceptance:
        if len(tensor.dims) > MAX_DIMS:
            raise InvalidArgument(f"{what}: {len(tensor.dims)} dims, at most {MAX_DIMS} are supported")
        kind = resolve_type(tensor, self._graph.input_dtypes[index], what)
        accepted = kind, self._graph.layout_for(index, tensor.dims, what)
        if kind is tensor.type:  # the legacy-U8 reading depends on the data length: not cached
            self._accepted[(index, tensor.dims, tensor.type)] = accepted
        return accepted

    def _switch_layout(self, index: int, layout: tuple[str, str] | None) -> None:
        if layout is None:
            self._layouts.pop(index, None)
        else:
            self._layouts[index] = layout
        previous = self._request
        self._request = None
        if previous is not None:
            request = self.request
            for other in self._inputs_set - {index}:
                request.set_input_tensor(other, previous.get_input_tensor(other))
        self._inputs_set.discard(index)
        self._computed = False

    def _compute(self) -> None:
        if len(self._inputs_set) < len(self._graph.inputs):
            missing = [i for i in range(len(self._graph.inputs)) if i not in self._inputs_set]
            raise BackendError(f"openvino: compute before set_input of input(s) {missing}")
        try:
            self.request.infer()
        except Exception as err:
            raise BackendError(f"openvino: inference failed: {short_message(err)}") from None

    def cancel(self) -> None:
        if self._request is not None:
            self._cancelled = True
            self._request.cancel()

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        check_index("openvino", "output", index, len(self._graph.outputs))
        return super()._output_before_compute(index)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        check_index("openvino", "output", index, len(self._graph.outputs))
        view = self._output_views.get(index)
        if view is None:
            view = self.request.get_output_tensor(index).data
            if self._graph.outputs[index].get_partial_shape().is_static:
                self._output_views[index] = view  # a static output keeps its buffer across infers
        return view

    def _release(self) -> None:
        request, self._request = self._request, None
        if request is not None and not self._cancelled:
            self._graph.give_back(self._request_key, request)
