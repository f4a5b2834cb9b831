"""TensorFlow (TF1-style graphs and sessions): the ``wasmedge_tensorflow`` host module's
sessions and the WASI-NN ``tensorflow`` backend (encoding 2).

Both paths go through :class:`TFSession`, so one model gives the same bytes either way.
Importing this module imports TensorFlow (seconds): only the first guest call that needs it
does. Nothing here sees guest memory.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banner is noise on the guest's stderr

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the v1 loader's deprecation notices are not the guest's business

from wasinn.backends._common import check_builder_count, check_index, dtype_label, error_lines  # noqa: E402
from wasinn.core import (  # noqa: E402
    Backend,
    BackendContext,
    BackendGraph,
    Busy,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    Tensor,
    format_dims,
)
from wasinn.core._archive import is_archive, unpack_directory  # noqa: E402

SERVE_TAGS = ("serve",)
DEFAULT_SIGNATURE = "serving_default"
# TF_DataType codes (spec §2.1) that have a fixed-size numpy form; string, resource, variant
# and the quantized types have none, and a guest naming them gets errno 1.
_FEEDABLE_CODES = frozenset({1, 2, 3, 4, 5, 6, 8, 9, 10, 14, 17, 18, 19, 22, 23})
# Ops that end a graph without being a result anyone would read.
_NOT_OUTPUTS = frozenset({"Placeholder", "PlaceholderWithDefault", "Const", "NoOp", "Assert", "VarHandleOp"})


@functools.cache
def numpy_dtype(code: int) -> np.dtype[Any]:
    """The numpy dtype of a ``TF_DataType`` code; errno 1 for codes without raw-byte form."""
    if code not in _FEEDABLE_CODES:
        raise InvalidArgument(f"tensorflow: data type code {code} has no fixed-size byte form")
    dtype: np.dtype[Any] = np.dtype(tf.dtypes.as_dtype(code).as_numpy_dtype)
    return dtype


THREADS_ENV = "WASINN_TF_THREADS"


def session_config(threads: int | None = None) -> Any:
    """TF's default session options (as WasmEdge's), or ``threads`` (else ``WASINN_TF_THREADS``)
    intra- and inter-op threads; ``None`` means TF's defaults."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if threads is None and not raw:
        return None
    if threads is None:
        if not raw.isdigit() or int(raw) < 1:
            raise InvalidArgument(f"{THREADS_ENV}={raw!r} is not a positive integer")
        threads = int(raw)
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads
    )


def new_session(graph: Any, threads: int | None = None) -> Any:
    return tf.compat.v1.Session(graph=graph, config=session_config(threads))


def first_error_line(err: BaseException) -> str:
    lines = error_lines(getattr(err, "message", None) or str(err))
    return lines[0] if lines else type(err).__name__


@dataclass(frozen=True)
class Endpoint:
    """``(operation, output index)``: what a tensor name addresses."""

    operation: Any
    index: int

    def tensor(self) -> Any:
        try:
            return self.operation.outputs[self.index]
        except IndexError:
            raise Busy(
                f"tensorflow: operation {self.operation.name!r} has {len(self.operation.outputs)} "
                f"output(s), no output {self.index}"
            ) from None


class TFSession:
    """A graph and a TF1 session over it."""

    def __init__(self, graph: Any, session: Any) -> None:
        self.graph = graph
        self.session: Any = session
        self._callables: dict[tuple[Any, ...], Any] = {}
        self._endpoints: dict[str, Endpoint] = {}  # guests name the same tensors every round

    @classmethod
    def from_graph_def(cls, model: bytes, threads: int | None = None) -> TFSession:
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(model)
        except Exception as err:
            raise InvalidArgument(
                f"tensorflow: the {len(model)} model bytes are not a GraphDef: {first_error_line(err)}"
            ) from None
        graph = tf.Graph()
        try:
            with graph.as_default():
                tf.graph_util.import_graph_def(graph_def, name="")  # "" keeps op names unprefixed
            session = new_session(graph, threads)
        except Exception as err:
            raise InvalidArgument(
                f"tensorflow: cannot import the GraphDef: {first_error_line(err)}"
            ) from None
        return cls(graph, session)

    @classmethod
    def from_saved_model(
        cls, path: str | Path, tags: Sequence[str], threads: int | None = None
    ) -> tuple[TFSession, Any]:
        """The session and the loaded MetaGraphDef (for its signatures)."""
        graph = tf.Graph()
        session = new_session(graph, threads)
        try:
            with graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), str(path))
        except Exception as err:
            session.close()
            raise InvalidArgument(
                f"tensorflow: cannot load the SavedModel {path} with tags {list(tags)}: "
                f"{first_error_line(err)}"
            ) from None
        return cls(graph, session), meta_graph

    def operation(self, name: str) -> Any:
        try:
            return self.graph.get_operation_by_name(name)
        except (KeyError, ValueError):
            raise InvalidArgument(f"tensorflow: the graph has no operation {name!r}") from None

    def endpoint(self, name: str) -> Endpoint:
        """A tensor name as WasmEdge reads it: ``op``, ``op:N`` (N read like C ``strtol``)."""
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            operation, _, index = name.partition(":")
            endpoint = self._endpoints[name] = Endpoint(self.operation(operation), parse_c_long(index))
        return endpoint

    def run(
        self, feeds: Sequence[tuple[Endpoint, npt.NDArray[Any]]], fetches: Sequence[Endpoint]
    ) -> list[npt.NDArray[Any]]:
        """Run once; any TF failure is errno 4 (busy), as WasmEdge answers."""
        if self.session is None:
            raise InvalidArgument("tensorflow: this session was closed")
        feed_tensors = tuple(endpoint.tensor() for endpoint, _ in feeds)
        fetch_tensors = tuple(endpoint.tensor() for endpoint in fetches)
        if len(set(feed_tensors)) != len(feed_tensors):
            raise Busy("tensorflow: two inputs feed the same tensor")
        for tensor, (_, array) in zip(feed_tensors, feeds, strict=True):
            # session.run would silently convert; the C API WasmEdge uses refuses the mismatch.
            # A string/resource/variant tensor takes no raw bytes at all: the same run failure.
            code = tensor.dtype.as_datatype_enum
            if code not in _FEEDABLE_CODES or array.dtype != numpy_dtype(code):
                raise Busy(f"tensorflow: {tensor.name} is {tensor.dtype.name}, the guest fed {array.dtype}")
        key = (feed_tensors, fetch_tensors)
        try:
            run = self._callables.get(key)
            if run is None:
                # Session::MakeCallable skips session.run's per-call parsing of fetches and feeds
                # (~0.5 ms a run); make_callable with feeds falls back to session.run.
                options = config_pb2.CallableOptions(
                    feed=[t.name for t in feed_tensors], fetch=[t.name for t in fetch_tensors]
                )
                run = self._callables[key] = self.session._make_callable_from_options(options)
            results = run(*[array for _, array in feeds])
        except Busy:
            raise
        except Exception as err:
            raise Busy(f"tensorflow: run failed: {first_error_line(err)}") from None
        return [np.ascontiguousarray(result) for result in results]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            self._callables.clear()


def parse_c_long(text: str) -> int:
    """C ``strtol(text, NULL, 10)``: leading blanks and a sign, digits up to the first non-digit."""
    stripped = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if stripped[:1] in ("+", "-"):
        sign = -1 if stripped[0] == "-" else 1
        stripped = stripped[1:]
    digits = ""
    for char in stripped:
        if not char.isascii() or not char.isdigit():
            break
        digits += char
    return sign * int(digits) if digits else 0


# --------------------------------------------------------------------------- WASI-NN backend


@dataclass(frozen=True)
class TensorSlot:
    """One model input or output of a WASI-NN graph, by position."""

    name: str
    endpoint: Endpoint
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def describe(self) -> str:
        dims = "?" if self.shape is None else format_dims([-1 if d is None else d for d in self.shape])
        return f"{self.name} {dtype_label(self.dtype)}[{dims}]"


def _slot(session: TFSession, name: str) -> TensorSlot:
    endpoint = session.endpoint(name)
    tensor = endpoint.tensor()
    shape = tensor.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorSlot(name, endpoint, np.dtype(tensor.dtype.as_numpy_dtype), dims)


def _default_names(graph: Any) -> tuple[list[str], list[str]]:
    """Placeholders in graph order; outputs: every tensor nobody consumes (the graph's sinks)."""
    operations = graph.get_operations()
    consumed = {tensor.name for op in operations for tensor in op.inputs}
    inputs = [op.name for op in operations if op.type == "Placeholder"]
    outputs = [
        tensor.name
        for op in operations
        if op.type not in _NOT_OUTPUTS
        for tensor in op.outputs
        if tensor.name not in consumed
    ]
    return inputs, outputs


def _signature_names(meta_graph: Any) -> tuple[list[str], list[str]]:
    """The serving signature's tensors, ordered by their signature keys."""
    signatures = meta_graph.signature_def
    usable = sorted(key for key in signatures if not key.startswith("__"))  # not __saved_model_init_op
    if not usable:
        raise InvalidArgument("tensorflow: the SavedModel has no signature")
    key = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in usable else usable[0]
    signature = signatures[key]
    inputs = [signature.inputs[name].name for name in sorted(signature.inputs)]
    outputs = [signature.outputs[name].name for name in sorted(signature.outputs)]
    return inputs, outputs


def _explicit_names(raw: bytes) -> tuple[list[str], list[str]]:
    try:
        names = json.loads(raw.decode("utf-8"))
        inputs, outputs = names["inputs"], names["outputs"]
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            raise TypeError("inputs and outputs must be lists")
        if not all(isinstance(n, str) for n in [*inputs, *outputs]):
            raise TypeError("names must be strings")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgument(
            'tensorflow: builder 2 must be JSON {"inputs": [names], "outputs": [names]}: '
            f"{type(err).__name__}: {err}"
        ) from None
    return list(inputs), list(outputs)


class TensorFlowBackend(Backend):
    """Builder 1: a frozen GraphDef, or a SavedModel directory packed by ``--nn-preload``
    (see :mod:`wasinn.core._archive`); optional builder 2: JSON naming inputs and outputs."""

    encoding = GraphEncoding.TENSORFLOW
    name = "tensorflow"
    config_keys = frozenset({"device", "threads"})

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> TensorFlowGraph:
        if target not in (ExecutionTarget.CPU, ExecutionTarget.AUTO):
            raise InvalidArgument(
                f"tensorflow: only the CPU target is supported, the guest asked for {target.name}"
            )
        if len(builders) not in (1, 2):
            check_builder_count(
                "tensorflow", builders, 1, "a frozen GraphDef or a SavedModel, then optional names"
            )
        model = bytes(builders[0])
        threads = config.threads if config is not None else None
        if is_archive(model):
            with tempfile.TemporaryDirectory(prefix="wasinn-savedmodel-") as directory:
                unpack_directory(model, Path(directory))
                session, meta_graph = TFSession.from_saved_model(directory, SERVE_TAGS, threads)
            inputs, outputs = _signature_names(meta_graph)
        else:
            session = TFSession.from_graph_def(model, threads)
            if not session.graph.get_operations():
                session.close()  # e.g. bytes that parse as a GraphDef of unknown fields only
                raise InvalidArgument(f"tensorflow: the {len(model)} model bytes hold no graph operations")
            inputs, outputs = _default_names(session.graph)
        if len(builders) == 2:
            inputs, outputs = _explicit_names(bytes(builders[1]))
        try:
            slots = ([_slot(session, n) for n in inputs], [_slot(session, n) for n in outputs])
        except Busy as err:
            session.close()
            raise InvalidArgument(str(err)) from None
        except InvalidArgument:
            session.close()
            raise
        return TensorFlowGraph(session, *slots)


class TensorFlowGraph(BackendGraph):
    def __init__(self, session: TFSession, inputs: list[TensorSlot], outputs: list[TensorSlot]) -> None:
        self.session = session
        self.inputs = inputs
        self.outputs = outputs

    def init_execution_context(self) -> TensorFlowContext:
        assert self.session.session is not None  # the core refuses a released graph (Lifecycle)
        return TensorFlowContext(self)

    @property
    def input_names(self) -> Sequence[str]:
        return [slot.name for slot in self.inputs]

    @property
    def output_names(self) -> Sequence[str]:
        return [slot.name for slot in self.outputs]

    def _release(self) -> None:
        self.session.close()


class TensorFlowContext(BackendContext):
    def __init__(self, graph: TensorFlowGraph) -> None:
        self._graph = graph
        self._feeds: dict[int, npt.NDArray[Any]] = {}
        self._results: list[npt.NDArray[Any]] | None = None

    def _set_input(self, index: int, tensor: Tensor) -> None:
        inputs = self._graph.inputs
        check_index("tensorflow", "input", index, len(inputs))
        slot = inputs[index]
        what = f"tensorflow: input {index} ({slot.describe()})"
        if tensor.type.dtype != slot.dtype:
            raise InvalidArgument(f"{what}: the guest sent {tensor.type.label} data")
        if slot.shape is not None and (
            len(tensor.dims) != len(slot.shape)
            or any(
                want is not None and want != got for want, got in zip(slot.shape, tensor.dims, strict=True)
            )
        ):
            raise InvalidArgument(f"{what}: the guest sent dims {format_dims(tensor.dims)}")
        self._feeds[index] = np.array(tensor.array(what))  # guest memory lives for this call only

    def _compute(self) -> None:
        missing = [self._graph.inputs[i].name for i in range(len(self._graph.inputs)) if i not in self._feeds]
        if missing:
            raise InvalidArgument(f"tensorflow: compute before set_input of {', '.join(missing)}")
        feeds = [(self._graph.inputs[i].endpoint, array) for i, array in sorted(self._feeds.items())]
        self._results = None
        self._results = self._graph.session.run(feeds, [slot.endpoint for slot in self._graph.outputs])

    def _get_output(self, index: int) -> npt.NDArray[Any]:
        check_index("tensorflow", "output", index, len(self._graph.outputs))
        assert self._results is not None  # the base class calls this only after a compute
        return self._results[index]

    def _release(self) -> None:
        self._feeds.clear()
        self._results = None
