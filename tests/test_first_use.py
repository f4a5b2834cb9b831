"""Each framework's first-use gate (wasinn.core._first_use), on a backend that records overlap.

The real failure (a binding's C++ static built by two threads at once, deadlocking against the
GIL) happens only now and then; ``tests/test_serve_cold.py`` catches it on real servers. Here a
backend counts how many threads are inside it at once, which is deterministic: before the gate,
16 threads loaded and computed together (the first test failed every time).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from wasinn.core import (
    Backend,
    BackendContext,
    BackendGraph,
    Busy,
    Errno,
    ExecutionTarget,
    FirstUse,
    GraphEncoding,
    ModelConfig,
    NNSession,
    Tensor,
    TensorType,
)

THREADS = 16
STAY_SECONDS = 0.02  # long enough inside a call that unserialised threads overlap


class Overlap:
    """How many threads are inside a section at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        time.sleep(0)  # let another thread run while this one is still counted
        with self._lock:
            self.now -= 1


class RecordingContext(BackendContext):
    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend

    def _set_input(self, index: int, tensor: Tensor) -> None:
        with self.backend.entered("inference"):
            time.sleep(STAY_SECONDS)

    def _compute(self) -> None:
        with self.backend.entered("inference"):
            if self.backend.meet is not None:
                self.backend.meet.wait(10)  # warm computes must be able to run together
            time.sleep(STAY_SECONDS)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        return np.zeros(1, np.float32)

    def output_count(self) -> int:
        return 1


class RecordingGraph(BackendGraph):
    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend

    def init_execution_context(self) -> RecordingContext:
        with self.backend.entered("contexts"):
            time.sleep(STAY_SECONDS)
        return RecordingContext(self.backend)


class RecordingBackend(Backend):
    encoding = GraphEncoding.ONNX
    name = "recording"

    def __init__(self, framework: str) -> None:
        # Overlap per kind of call, and of any calls made while the framework was cold.
        self.inside = {kind: Overlap() for kind in ("loads", "contexts", "inference", "cold")}
        self.meet: threading.Barrier | None = None
        self._gate = FirstUse(framework)  # a cold framework for every test

    @contextlib.contextmanager
    def entered(self, kind: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.inside[kind])
            if not self._gate.warm:
                stack.enter_context(self.inside["cold"])
            yield

    @property
    def first_use(self) -> FirstUse:
        return self._gate

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> RecordingGraph:
        with self.entered("loads"):
            time.sleep(STAY_SECONDS)
        return RecordingGraph(self)


def infer(backend: RecordingBackend) -> None:
    session = NNSession(lambda _: backend)
    graph = session.load([b"model"], GraphEncoding.ONNX, ExecutionTarget.CPU)
    context = graph.init_execution_context()
    context.set_input(0, Tensor((1,), TensorType.F32, np.zeros(1, np.float32).view(np.uint8)))
    context.compute()
    context.get_output(0)
    context.close()


def together(target: object, count: int = THREADS) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def test_a_cold_framework_is_entered_by_one_thread_at_a_time() -> None:
    backend = RecordingBackend("cold")
    together(lambda: infer(backend))
    most = {kind: overlap.most for kind, overlap in backend.inside.items()}
    assert most["cold"] == 1 and most["loads"] == 1 and most["contexts"] == 1, most
    assert backend.first_use.warm


def test_a_warm_framework_computes_in_parallel() -> None:
    backend = RecordingBackend("warm")
    infer(backend)  # the first compute warms it
    backend.meet = threading.Barrier(2)
    together(lambda: infer(backend), count=2)
    assert not backend.meet.broken  # both computes were inside at once
    assert backend.inside["inference"].most == 2


def test_a_failed_compute_leaves_the_framework_cold() -> None:
    gate = FirstUse("failing")
    with pytest.raises(RuntimeError), gate.until_warm():
        raise RuntimeError("the first compute failed")
    assert not gate.warm


def test_a_stuck_first_use_is_busy_not_a_hang() -> None:
    gate = FirstUse("stuck", wait_seconds=0.1)
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        with gate.serial():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=stuck)
    holder.start()
    entered.wait(10)
    try:
        with pytest.raises(Busy) as caught, gate.until_warm():
            pass
        assert caught.value.errno is Errno.BUSY
        assert "stuck: its first use on another thread has not finished" in str(caught.value)
    finally:
        release.set()
        holder.join(10)
