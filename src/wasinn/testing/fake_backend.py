"""A backend with no framework, for testing the host and the front-ends without one.

Its model is a few bytes of JSON (:func:`fake_model`); its computation is ``y = x * 2 + c``
on one f32 input ``x`` and one output ``y`` of the same shape, with ``c`` the model's
constant. A model can also make compute raise (the unexpected-exception policy,
abi/_errors.py) or take time (time limits, interruption, concurrency). It goes through the
real core: the :class:`~wasinn.core.Backend` ABCs and their lifecycle guards, the
framework's first-use gate (framework ``"fake"``) and the backend registry, where
:func:`serving` puts it in place of an encoding's own backend::

    with serving(GraphEncoding.OPENVINO) as fake:
        Runtime(...).run(guest)           # load(..., encoding 0) reaches ``fake``
        assert fake.stats.computes == 1
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from wasinn.backends import serving_as
from wasinn.core import (
    Backend,
    BackendContext,
    BackendGraph,
    ExecutionTarget,
    GraphEncoding,
    GuestCancelled,
    InvalidArgument,
    ModelConfig,
    Tensor,
    TensorType,
)

MAGIC = "wasinn-fake-model"
INPUT, OUTPUT = "x", "y"
# What a model may make compute raise: a framework failure, or a stop from inside a host call.
RAISES: dict[str, type[BaseException]] = {
    "RuntimeError": RuntimeError,
    "KeyError": KeyError,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GuestCancelled": GuestCancelled,
}


def fake_model(constant: float = 1.0, *, raises: str | None = None, seconds: float = 0.0) -> bytes:
    """The one builder of a fake model: ``y = x * 2 + constant``; with ``raises``, compute
    raises that exception (a name in :data:`RAISES`); with ``seconds``, compute first waits
    that long (woken early by ``cancel()``, as a framework that heeds it)."""
    if raises is not None and raises not in RAISES:
        raise ValueError(f"raises must be one of {sorted(RAISES)}")
    return json.dumps({MAGIC: 1, "constant": constant, "raises": raises, "seconds": seconds}).encode()


def expected(x: npt.ArrayLike, constant: float = 1.0) -> npt.NDArray[np.float32]:
    """What the fake computes, in numpy: the reference its tests compare with."""
    return np.asarray(x, dtype=np.float32) * np.float32(2) + np.float32(constant)


@dataclass
class Stats:
    """What the fake saw, across every graph and context of one :class:`FakeBackend`."""

    loads: int = 0
    computes: int = 0
    running: int = 0  # computes in progress now
    most_running: int = 0  # the most at once
    open_contexts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self) -> None:
        with self.lock:
            self.computes += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


class FakeBackend(Backend):
    encoding: ClassVar[GraphEncoding] = GraphEncoding.OPENVINO
    name = "fake"
    framework = "fake"

    def __init__(self) -> None:
        self.stats = Stats()

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> FakeGraph:
        if len(builders) != 1:
            raise InvalidArgument(f"fake: expects 1 builder, got {len(builders)}")
        try:
            model: dict[str, Any] = json.loads(bytes(builders[0]))
        except (UnicodeDecodeError, json.JSONDecodeError):
            model = {}
        if not isinstance(model, dict) or model.get(MAGIC) != 1:
            raise InvalidArgument("fake: the builder is not a fake model (wasinn.testing.fake_backend)")
        with self.stats.lock:
            self.stats.loads += 1
        return FakeGraph(self.stats, float(model["constant"]), model["raises"], float(model["seconds"]))


class FakeGraph(BackendGraph):
    def __init__(self, stats: Stats, constant: float, raises: str | None, seconds: float) -> None:
        self.stats = stats
        self.constant = constant
        self.raises = raises
        self.seconds = seconds

    def init_execution_context(self) -> FakeContext:
        with self.stats.lock:
            self.stats.open_contexts += 1
        return FakeContext(self)

    @property
    def input_names(self) -> Sequence[str]:
        return [INPUT]

    @property
    def output_names(self) -> Sequence[str]:
        return [OUTPUT]


class FakeContext(BackendContext):
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph
        self._input: npt.NDArray[np.float32] | None = None
        self._output: npt.NDArray[np.float32] | None = None
        self._cancelled = threading.Event()

    def _set_input(self, index: int, tensor: Tensor) -> None:
        if index != 0:
            raise InvalidArgument(f"fake: input {index}; the model has one input")
        if tensor.type is not TensorType.F32:
            raise InvalidArgument(f"fake: input type {tensor.type.value}; the model takes f32")
        # The one copy in: tensor.data is a view of guest memory, valid for this call only.
        self._input = np.array(tensor.array("fake: input x"), dtype=np.float32)

    def _compute(self) -> None:
        graph = self.graph
        graph.stats.enter()
        try:
            self._cancelled.clear()
            if graph.seconds and self._cancelled.wait(graph.seconds):
                raise RuntimeError("fake: compute cancelled")
            if graph.raises is not None:
                raise RAISES[graph.raises](f"fake: compute raised {graph.raises} on purpose")
            if self._input is None:
                raise InvalidArgument("fake: compute before set_input")
            self._output = expected(self._input, graph.constant)
        finally:
            graph.stats.leave()

    def _get_output(self, index: int) -> npt.NDArray[np.float32]:
        if index != 0 or self._output is None:
            raise InvalidArgument(f"fake: output {index}; the model has one output")
        return self._output

    def cancel(self) -> None:
        self._cancelled.set()

    def _release(self) -> None:
        with self.graph.stats.lock:
            self.graph.stats.open_contexts -= 1


@contextmanager
def serving(encoding: GraphEncoding = GraphEncoding.OPENVINO) -> Iterator[FakeBackend]:
    """A new :class:`FakeBackend` as the process's backend for ``encoding`` while inside
    (``wasinn.backends.serving_as``); the encoding's own backend afterwards."""
    backend_class = (
        FakeBackend
        if encoding is FakeBackend.encoding
        else type(f"FakeBackend_{encoding.name}", (FakeBackend,), {"encoding": encoding})
    )
    with serving_as(backend_class()) as backend:
        assert isinstance(backend, FakeBackend)
        yield backend
