"""Checks every backend makes the same way, so their messages and errno agree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from wasinn.core import ExecutionTarget, InvalidArgument, ModelConfig, Tensor, TensorType, format_dims


def check_builder_count(backend: str, builders: Sequence[bytes], expected: int, what: str) -> None:
    if len(builders) != expected:
        raise InvalidArgument(
            f"{backend}: load needs exactly {expected} builder(s) ({what}), got {len(builders)}"
        )


def refuse_auto_in_load(backend: str, target: ExecutionTarget, config: ModelConfig | None) -> None:
    """WasmEdge's GGML and whisper plugins ignore the target, but its ``load`` refuses AUTO (3)
    before any plugin sees it; AUTO works only through ``--nn-preload`` (ggml-backend spec §1).
    A guest's ``load`` reaches the backend without a config; a preloaded model always has one."""
    if target is ExecutionTarget.AUTO and config is None:
        raise InvalidArgument(
            f"{backend}: load takes target cpu, gpu or tpu; auto is for --nn-preload models only"
        )


def check_index(backend: str, kind: str, index: int, count: int) -> None:
    """``kind`` is "input" or "output"; an index past the model's list is errno 1."""
    if index >= count:
        raise InvalidArgument(f"{backend}: {kind} index {index} out of range; the model has {count}")


def dtype_label(dtype: npt.DTypeLike) -> str:
    """WASI-NN's name for a numpy dtype (f32, u8 …), or numpy's own when WASI-NN has none."""
    try:
        return TensorType.from_dtype(dtype).label
    except InvalidArgument:
        return str(np.dtype(dtype))


def resolve_type(tensor: Tensor, expected: npt.DTypeLike, what: str) -> TensorType:
    """The guest's tensor type, which must be the model's; reads legacy code 2 as U8.

    Guests built on the pre-2023 witx send U8 as 2 (F64 today). No model input wasinn
    serves is F64, so code 2 is U8 when the model wants U8 and the byte length says one
    byte per element (spec §11).
    """
    wanted = np.dtype(expected)
    given = tensor.type
    if given is TensorType.F64 and wanted == np.uint8 and tensor.data.nbytes == tensor.element_count:
        given = TensorType.U8
    if given.dtype != wanted:
        raise InvalidArgument(
            f"{what}: the model expects {dtype_label(wanted)} data, the guest sent {tensor.type.label}"
        )
    return given


def dims_mismatch(what: str, expected: str | Sequence[int], dims: Sequence[int]) -> InvalidArgument:
    shown = expected if isinstance(expected, str) else format_dims(expected)
    return InvalidArgument(f"{what}: the model expects dims {shown}, the guest sent {format_dims(dims)}")


def typed_array(tensor: Tensor, kind: TensorType, what: str) -> npt.NDArray[np.generic]:
    """The tensor's data as ``kind``, shaped by its dims; the byte length must match exactly."""
    return Tensor(tensor.dims, kind, tensor.data).array(what)


def error_lines(error: BaseException | str) -> list[str]:
    """The non-blank lines of a framework's error, stripped; each backend picks the telling one."""
    return [line.strip() for line in str(error).splitlines() if line.strip()]
