"""Encodings, targets, tensor types and tensors, by name.

The core knows these by name only; each ABI front-end owns its numbering (WasmEdge's
``wasi_ephemeral_nn`` codes in :mod:`wasinn.abi._wasmedge`, the WIT case indices in the
component front-end), because the two disagree (U8 is 3 in one and 4 in the other).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wasinn.core._errors import InvalidArgument


class GraphEncoding(enum.Enum):
    """A model format, and so the backend that reads it."""

    OPENVINO = "openvino"
    ONNX = "onnx"
    TENSORFLOW = "tensorflow"
    PYTORCH = "pytorch"
    TENSORFLOWLITE = "tensorflowlite"
    AUTODETECT = "autodetect"
    GGML = "ggml"
    NEURALSPEED = "neuralspeed"
    WHISPER = "whisper"
    MLX = "mlx"
    PIPER = "piper"
    CHATTTS = "chattts"
    OPENVINOGENAI = "openvinogenai"
    BITNET = "bitnet"


class ExecutionTarget(enum.Enum):
    """Where a model runs. wasinn accepts AUTO in ``load`` too (the framework picks)."""

    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"
    AUTO = "auto"


class TensorType(enum.Enum):
    """The element type of a tensor. BF16 exists only for WIT guests (numpy has no bf16)."""

    F16 = "f16"
    F32 = "f32"
    F64 = "f64"
    BF16 = "bf16"
    U8 = "u8"
    I32 = "i32"
    I64 = "i64"

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return _DTYPES[self]

    @property
    def label(self) -> str:
        return self.value

    @classmethod
    def from_dtype(cls, dtype: npt.DTypeLike) -> TensorType:
        wanted = np.dtype(dtype)
        for member, candidate in _DTYPES.items():
            if candidate == wanted and member is not TensorType.BF16:
                return member
        raise InvalidArgument(f"no WASI-NN tensor type for numpy dtype {wanted}")


_DTYPES: dict[TensorType, np.dtype[np.generic]] = {
    TensorType.F16: np.dtype("<f2"),
    TensorType.F32: np.dtype("<f4"),
    TensorType.F64: np.dtype("<f8"),
    TensorType.BF16: np.dtype("V2"),  # raw 2-byte elements: no backend computes in bf16 yet
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
