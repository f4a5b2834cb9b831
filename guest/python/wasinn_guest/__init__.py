"""wasi:nn for Python guests built with ``wasinn build`` (componentize-py, CPython 3.14 in wasm).

Pure Python: there is no numpy inside the guest, so tensors are ``bytes`` and
:func:`floats` / :func:`pack_floats` convert with :mod:`array`. ::

    import wasinn_guest as nn

    def main(args: list[str]) -> int:
        graph = nn.load_by_name("mobilenet")
        outputs = graph.compute({"input": nn.Tensor([1, 3, 224, 224], "FP32", data)})
        print(nn.top(nn.floats(outputs[0]), 5))
        return 0

    Run = nn.command(main)  # the wasi:cli/run export componentize-py looks for

Errors come back as :class:`NNError` (with the WIT ``code`` and the host's message), never
as raw error resources. Data larger than one component call may carry (about 2.79 MB on
wasmtime-py) goes through wasinn's ``wasinn:nn/chunks`` extension automatically.
"""

from __future__ import annotations

import array
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import chunks, errors, graph, inference, tensor

__all__ = [
    "CHUNK_BYTES",
    "Context",
    "Graph",
    "NNError",
    "Output",
    "Tensor",
    "command",
    "floats",
    "load",
    "load_by_name",
    "pack_floats",
    "top",
]

# Well below the per-call limit of about 2,796,201 bytes (shared/spec/wit-wasi-nn.md §9.3).
CHUNK_BYTES = 2 * 1024 * 1024

_TYPECODES = {"FP32": "f", "FP64": "d", "U8": "B", "I32": "i", "I64": "q"}


class NNError(Exception):
    """A ``wasi:nn`` error: ``code`` is the WIT error-code case (``"not-found"``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _raise_nn_error(failure: Err) -> NNError:  # type: ignore[type-arg]
    error: errors.Error = failure.value
    with error:  # dropped at once: the host frees it
        code = error.code().name.lower().replace("_", "-")
        return NNError(code, error.data())


def _call(operation: Callable[[], object]) -> object:
    try:
        return operation()
    except Err as failure:
        raise _raise_nn_error(failure) from None


class Tensor:
    """An input tensor: dimensions, a WIT type name (``"FP32"``, ``"U8"``, …) and raw bytes."""

    def __init__(self, dims: Sequence[int], ty: str, data: bytes) -> None:
        self.dims = [int(d) for d in dims]
        self.ty = ty
        self.data = bytes(data)

    def _resource(self) -> tensor.Tensor:
        kind = tensor.TensorType[self.ty]
        if len(self.data) <= CHUNK_BYTES:
            return tensor.Tensor(self.dims, kind, self.data)
        return _chunked(self.dims, kind, self.data)


def _chunked(dims: list[int], kind: tensor.TensorType, data: bytes) -> tensor.Tensor:
    view = memoryview(data)
    built = tensor.Tensor(dims, kind, bytes(view[:CHUNK_BYTES]))
    for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
        chunks.append(built, bytes(view[start : start + CHUNK_BYTES]))
    return built


class Output:
    """A computed output: ``name``, and ``dims``, ``ty`` (WIT type name) and ``data`` (bytes),
    each asked of the host on first use. The host tensor is dropped with this object."""

    def __init__(self, name: str, resource: tensor.Tensor) -> None:
        self.name = name
        self._resource = resource
        self._dims: list[int] | None = None
        self._ty: str | None = None
        self._data: bytes | None = None

    @property
    def dims(self) -> list[int]:
        if self._dims is None:
            self._dims = list(self._resource.dimensions())
        return self._dims

    @property
    def ty(self) -> str:
        if self._ty is None:
            self._ty = self._resource.ty().name
        return self._ty

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self._resource.data()
        return self._data

    def __repr__(self) -> str:
        return f"Output({self.name!r}, {self.ty}{self.dims}, {len(self.data)} bytes)"


class Context:
    """An execution context; :meth:`compute` takes every input and returns every output."""

    def __init__(self, resource: inference.GraphExecutionContext) -> None:
        self._resource = resource

    def compute(self, inputs: Mapping[str, Tensor] | Sequence[tuple[str, Tensor]]) -> list[Output]:
        named = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
        resources = [(name, value._resource()) for name, value in named]  # moved into the host
        results = _call(lambda: self._resource.compute(resources))
        return [Output(name, resource) for name, resource in results]  # type: ignore[attr-defined]

    def close(self) -> None:
        self._resource.__exit__(None, None, None)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Graph:
    """A loaded model."""

    def __init__(self, resource: graph.Graph) -> None:
        self._resource = resource

    def context(self) -> Context:
        return Context(_call(self._resource.init_execution_context))  # type: ignore[arg-type]

    def compute(self, inputs: Mapping[str, Tensor] | Sequence[tuple[str, Tensor]]) -> list[Output]:
        """One inference in a fresh context."""
        with self.context() as context:
            return context.compute(inputs)

    def close(self) -> None:
        self._resource.__exit__(None, None, None)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(builders: Sequence[bytes], encoding: str, target: str = "cpu") -> Graph:
    """``graph.load``: ``encoding`` and ``target`` are WIT case names (``"openvino"``, ``"cpu"``)."""
    kind = graph.GraphEncoding[encoding.upper()]
    where = graph.ExecutionTarget[target.upper()]
    if sum(len(part) for part in builders) <= CHUNK_BYTES:
        return Graph(_call(lambda: graph.load([bytes(part) for part in builders], kind, where)))  # type: ignore[arg-type]
    parts = [_chunked([len(part)], tensor.TensorType.U8, bytes(part)) for part in builders]
    try:
        return Graph(_call(lambda: chunks.load_parts(parts, kind, where)))  # type: ignore[arg-type]
    finally:
        for part in parts:
            part.__exit__(None, None, None)


def load_by_name(name: str) -> Graph:
    """``graph.load-by-name``: a model the host preloaded (``wasinn run --nn-preload``)."""
    return Graph(_call(lambda: graph.load_by_name(name)))  # type: ignore[arg-type]


def floats(output: Output) -> array.array[float]:
    """An output's elements as a Python array (FP32, FP64, U8, I32 or I64)."""
    typecode = _TYPECODES.get(output.ty)
    if typecode is None:
        raise NNError("invalid-argument", f"output {output.name!r}: no array type for {output.ty}")
    values = array.array(typecode)
    values.frombytes(output.data)
    if sys.byteorder != "little":
        values.byteswap()
    return values  # type: ignore[return-value]


def pack_floats(values: Sequence[float]) -> bytes:
    """FP32 tensor bytes (little-endian) from Python numbers."""
    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def top(values: Sequence[float], count: int = 5) -> list[tuple[int, float]]:
    """The ``count`` largest values as ``(index, value)``, largest first."""
    ranked = sorted(range(len(values)), key=values.__getitem__, reverse=True)[:count]
    return [(index, values[index]) for index in ranked]


def command(main: Callable[[list[str]], int | None]) -> type:
    """The ``Run`` class for ``main(argv) -> exit code``; a failure prints its traceback and
    makes the run fail (exit code 1), instead of trapping the whole component."""

    class Run(exports.Run):
        def run(self) -> None:
            try:
                code = main(list(sys.argv))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except NNError as error:
                print(f"{sys.argv[0] if sys.argv else 'guest'}: {error}", file=sys.stderr)
                code = 1
            except Exception:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            if code:
                raise Err(None)

    return Run
