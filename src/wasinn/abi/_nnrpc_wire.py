"""WasmEdge's nn-rpc messages (``lib/wasi_nn_rpc/wasi_ephemeral_nn.proto``) on the protobuf wire.

A hand-written codec instead of ``protoc`` output: the nine messages are a handful of
uint32, bytes and string fields, and a generated module would tie the wheel to the
protobuf runtime and to grpcio-tools at build time (spec nn-rpc §7). What must match
WasmEdge byte for byte is only the package, service and method names (the HTTP/2 path)
and each field's number and wire type; those are the constants below.

The tensor type travels as a plain number (spec §5.1): WasmEdge's client sends its own
numbering (U8 = 3) in a field its .proto labels with another (3 = "BF16"), so a name-based
enum would mistranslate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PACKAGE = "wasi_ephemeral_nn"
# service → its methods, in the .proto's order: every one is unary.
SERVICES: dict[str, tuple[str, ...]] = {
    "Graph": ("LoadByName", "LoadByNameWithConfig"),
    "GraphResource": ("InitExecutionContext",),
    "GraphExecutionContextResource": (
        "SetInput",
        "Compute",
        "ComputeSingle",
        "GetOutput",
        "GetOutputSingle",
        "FiniSingle",
    ),
}
# wasinn's extension (spec §5.2): the lifecycle calls WasmEdge's protocol lacks, in a package
# of our own so that a WasmEdge server answers UNIMPLEMENTED and the client falls back to 6.
EXT_PACKAGE = "wasinn.nnrpc.ext.v1"
EXT_SERVICES: dict[str, tuple[str, ...]] = {"Lifecycle": ("Unload", "FinalizeExecutionContext")}
# method → the host function WasmEdge's server runs for it (named in its error details).
HOST_FUNCTION: dict[str, str] = {
    "LoadByName": "load_by_name",
    "LoadByNameWithConfig": "load_by_name_with_config",
    "InitExecutionContext": "init_execution_context",
    "SetInput": "set_input",
    "Compute": "compute",
    "ComputeSingle": "compute_single",
    "GetOutput": "get_output",
    "GetOutputSingle": "get_output_single",
    "FiniSingle": "fini_single",
    "Unload": "unload",
    "FinalizeExecutionContext": "finalize_execution_context",
}
SERVICE_OF = {
    method: f"{package}.{service}"
    for package, services in ((PACKAGE, SERVICES), (EXT_PACKAGE, EXT_SERVICES))
    for service, methods in services.items()
    for method in methods
}


def method_path(method: str) -> str:
    """The HTTP/2 path of ``method``, e.g. ``/wasi_ephemeral_nn.Graph/LoadByName``."""
    return f"/{SERVICE_OF[method]}/{method}"


class WireError(ValueError):
    """Bytes that are not a well-formed message of the expected kind."""


_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
U32_MASK = 0xFFFFFFFF
U64_MASK = (1 << 64) - 1


# ------------------------------------------------------------------ primitives


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= U64_MASK
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & U64_MASK, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _uint32_field(number: int, value: int) -> bytes:
    # proto3 leaves a field at its default out of the message: handle 0 is zero bytes.
    return _varint(number << 3 | _VARINT) + _varint(value & U32_MASK) if value else b""


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH) + _varint(len(value)) + value if value else b""


Fields = dict[int, list[int | bytes]]


def _parse(data: bytes) -> Fields:
    """Every field of one message by number, in wire order; unknown kinds are skipped."""
    fields: Fields = {}
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if kind == _VARINT:
            value, pos = _read_varint(view, pos)
        elif kind == _LENGTH:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise WireError("truncated length-delimited field")
            value, pos = bytes(view[pos : pos + length]), pos + length
        elif kind in (_FIXED64, _FIXED32):
            pos += 8 if kind == _FIXED64 else 4
            if pos > len(view):
                raise WireError("truncated fixed-width field")
            continue  # no field of ours has this wire type: an unknown field
        else:
            raise WireError(f"unsupported wire type {kind}")
        fields.setdefault(number, []).append(value)
    return fields


def _uint32(fields: Fields, number: int) -> int:
    values = [v for v in fields.get(number, ()) if isinstance(v, int)]
    return values[-1] & U32_MASK if values else 0  # proto3: the last occurrence wins


def _bytes(fields: Fields, number: int) -> bytes:
    values = [v for v in fields.get(number, ()) if isinstance(v, bytes)]
    return values[-1] if values else b""


def _string(fields: Fields, number: int) -> str:
    try:
        return _bytes(fields, number).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"field {number} is a string that is not UTF-8") from None


def _packed_uint32(fields: Fields, number: int) -> list[int]:
    """A repeated uint32, packed (protobuf's default) or not: parsers accept both."""
    out: list[int] = []
    for value in fields.get(number, ()):
        if isinstance(value, int):
            out.append(value & U32_MASK)
            continue
        pos = 0
        while pos < len(value):
            item, pos = _read_varint(value, pos)
            out.append(item & U32_MASK)
    return out


# ------------------------------------------------------------------ messages


def encode_handle(handle: int) -> bytes:
    """Every message whose only field is a uint32 at number 1: the graph/context handle of
    LoadByName*Result, InitExecutionContext{Request,Result}, ComputeRequest, FiniSingleRequest
    (and of the extension's requests)."""
    return _uint32_field(1, handle)


def decode_handle(data: bytes) -> int:
    return _uint32(_parse(data), 1)


def encode_load_by_name(name: str, config: str | None = None) -> bytes:
    """LoadByNameRequest (``config`` None) or LoadByNameWithConfigRequest."""
    body = _bytes_field(1, name.encode("utf-8"))
    return body if config is None else body + _bytes_field(2, config.encode("utf-8"))


def decode_load_by_name(data: bytes) -> tuple[str, str]:
    fields = _parse(data)
    return _string(fields, 1), _string(fields, 2)


@dataclass(frozen=True)
class WireTensor:
    dims: tuple[int, ...]
    ty: int  # WasmEdge's tensor-type number, as the guest gave it
    data: bytes


def encode_tensor(dims: Sequence[int], ty: int, data: bytes) -> bytes:
    packed = b"".join(_varint(d & U32_MASK) for d in dims)
    return _bytes_field(1, packed) + _uint32_field(2, ty) + _bytes_field(3, data)


def encode_set_input(context: int, index: int, dims: Sequence[int], ty: int, data: bytes) -> bytes:
    tensor = encode_tensor(dims, ty, data)
    # A sub-message is sent even when empty, as protobuf does for a set message field.
    field = _varint(3 << 3 | _LENGTH) + _varint(len(tensor)) + tensor
    return _uint32_field(1, context) + _uint32_field(2, index) + field


def decode_set_input(data: bytes) -> tuple[int, int, WireTensor]:
    fields = _parse(data)
    tensor = _parse(_bytes(fields, 3))
    dims = tuple(_packed_uint32(tensor, 1))
    return _uint32(fields, 1), _uint32(fields, 2), WireTensor(dims, _uint32(tensor, 2), _bytes(tensor, 3))


def encode_get_output(context: int, index: int) -> bytes:
    return _uint32_field(1, context) + _uint32_field(2, index)


def decode_get_output(data: bytes) -> tuple[int, int]:
    fields = _parse(data)
    return _uint32(fields, 1), _uint32(fields, 2)


def encode_output(data: bytes) -> bytes:
    return _bytes_field(1, data)


def decode_output(data: bytes) -> bytes:
    return _bytes(_parse(data), 1)


def identity(data: bytes) -> bytes:
    """The (de)serializer given to grpc: messages are bytes, coded by the functions above."""
    return data
