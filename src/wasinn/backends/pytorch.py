"""PyTorch backend (encoding 3): one TorchScript archive, run by ``torch.jit``.

Spec §6.3 plus wasinn's choices (docs/backends/pytorch.md):

- ``load`` takes exactly one builder, the bytes of a ``torch.jit.save`` archive, for target
  CPU, or GPU when torch sees CUDA. Anything else is errno 1, and a GPU request never falls
  back to the CPU. The module is loaded once per graph, onto its device, in eval mode.
- A context keeps its inputs in a list that grows to the highest index set; ``compute``
  calls ``forward`` with them in order under ``torch.inference_mode()``. The return value
  must be a tensor or a list/tuple of tensors: those are the outputs, in order, converted
  to f32 on the CPU (as WasmEdge's ``toType(kFloat32)``).
- Threads: wasinn never calls ``torch.set_num_threads``. Torch's intra-op pool is
  process-wide, so a per-graph or per-call setting would race between instances; torch's
  default (one thread per physical core, or ``OMP_NUM_THREADS`` when set before start) applies.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from wasinn.backends._common import check_builder_count, error_lines, resolve_type, typed_array
from wasinn.core import (
    PATH_BUILDER,
    Backend,
    BackendContext,
    BackendError,
    BackendGraph,
    Errno,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    Tensor,
)

# set_input grows the input list to ``index + 1`` (as WasmEdge does); an unbounded index from
# the guest would make the host allocate billions of slots, so wasinn stops well before that.
MAX_INPUTS = 1024
_ELF_MAGIC = b"\x7fELF"
_PRELOAD_PREFIX = PATH_BUILDER  # the core's one marker of a builder that names a file
_INTERPRETER_BANNER = "The following operation failed in the TorchScript interpreter"
_MINIZ_BOILERPLATE = " This is an internal miniz error."


def short_message(err: BaseException) -> str:
    """One informative line of a torch error.

    A failure inside TorchScript starts with a fixed banner followed by two tracebacks; the
    cause is the last line ("RuntimeError: mat1 and mat2 shapes cannot be multiplied …").
    Other torch errors put the cause first and C++ frames after it.
    """
    lines = error_lines(err)
    if not lines:
        return type(err).__name__
    if lines[0].startswith(_INTERPRETER_BANNER):
        return lines[-1]
    # A broken archive's message goes on with a paragraph of generic advice after the cause.
    return lines[0].split(_MINIZ_BOILERPLATE)[0]


@dataclass(frozen=True)
class ForwardArgument:
    """One parameter of the module's ``forward`` (after ``self``), from its TorchScript schema."""

    name: str
    type: str
    takes_tensor: bool
    has_default: bool


class PyTorchBackend(Backend):
    encoding = GraphEncoding.PYTORCH
    name = "pytorch"

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> PyTorchGraph:
        check_builder_count("pytorch", builders, 1, "TorchScript archive")
        device = self._device(target)
        (data,) = builders
        if data.startswith(_ELF_MAGIC):
            raise InvalidArgument(
                "pytorch: the builder is an ELF shared library (AOTInductor), which wasinn does not "
                "run; export the model with torch.jit.script or torch.jit.trace and torch.jit.save"
            )
        if data.startswith(_PRELOAD_PREFIX):
            # WasmEdge would open that path on the host; a guest must not name host files.
            raise InvalidArgument("pytorch: a 'preload:<path>' builder is not accepted; send the model bytes")
        try:
            # torch.jit.load has no annotations; it returns a ScriptModule.
            module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
                io.BytesIO(data), map_location=device
            )
        except Exception as err:
            raise InvalidArgument(
                f"pytorch: cannot load the TorchScript archive ({len(data)} bytes): {short_message(err)}"
            ) from None
        module.eval()
        return PyTorchGraph(module, device)

    @staticmethod
    def _device(target: ExecutionTarget) -> torch.device:
        if target is ExecutionTarget.CPU:
            return torch.device("cpu")
        if target is ExecutionTarget.GPU:
            if not torch.cuda.is_available():
                raise InvalidArgument("pytorch: target GPU needs CUDA, which torch does not see here")
            return torch.device("cuda")
        raise InvalidArgument(f"pytorch: target {target.name} is not supported; use CPU or GPU")


class PyTorchGraph(BackendGraph):
    def __init__(self, module: torch.jit.ScriptModule, device: torch.device) -> None:
        self.module: torch.jit.ScriptModule | None = module
        self.device = device
        self.arguments = self._forward_arguments(module)

    @staticmethod
    def _forward_arguments(module: torch.jit.ScriptModule) -> tuple[ForwardArgument, ...]:
        try:
            forward: Any = module.forward  # a torch.jit ScriptMethod, typed as a plain callable
        except AttributeError:
            raise InvalidArgument("pytorch: the TorchScript module has no forward method") from None
        schema = forward.schema
        tensor_type = torch._C.TensorType.get()
        return tuple(
            ForwardArgument(
                arg.name, str(arg.type), tensor_type.isSubtypeOf(arg.type), arg.has_default_value()
            )
            for arg in schema.arguments[1:]  # [0] is self
            if not arg.kwarg_only
        )

    def init_execution_context(self) -> PyTorchContext:
        return PyTorchContext(self)

    def _release(self) -> None:
        self.module = None


class PyTorchContext(BackendContext):
    # WasmEdge's PyTorch backend answers invalid_argument for an output before any compute.
    output_before_compute_errno = Errno.INVALID_ARGUMENT

    def __init__(self, graph: PyTorchGraph) -> None:
        self._graph = graph
        self._inputs: list[torch.Tensor | None] = []
        self._outputs: list[npt.NDArray[np.float32]] = []

    def _set_input(self, index: int, tensor: Tensor) -> None:
        what = f"pytorch: input {index}"
        if index >= MAX_INPUTS:
            raise InvalidArgument(f"{what}: index out of range; wasinn accepts at most {MAX_INPUTS} inputs")
        kind = resolve_type(tensor, np.float32, what)
        array = typed_array(tensor, kind, what)  # a view of guest memory, checked against the dims
        # The one copy: guest memory → memory torch owns (np.array also aligns it).
        value = torch.from_numpy(np.array(array, dtype=np.float32))
        if self._graph.device.type != "cpu":
            value = value.to(self._graph.device)
        if index >= len(self._inputs):
            self._inputs.extend([None] * (index + 1 - len(self._inputs)))
        self._inputs[index] = value

    def _compute(self) -> None:
        module = self._graph.module
        assert module is not None  # the core refuses a released graph (Lifecycle)
        inputs = self._ready_inputs()
        self._outputs = []
        try:
            with torch.inference_mode():
                result = module(*inputs)
        except Exception as err:
            raise BackendError(f"pytorch: forward failed: {short_message(err)}") from None
        tensors = self._tensors_of(result)
        try:
            self._outputs = [self._to_numpy(t) for t in tensors]
        except Exception as err:
            raise BackendError(f"pytorch: cannot convert the outputs to f32: {short_message(err)}") from None

    def _ready_inputs(self) -> list[torch.Tensor]:
        if not self._inputs:
            raise InvalidArgument("pytorch: compute before any set_input")
        missing = [i for i, value in enumerate(self._inputs) if value is None]
        if missing:
            raise InvalidArgument(
                f"pytorch: compute with input(s) {missing} not set; inputs 0..{len(self._inputs) - 1} "
                "must all be set"
            )
        arguments = self._graph.arguments
        required = sum(1 for arg in arguments if not arg.has_default)
        count = len(self._inputs)
        if not required <= count <= len(arguments):
            takes = f"{required}" if required == len(arguments) else f"{required} to {len(arguments)}"
            names = ", ".join(f"{arg.name}: {arg.type}" for arg in arguments)
            raise InvalidArgument(f"pytorch: forward({names}) takes {takes} input(s), the guest set {count}")
        for index, arg in enumerate(arguments[:count]):
            if not arg.takes_tensor:
                raise InvalidArgument(
                    f"pytorch: input {index}: forward's argument {arg.name!r} is {arg.type}, not a tensor"
                )
        return [value for value in self._inputs if value is not None]

    @staticmethod
    def _tensors_of(result: object) -> list[torch.Tensor]:
        if isinstance(result, torch.Tensor):
            return [result]
        if isinstance(result, list | tuple):
            for position, item in enumerate(result):
                if not isinstance(item, torch.Tensor):
                    raise InvalidArgument(
                        f"pytorch: forward returned a {type(result).__name__} whose item {position} is a "
                        f"{type(item).__name__}; outputs must be tensors"
                    )
            return list(result)
        raise InvalidArgument(
            f"pytorch: forward returned a {type(result).__name__}; "
            "expected a tensor or a list/tuple of tensors"
        )

    @staticmethod
    def _to_numpy(value: torch.Tensor) -> npt.NDArray[np.float32]:
        # An f32 contiguous CPU tensor converts without a copy; the ABI layer copies it into the
        # guest during get_output, and a later compute replaces (never mutates) these tensors.
        cpu = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
        array: npt.NDArray[np.float32] = cpu.numpy()
        return array

    def output_count(self) -> int:
        return len(self._outputs)  # what forward returned; names are not kept (WIT spec §3.3)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        if index >= len(self._outputs):
            raise InvalidArgument(
                f"pytorch: output index {index} out of range; the model returned {len(self._outputs)}"
            )
        return self._outputs[index]

    def _release(self) -> None:
        self._inputs = []
        self._outputs = []
