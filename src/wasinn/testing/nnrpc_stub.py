"""A stub WASI-NN backend for nn-rpc transport tests: instant or slow, any output size, any errno.

A "model" is a JSON object (written by the tests, never a real model):
``sleep`` (seconds each compute takes, unless cancelled), ``size`` (output bytes; 0: echo input 0),
``errno`` (compute fails with it), ``raise`` (compute raises a plain Python exception).
The backend records the tensor types it was handed, so a test can see what crossed the wire.
``tests/nnrpc_stub_server.py`` serves such models over nn-rpc in a process a test can kill.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.core import (
    UNGATED,
    Backend,
    BackendContext,
    BackendGraph,
    Errno,
    ExecutionTarget,
    FirstUse,
    GraphEncoding,
    ModelConfig,
    NNError,
    Tensor,
)


class StubContext(BackendContext):
    def __init__(self, graph: StubGraph) -> None:
        self.graph = graph
        self.inputs: dict[int, bytes] = {}
        self.cancelled = threading.Event()

    def _set_input(self, index: int, tensor: Tensor) -> None:
        self.graph.backend.types_seen.append(tensor.type.name)
        self.inputs[index] = np.asarray(tensor.data).tobytes()

    def _compute(self) -> None:
        spec = self.graph.spec
        self.cancelled.clear()
        if self.cancelled.wait(float(spec.get("sleep", 0))):
            self.graph.backend.cancels += 1
            raise NNError("the stub compute was cancelled")
        if spec.get("raise"):
            raise RuntimeError("the stub backend raised on purpose")
        if spec.get("errno"):
            raise NNError("the stub backend failed on purpose", Errno(int(spec["errno"])))

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        size = int(self.graph.spec.get("size", 0))
        if size:
            return (np.arange(size, dtype=np.int64) % 251).astype(np.uint8)
        return np.frombuffer(self.inputs.get(0, b""), dtype=np.uint8)

    def output_count(self) -> int:
        return 1

    def cancel(self) -> None:
        self.cancelled.set()


class StubGraph(BackendGraph):
    def __init__(self, backend: StubBackend, spec: dict[str, Any]) -> None:
        self.backend = backend
        self.spec = spec

    def init_execution_context(self) -> StubContext:
        return StubContext(self)


class StubBackend(Backend):
    encoding = GraphEncoding.ONNX  # any preloadable encoding: the stub answers for it
    name = "nnrpc-stub"

    def __init__(self) -> None:
        self.types_seen: list[str] = []
        self.cancels = 0

    @property
    def first_use(self) -> FirstUse:
        return UNGATED  # no framework to warm: slow computes may overlap from the start

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> StubGraph:
        return StubGraph(self, json.loads(builders[0]))
