"""WasmEdge's numbering of encodings, targets and tensor types (spec §3.2–§3.4)."""

from __future__ import annotations

from wasinn.core import ExecutionTarget, GraphEncoding, InvalidArgument, InvalidEncoding, TensorType

ENCODING_CODES: dict[int, GraphEncoding] = {
    0: GraphEncoding.OPENVINO,
    1: GraphEncoding.ONNX,
    2: GraphEncoding.TENSORFLOW,
    3: GraphEncoding.PYTORCH,
    4: GraphEncoding.TENSORFLOWLITE,
    5: GraphEncoding.AUTODETECT,
    6: GraphEncoding.GGML,
    7: GraphEncoding.NEURALSPEED,
    9: GraphEncoding.WHISPER,
    10: GraphEncoding.MLX,
    11: GraphEncoding.PIPER,
    12: GraphEncoding.CHATTTS,
    13: GraphEncoding.OPENVINOGENAI,
    14: GraphEncoding.BITNET,
}
TARGET_CODES: dict[int, ExecutionTarget] = {
    0: ExecutionTarget.CPU,
    1: ExecutionTarget.GPU,
    2: ExecutionTarget.TPU,
    3: ExecutionTarget.AUTO,
}
TENSOR_TYPE_CODES: dict[int, TensorType] = {
    0: TensorType.F16,
    1: TensorType.F32,
    2: TensorType.F64,
    3: TensorType.U8,
    4: TensorType.I32,
    5: TensorType.I64,
}
CODE_OF_ENCODING = {encoding: code for code, encoding in ENCODING_CODES.items()}
CODE_OF_TENSOR_TYPE = {kind: code for code, kind in TENSOR_TYPE_CODES.items()}


def encoding_from_code(code: int) -> GraphEncoding:
    # WasmEdge casts the u32 to an 8-bit enum, so 256 behaves as OpenVINO.
    encoding = ENCODING_CODES.get(code & 0xFF)
    if encoding is None:
        raise InvalidEncoding(f"unknown graph encoding {code}")
    return encoding


def target_from_code(code: int) -> ExecutionTarget:
    target = TARGET_CODES.get(code)
    if target is None:
        raise InvalidArgument(f"unknown execution target {code}; expected 0 (CPU) to 3 (AUTO)")
    return target


def tensor_type_from_code(word: int) -> TensorType:
    # Only the low byte counts: WasmEdge reads a u32 and casts it to an 8-bit enum.
    kind = TENSOR_TYPE_CODES.get(word & 0xFF)
    if kind is None:
        raise InvalidArgument(f"unknown tensor type {word & 0xFF}; expected 0 (f16) to 5 (i64)")
    return kind
