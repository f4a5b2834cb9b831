"""``wasi_ephemeral_nn`` forwarded to an nn-rpc server (``wasinn run --nn-rpc-uri URI``).

The same imports as :class:`~wasinn.abi.ephemeral.EphemeralNN`, with WasmEdge's client-mode
answers (spec nn-rpc §4): ``load`` is not in the protocol and answers 6 at once;
``unload`` and ``finalize_execution_context`` go through wasinn's extension service where
the server has one (a wasinn server) and answer 6 otherwise (§5.2); the others check guest
memory as locally, then make one unary call and write the server's own handles into the
guest. The guest's errno is the server's, verbatim; a transport failure is 5 (never the
silent 0 of WasmEdge 0.14–0.17, §5.4).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from wasinn.abi import _nnrpc_wire as _wire
from wasinn.abi.ephemeral import (
    TENSOR_RECORD_SIZE,
    EphemeralNN,
    _tensor_record,
    check_region,
    region,
    write_u32,
)
from wasinn.abi.nnrpc_client import DeadlineExpired, RemoteError, RpcClient
from wasinn.core import Errno, InvalidArgument, NNError, NNSession, TooLarge

log = logging.getLogger("wasinn.nn")

UNSUPPORTED = Errno.UNSUPPORTED_OPERATION
# The tensor types WasmEdge's client forwards (F16, F32, U8, I32); others answer 1 locally.
FORWARDED_TYPES = frozenset({0, 1, 3, 4})


class RemoteEphemeralNN(EphemeralNN):
    """The import module of one instance whose models live on an nn-rpc server."""

    def __init__(self, session: NNSession, park: Callable[[BaseException], None], client: RpcClient) -> None:
        super().__init__(session, park)
        self.client = client

    def _code(self, error: NNError) -> int:
        if isinstance(error, RemoteError):
            return error.code  # any int32 the server sent, as WasmEdge's client passes it on
        return int(error.errno)

    def _call(self, method: str, request: bytes) -> bytes:
        # A guest's time limit (or a serve request's interruption) bounds the remote call too.
        remaining = self.session.check_running()
        try:
            return self.client.call(method, request, timeout=remaining)
        except DeadlineExpired:
            self.session.check_running()  # the guest's own time ran out: stop it, as locally
            raise

    # -- not in WasmEdge's protocol (§4, §5.2)

    def _load(self, *_: int) -> None:
        raise NNError("load (model bytes) is not forwarded over nn-rpc; use load_by_name", UNSUPPORTED)

    def _unload(self, graph: int) -> None:
        self._lifecycle("Unload", graph)

    def _finalize_execution_context(self, context: int) -> None:
        self._lifecycle("FinalizeExecutionContext", context)

    def _lifecycle(self, method: str, handle: int) -> None:
        """Through wasinn's extension where the server has it; 6 otherwise, as WasmEdge's
        client answers (a WasmEdge server says UNIMPLEMENTED once, then no more calls)."""
        function = _wire.HOST_FUNCTION[method]
        if self.client.lifecycle is False:
            raise NNError(f"{function} is not part of WasmEdge's nn-rpc protocol", UNSUPPORTED)
        try:
            self._call(method, _wire.encode_handle(handle))
        except RemoteError as err:
            # No server to ask (yet) answers as WasmEdge's client would, not 5.
            absent = err.status == "UNAVAILABLE" and self.client.lifecycle is None
            if err.status != "UNIMPLEMENTED" and not absent:
                raise
            if not absent:
                self.client.lifecycle = False
            raise NNError(f"{function}: the server does not have wasinn's extension", UNSUPPORTED) from None
        self.client.lifecycle = True

    # -- graphs and contexts

    def _load_by_name(self, name_ptr: int, name_len: int, graph_out: int) -> None:
        self._load_named(name_ptr, name_len, None, graph_out)

    def _load_by_name_with_config(
        self, name_ptr: int, name_len: int, config_ptr: int, config_len: int, graph_out: int
    ) -> None:
        self._load_named(name_ptr, name_len, (config_ptr, config_len), graph_out)

    def _load_named(self, name_ptr: int, name_len: int, config: tuple[int, int] | None, out: int) -> None:
        memory = self._mem()
        check_region(memory, out, 4, "graph out-pointer", lax=False)
        check_region(memory, name_ptr, name_len, "name", lax=False)
        config_ptr, config_len = config or (0, 0)
        check_region(memory, config_ptr, config_len, "config", lax=False)
        try:
            name = bytes(memory[name_ptr : name_ptr + name_len]).decode("utf-8")
            text = None if config is None else bytes(memory[config_ptr : config_ptr + config_len]).decode()
        except UnicodeDecodeError:
            # The fields are protobuf strings: a server cannot decode them (spec §5.9).
            raise NNError("nn-rpc carries model names and configs as UTF-8 only") from None
        method = "LoadByName" if text is None else "LoadByNameWithConfig"
        reply = self._call(method, _wire.encode_load_by_name(name, text))
        write_u32(memory, out, _wire.decode_handle(reply))

    def _init_execution_context(self, graph: int, context_out: int) -> None:
        memory = self._mem()
        check_region(memory, context_out, 4, "context out-pointer", lax=False)
        reply = self._call("InitExecutionContext", _wire.encode_handle(graph))
        write_u32(memory, context_out, _wire.decode_handle(reply))

    def _set_input(self, context: int, index: int, tensor_ptr: int) -> None:
        memory = self._mem()
        check_region(memory, tensor_ptr, TENSOR_RECORD_SIZE, "tensor record", lax=False)
        dims_ptr, dims_len, type_word, data_ptr, data_len = _tensor_record.unpack_from(memory, tensor_ptr)
        check_region(memory, dims_ptr, dims_len * 4, "tensor dims", lax=True)
        check_region(memory, data_ptr, data_len, "tensor data", lax=True)
        kind = type_word & 0xFF  # WasmEdge reads the word into an 8-bit enum, then sends that
        if kind not in FORWARDED_TYPES:
            raise InvalidArgument(f"tensor type {kind} is not forwarded over nn-rpc (f16, f32, u8, i32)")
        dims = struct.unpack_from(f"<{dims_len}I", memory, dims_ptr) if dims_len else ()
        data = region(memory, data_ptr, data_len).tobytes()
        self._call("SetInput", _wire.encode_set_input(context, index, dims, kind, data))

    def _compute(self, context: int) -> None:
        self._call("Compute", _wire.encode_handle(context))

    def _compute_single(self, context: int) -> None:
        self._call("ComputeSingle", _wire.encode_handle(context))

    def _fini_single(self, context: int) -> None:
        self._call("FiniSingle", _wire.encode_handle(context))

    def _get_output(self, context: int, index: int, out_ptr: int, out_max: int, written_ptr: int) -> None:
        self._fetch("GetOutput", context, index, out_ptr, out_max, written_ptr)

    def _get_output_single(
        self, context: int, index: int, out_ptr: int, out_max: int, written_ptr: int
    ) -> None:
        self._fetch("GetOutputSingle", context, index, out_ptr, out_max, written_ptr)

    def _fetch(self, method: str, context: int, index: int, out_ptr: int, out_max: int, written: int) -> None:
        memory = self._mem()
        check_region(memory, out_ptr, out_max, "output buffer", lax=False)
        check_region(memory, written, 4, "bytes-written out-pointer", lax=False)
        try:
            reply = self._call(method, _wire.encode_get_output(context, index))
        except NNError:
            write_u32(memory, written, 0)
            raise
        payload = _wire.decode_output(reply)
        size = len(payload)
        write_u32(memory, written, size)
        if size > out_max:  # the size probe: the guest learns the size, its buffer is untouched
            raise TooLarge(f"output {index} needs {size} bytes, the guest offered {out_max}", size)
        memory[out_ptr : out_ptr + size] = payload

    def close(self) -> None:
        # Nothing to release remotely: the protocol has no call for it (§5.2).
        self.session.close()
