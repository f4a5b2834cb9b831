"""wasinn's hand-written nn-rpc codec against the protobuf runtime, on random messages.

The messages are declared here as WasmEdge's ``lib/wasi_nn_rpc/wasi_ephemeral_nn.proto``
declares them (package, field numbers, types, its TensorType enum labels, packed dims) and
built with ``google.protobuf``, the runtime WasmEdge's C++ library shares its wire format
with: whatever either side writes, the other reads, byte for byte.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_module
from wasinn.abi import _nnrpc_wire as wire

require_module("google.protobuf")  # installed with the frameworks (TensorFlow, ONNX)

U32 = st.integers(0, 2**32 - 1)
DIMS = st.lists(U32, max_size=6)
TY = st.integers(0, 6)  # every value WasmEdge's enum has, sent as a number
TEXT = st.text(max_size=40)  # any Unicode: proto3 strings are UTF-8


def _classes(packed: bool) -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name=f"wasmedge_nnrpc_{packed}.proto", package="wasi_ephemeral_nn", syntax="proto3"
    )
    enum = file.enum_type.add(name="TensorType")
    for number, label in enumerate(("FP16", "FP32", "FP64", "BF16", "U8", "I32", "I64")):
        enum.value.add(name=label, number=number)

    def message(name: str, *fields: tuple[int, str, int, str]) -> None:
        declared = file.message_type.add(name=name)
        for number, field_name, kind, type_name in fields:
            repeated = field_name == "dimensions"
            entry = declared.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,
            )
            if type_name:
                entry.type_name = type_name
            if repeated:
                entry.options.packed = packed

    handle = (1, "resource_handle", field.TYPE_UINT32, "")
    message(
        "Tensor",
        (1, "dimensions", field.TYPE_UINT32, ""),
        (2, "ty", field.TYPE_ENUM, ".wasi_ephemeral_nn.TensorType"),
        (3, "data", field.TYPE_BYTES, ""),
    )
    message("LoadByNameRequest", (1, "name", field.TYPE_STRING, ""))
    message(
        "LoadByNameWithConfigRequest",
        (1, "name", field.TYPE_STRING, ""),
        (2, "config", field.TYPE_STRING, ""),
    )
    message("LoadByNameResult", (1, "graph_handle", field.TYPE_UINT32, ""))
    message("InitExecutionContextRequest", handle)
    message("InitExecutionContextResult", (1, "ctx_handle", field.TYPE_UINT32, ""))
    message(
        "SetInputRequest",
        handle,
        (2, "index", field.TYPE_UINT32, ""),
        (3, "tensor", field.TYPE_MESSAGE, ".wasi_ephemeral_nn.Tensor"),
    )
    message("ComputeRequest", handle)
    message("GetOutputRequest", handle, (2, "index", field.TYPE_UINT32, ""))
    message("GetOutputResult", (1, "data", field.TYPE_BYTES, ""))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        declared.name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"wasi_ephemeral_nn.{declared.name}")
        )
        for declared in file.message_type
    }


PB = _classes(packed=True)
UNPACKED = _classes(packed=False)


@settings(max_examples=100, deadline=None)
@given(context=U32, index=U32, dims=DIMS, ty=TY, data=st.binary(max_size=64))
def test_set_input_both_ways(context: int, index: int, dims: list[int], ty: int, data: bytes) -> None:
    theirs = PB["SetInputRequest"](resource_handle=context, index=index)
    theirs.tensor.dimensions.extend(dims)
    theirs.tensor.ty = ty
    theirs.tensor.data = data
    ours = wire.encode_set_input(context, index, dims, ty, data)
    assert ours == theirs.SerializeToString()
    assert wire.decode_set_input(theirs.SerializeToString()) == (
        context,
        index,
        wire.WireTensor(tuple(dims), ty, data),
    )
    unpacked = UNPACKED["SetInputRequest"]()
    unpacked.ParseFromString(ours)
    assert list(unpacked.tensor.dimensions) == dims
    assert wire.decode_set_input(unpacked.SerializeToString())[2].dims == tuple(dims)


@settings(max_examples=100, deadline=None)
@given(name=TEXT, config=st.none() | TEXT)
def test_load_by_name_both_ways(name: str, config: str | None) -> None:
    if config is None:
        theirs = PB["LoadByNameRequest"](name=name)
    else:
        theirs = PB["LoadByNameWithConfigRequest"](name=name, config=config)
    assert wire.encode_load_by_name(name, config) == theirs.SerializeToString()
    assert wire.decode_load_by_name(theirs.SerializeToString()) == (name, config or "")


@settings(max_examples=60, deadline=None)
@given(handle=U32, index=U32, data=st.binary(max_size=300))
def test_handles_outputs_and_get_output_both_ways(handle: int, index: int, data: bytes) -> None:
    for name, field in (
        ("LoadByNameResult", "graph_handle"),
        ("InitExecutionContextRequest", "resource_handle"),
        ("InitExecutionContextResult", "ctx_handle"),
        ("ComputeRequest", "resource_handle"),
    ):
        theirs = PB[name](**{field: handle}).SerializeToString()
        assert wire.encode_handle(handle) == theirs
        assert wire.decode_handle(theirs) == handle
    request = PB["GetOutputRequest"](resource_handle=handle, index=index).SerializeToString()
    assert wire.encode_get_output(handle, index) == request
    assert wire.decode_get_output(request) == (handle, index)
    result = PB["GetOutputResult"](data=data).SerializeToString()
    assert wire.encode_output(data) == result
    assert wire.decode_output(result) == data
