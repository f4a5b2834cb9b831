"""WasmEdge's ``wasmedge_tensorflow`` and ``wasmedge_tensorflowlite`` plug-in modules.

Guests built with the Rust crate ``wasmedge_tensorflow_interface`` 0.3.0 import these
(shared spec ``wasmedge-tensorflow.md`` §2–§3). This layer decodes and bounds-checks guest
memory in the spec's order; TensorFlow and LiteRT are reached only through
:mod:`wasinn.backends.tensorflow` and :mod:`wasinn.backends.tflite_plugin`, imported by the
first call that needs them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from wasinn.abi._plugin import PluginModule, SessionTable, import_backend, resolve_guest_path
from wasinn.abi.ephemeral import decode_name, region, write_u32
from wasinn.core import Busy, Errno, InvalidArgument

if TYPE_CHECKING:
    from wasinn.backends.tensorflow import Endpoint, TFSession
    from wasinn.backends.tflite_plugin import LiteSession

TF_MODULE = "wasmedge_tensorflow"
TFLITE_MODULE = "wasmedge_tensorflowlite"
TAG_RECORD_SIZE = 8  # {u32 ptr, u32 len}: a Rust &str on wasm32
DIM_SIZE = 8  # i64


def _tensorflow() -> Any:
    return import_backend("wasinn.backends.tensorflow", "tensorflow", "tensorflow")


def _tflite() -> Any:
    return import_backend("wasinn.backends.tflite_plugin", "ai_edge_litert", "tensorflow")


class _Strings(PluginModule):
    """Reading guest strings and answering through out-pointers, errno 3 when out of bounds."""

    OUT_OF_BOUNDS = Errno.MISSING_MEMORY

    def _string(self, memory: memoryview, ptr: int, length: int, what: str) -> str:
        self._check(memory, ptr, length, what)
        return decode_name(bytes(memory[ptr : ptr + length]))

    def _out(self, memory: memoryview, ptr: int, what: str) -> int:
        self._check(memory, ptr, 4, f"{what} out-pointer")
        return ptr

    def _copy_out(
        self,
        memory: memoryview,
        payload: npt.NDArray[np.uint8],
        buf_ptr: int,
        count: int,
        written_ptr: int,
        written: int,
    ) -> None:
        region(memory, buf_ptr, count)[:] = payload[:count]
        write_u32(memory, written_ptr, written)


# --------------------------------------------------------------------------- TensorFlow


@dataclass
class TFState:
    """A session's ordered input and output lists (spec §2.1); outputs hold the last run's results."""

    session: TFSession
    inputs: dict[str, tuple[Endpoint, npt.NDArray[Any]]] = field(default_factory=dict)
    outputs: dict[str, Endpoint] = field(default_factory=dict)
    results: list[npt.NDArray[np.uint8] | None] = field(default_factory=list)


class WasmEdgeTensorflow(_Strings):
    NAME = TF_MODULE
    FRAMEWORK = "tensorflow"
    SIGNATURES = {
        "create_session": 3,
        "create_session_saved_model": 5,
        "delete_session": 1,
        "run_session": 1,
        "get_output_tensor": 4,
        "get_tensor_len": 3,
        "get_tensor_data": 5,
        "append_input": 8,
        "append_output": 3,
        "clear_input": 1,
        "clear_output": 1,
    }

    def __init__(self, park: Callable[[BaseException], None], dirs: Sequence[tuple[str, Path]] = ()) -> None:
        super().__init__(park)
        self._dirs = list(dirs)  # the guest's --dir mappings: the only host paths it may name
        self._sessions: SessionTable[TFState] = SessionTable("tensorflow")

    def close(self) -> None:
        for state in self._sessions.drain():
            state.session.close()

    def _state(self, session: int) -> TFState:
        return self._sessions.get(session)

    def _create_session(self, model_ptr: int, model_len: int, out_ptr: int) -> None:
        memory = self._mem()
        self._check(memory, model_ptr, model_len, "model")
        self._out(memory, out_ptr, "session")
        model = bytes(memory[model_ptr : model_ptr + model_len])
        session = _tensorflow().TFSession.from_graph_def(model)
        write_u32(self._mem(), out_ptr, self._sessions.add(TFState(session)))

    def _create_session_saved_model(
        self, path_ptr: int, path_len: int, tags_ptr: int, tags_count: int, out_ptr: int
    ) -> None:
        memory = self._mem()
        path = self._string(memory, path_ptr, path_len, "SavedModel path")
        self._check(memory, tags_ptr, tags_count * TAG_RECORD_SIZE, "tags array")
        records = struct.unpack_from(f"<{2 * tags_count}I", memory, tags_ptr) if tags_count else ()
        tags = [
            self._string(memory, ptr, length, f"tag {number}")
            for number, (ptr, length) in enumerate(zip(records[0::2], records[1::2], strict=True))
        ]
        self._out(memory, out_ptr, "session")
        host_path = resolve_guest_path(self._dirs, path)
        session, _meta_graph = _tensorflow().TFSession.from_saved_model(host_path, tags)
        write_u32(self._mem(), out_ptr, self._sessions.add(TFState(session)))

    def _delete_session(self, session: int) -> None:
        state = self._sessions.pop(session)
        if state is not None:
            state.session.close()

    def _append_input(
        self,
        session: int,
        name_ptr: int,
        name_len: int,
        dims_ptr: int,
        dims_count: int,
        dtype_code: int,
        data_ptr: int,
        data_len: int,
    ) -> None:
        memory = self._mem()
        state = self._state(session)
        self._check(memory, data_ptr, data_len, "input data")
        self._check(memory, dims_ptr, dims_count * DIM_SIZE, "input dims")
        name = self._string(memory, name_ptr, name_len, "input name")
        endpoint = state.session.endpoint(name)
        dtype = _tensorflow().numpy_dtype(dtype_code)
        dims = struct.unpack_from(f"<{dims_count}q", memory, dims_ptr) if dims_count else ()
        if any(d < 0 for d in dims):
            raise InvalidArgument(f"tensorflow: input {name!r} has negative dims {list(dims)}")
        needed = math.prod(dims) * dtype.itemsize
        if data_len < needed:
            raise Busy(
                f"tensorflow: input {name!r} {dtype}{list(dims)} needs {needed} bytes, "
                f"the guest passed {data_len}"
            )
        array = np.frombuffer(bytes(memory[data_ptr : data_ptr + needed]), dtype=dtype).reshape(dims)
        state.inputs[name] = (endpoint, array)  # an existing key keeps its place

    def _append_output(self, session: int, name_ptr: int, name_len: int) -> None:
        memory = self._mem()
        state = self._state(session)
        name = self._string(memory, name_ptr, name_len, "output name")
        endpoint = state.session.endpoint(name)
        if name not in state.outputs:
            state.outputs[name] = endpoint
            state.results.append(None)

    def _run_session(self, session: int) -> None:
        state = self._state(session)
        state.results = [None] * len(state.outputs)
        if not state.outputs:
            return
        results = state.session.run(list(state.inputs.values()), list(state.outputs.values()))
        if any(result.dtype.kind in "OSU" for result in results):
            raise Busy("tensorflow: string outputs have no byte form for the guest")
        state.results = [result.reshape(-1).view(np.uint8) for result in results]

    def _get_output_tensor(self, session: int, name_ptr: int, name_len: int, out_ptr: int) -> None:
        memory = self._mem()
        state = self._state(session)
        name = self._string(memory, name_ptr, name_len, "output name")
        self._out(memory, out_ptr, "tensor id")
        keys = list(state.outputs)
        if name not in state.outputs:
            raise InvalidArgument(f"tensorflow: {name!r} was not appended as an output (outputs: {keys})")
        write_u32(memory, out_ptr, keys.index(name))

    def _result(self, state: TFState, tensor_id: int) -> npt.NDArray[np.uint8] | None:
        if tensor_id >= len(state.results):
            raise InvalidArgument(
                f"tensorflow: tensor id {tensor_id}, the session has {len(state.results)} outputs"
            )
        return state.results[tensor_id]

    def _get_tensor_len(self, session: int, tensor_id: int, out_ptr: int) -> None:
        memory = self._mem()
        state = self._state(session)
        self._out(memory, out_ptr, "length")
        result = self._result(state, tensor_id)
        write_u32(memory, out_ptr, 0 if result is None else result.size)

    def _get_tensor_data(
        self, session: int, tensor_id: int, buf_ptr: int, buf_len: int, out_ptr: int
    ) -> None:
        memory = self._mem()
        state = self._state(session)
        self._check(memory, buf_ptr, buf_len, "output buffer")
        self._out(memory, out_ptr, "bytes-written")
        result = self._result(state, tensor_id)
        if result is None:  # never run or failed run: WasmEdge dereferences a null tensor here
            write_u32(memory, out_ptr, 0)
            return
        count = min(result.size, buf_len)
        self._copy_out(memory, result, buf_ptr, count, out_ptr, count)

    def _clear_input(self, session: int) -> None:
        self._state(session).inputs.clear()

    def _clear_output(self, session: int) -> None:
        state = self._state(session)
        state.outputs.clear()
        state.results = []


# --------------------------------------------------------------------------- TensorFlow Lite


class WasmEdgeTensorflowLite(_Strings):
    NAME = TFLITE_MODULE
    FRAMEWORK = "tflite"
    SIGNATURES = {
        "create_session": 3,
        "delete_session": 1,
        "run_session": 1,
        "get_output_tensor": 4,
        "get_tensor_len": 3,
        "get_tensor_data": 5,
        "append_input": 5,
    }

    def __init__(self, park: Callable[[BaseException], None]) -> None:
        super().__init__(park)
        self._sessions: SessionTable[LiteSession] = SessionTable("tflite")

    def close(self) -> None:
        for session in self._sessions.drain():
            session.close()

    def _create_session(self, model_ptr: int, model_len: int, out_ptr: int) -> None:
        memory = self._mem()
        self._check(memory, model_ptr, model_len, "model")
        self._out(memory, out_ptr, "session")
        session = _tflite().LiteSession(bytes(memory[model_ptr : model_ptr + model_len]))
        write_u32(self._mem(), out_ptr, self._sessions.add(session))

    def _delete_session(self, session: int) -> None:
        entry = self._sessions.pop(session)
        if entry is not None:
            entry.close()

    def _append_input(self, session: int, name_ptr: int, name_len: int, data_ptr: int, data_len: int) -> None:
        memory = self._mem()
        entry = self._sessions.get(session)
        self._check(memory, data_ptr, data_len, "input data")
        name = self._string(memory, name_ptr, name_len, "input name")
        entry.set_input(name, region(memory, data_ptr, data_len))

    def _run_session(self, session: int) -> None:
        self._sessions.get(session).invoke()

    def _get_output_tensor(self, session: int, name_ptr: int, name_len: int, out_ptr: int) -> None:
        memory = self._mem()
        entry = self._sessions.get(session)
        name = self._string(memory, name_ptr, name_len, "output name")
        self._out(memory, out_ptr, "tensor id")
        write_u32(memory, out_ptr, entry.output_position(name))

    def _output(self, entry: LiteSession, tensor_id: int) -> Any:
        if tensor_id >= len(entry.outputs):
            raise InvalidArgument(
                f"tflite: tensor id {tensor_id}, the model has {len(entry.outputs)} outputs"
            )
        return entry.outputs[tensor_id]

    def _get_tensor_len(self, session: int, tensor_id: int, out_ptr: int) -> None:
        memory = self._mem()
        entry = self._sessions.get(session)
        self._out(memory, out_ptr, "length")
        self._output(entry, tensor_id)  # the id check
        write_u32(memory, out_ptr, entry.output_nbytes(tensor_id))

    def _get_tensor_data(
        self, session: int, tensor_id: int, buf_ptr: int, buf_len: int, out_ptr: int
    ) -> None:
        memory = self._mem()
        entry = self._sessions.get(session)
        self._check(memory, buf_ptr, buf_len, "output buffer")
        self._out(memory, out_ptr, "bytes-written")
        info = self._output(entry, tensor_id)
        write_u32(memory, out_ptr, 0)  # WasmEdge writes 0 and leaves it 0 on success too
        # The size the last invoke left, not the one at creation: a dynamic output grows.
        payload = np.ascontiguousarray(entry.output(tensor_id)).reshape(-1).view(np.uint8)
        if buf_len != payload.size:
            raise InvalidArgument(
                f"tflite: output {info.name!r} is {payload.size} bytes now, the buffer {buf_len}"
            )
        self._copy_out(memory, payload, buf_ptr, payload.size, out_ptr, 0)
