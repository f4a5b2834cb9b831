"""TFLite interpreters for the ``wasmedge_tensorflowlite`` host module (spec §3).

Tensors are addressed by name; inputs keep the model's static shapes, while outputs of ops such
as ``boolean_mask`` take their size at each invoke. WasmEdge's interpreter options apply (2
threads, no default delegates unless ``WASINN_TFLITE_XNNPACK`` asks for them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.backends.tflite import TensorInfo, TFLiteBackend, one_line
from wasinn.core import Busy, InvalidArgument

PLUGIN_THREADS = 2  # WasmEdge's TFLite plug-in
FLATBUFFER_IDENTIFIER = b"TFL3"
_NOT_A_MODEL_HINTS = ("flatbuffer", "identifier", "verif")


class LiteSession:
    def __init__(self, model: bytes) -> None:
        if len(model) < 8 or model[4:8] != FLATBUFFER_IDENTIFIER:
            raise InvalidArgument(
                f"tflite: {len(model)} bytes are not a TFLite flatbuffer (no TFL3 identifier)"
            )
        self.model = model  # the interpreter reads weights from these bytes for its whole life
        try:
            self.interpreter: Any = TFLiteBackend().create_interpreter(model, PLUGIN_THREADS)
        except Exception as err:
            message = one_line(err)
            kind = InvalidArgument if any(h in message.lower() for h in _NOT_A_MODEL_HINTS) else Busy
            raise kind(f"tflite: cannot create an interpreter: {message}") from None
        details = self.interpreter
        self.inputs = [TensorInfo.from_details(i, d) for i, d in enumerate(details.get_input_details())]
        self.outputs = [TensorInfo.from_details(i, d) for i, d in enumerate(details.get_output_details())]
        self._invoked = False
        for info in self.inputs:
            # The arena is uninitialised host memory: a run without inputs must not show it.
            self.interpreter.set_tensor(info.tensor_index, np.zeros(info.shape, info.dtype))

    def set_input(self, name: str, data: npt.NDArray[np.uint8]) -> None:
        """``data`` (guest bytes, valid for this call) is copied into the input named ``name``."""
        info = next((i for i in self.inputs if i.name == name), None)
        if info is None:
            raise InvalidArgument(f"tflite: the model has no input tensor {name!r}")
        if data.nbytes != info.nbytes:
            raise InvalidArgument(
                f"tflite: input {name!r} is {info.describe()} = {info.nbytes} bytes, "
                f"the guest passed {data.nbytes}"
            )
        try:
            self.interpreter.set_tensor(info.tensor_index, data.view(info.dtype).reshape(info.shape))
        except Exception as err:
            raise Busy(f"tflite: cannot copy input {name!r}: {one_line(err)}") from None

    def invoke(self) -> None:
        try:
            self.interpreter.invoke()
            self._invoked = True
        except Exception as err:
            raise Busy(f"tflite: invoke failed: {one_line(err)}") from None

    def output_position(self, name: str) -> int:
        info = next((i for i in self.outputs if i.name == name), None)
        if info is None:
            raise InvalidArgument(f"tflite: the model has no output tensor {name!r}")
        return info.position

    def output_nbytes(self, position: int) -> int:
        """The output's byte size now: a dynamic output (``boolean_mask``, ``Where``) is
        resized by each invoke, so the size at creation is only right until the first one."""
        info = self.outputs[position]
        if not self._invoked:
            return info.nbytes
        shape = self.interpreter.get_output_details()[position]["shape"]
        return math.prod(int(d) for d in shape) * info.dtype.itemsize

    def output(self, position: int) -> npt.NDArray[Any]:
        info = self.outputs[position]
        if not self._invoked:
            return np.zeros(info.shape, info.dtype)  # not the arena's stale bytes
        data: npt.NDArray[Any] = self.interpreter.get_tensor(info.tensor_index)
        return data

    def close(self) -> None:
        self.interpreter = None
