"""The core without wasm: backends through the ABCs, name addressing, lifecycle guards, and
preloaded models shared by the instances of one runtime."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import context_for, graph_for, make_probe, native_infer
from wasinn import Errno, Runtime
from wasinn.backends import get_backend
from wasinn.core import (
    BackendContext,
    BackendGraph,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    Lifecycle,
    ModelRegistry,
    NNError,
    NNSession,
    Preload,
    Tensor,
)

pytestmark = pytest.mark.usefixtures("openvino_available")

X = np.array([[1.0, 2.0, -3.0, 0.25]], dtype=np.float32)


def test_the_backend_interface_is_abstract() -> None:
    for abc in (BackendGraph, BackendContext):
        with pytest.raises(TypeError, match="abstract"):
            abc()  # type: ignore[abstract]


def test_inputs_and_outputs_by_index_or_name_agree(two_input_ir: tuple[Path, Path]) -> None:
    xml, weights = two_input_ir
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1, -1, 2], [0, 5, -7]], dtype=np.int32)
    expected = native_infer(xml, [a, b])
    graph = graph_for(GraphEncoding.OPENVINO, xml, weights)
    assert graph.input_names == ["a", "b"]
    assert len(graph.output_names) == 2
    by_index, by_name = graph.init_execution_context(), graph.init_execution_context()
    by_index.set_input(0, Tensor.from_array(a))
    by_index.set_input(1, Tensor.from_array(b))
    by_name.set_input("b", Tensor.from_array(b))
    by_name.set_input("a", Tensor.from_array(a))
    by_index.compute()
    by_name.compute()
    for position, name in enumerate(graph.output_names):
        np.testing.assert_array_equal(by_index.get_output(position), expected[position])
        np.testing.assert_array_equal(by_name.get_output(name), expected[position])
        np.testing.assert_array_equal(by_name.get_output(str(position)), expected[position])


def test_compute_with_io_returns_every_output_in_model_order(two_input_ir: tuple[Path, Path]) -> None:
    xml, weights = two_input_ir
    a = np.ones((2, 3), dtype=np.float32)
    b = np.full((2, 3), 4, dtype=np.int32)
    graph = graph_for(GraphEncoding.OPENVINO, xml, weights)
    outputs = graph.init_execution_context().compute_with_io(
        [("a", Tensor.from_array(a)), ("b", Tensor.from_array(b))]
    )
    assert [name for name, _ in outputs] == graph.output_names
    for (_, got), want in zip(outputs, native_infer(xml, [a, b]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_unknown_name_lists_the_model_names(two_input_ir: tuple[Path, Path]) -> None:
    xml, weights = two_input_ir
    context = context_for(GraphEncoding.OPENVINO, xml, weights)
    with pytest.raises(InvalidArgument, match=r"no input named 'c' \(inputs: a, b\)"):
        context.set_input("c", Tensor.from_array(np.zeros((2, 3), np.float32)))


def test_lifecycle_guards_answer_the_table_errno(tiny_ir: tuple[Path, Path]) -> None:
    xml, weights = tiny_ir
    graph = graph_for(GraphEncoding.OPENVINO, xml, weights)
    context = graph.init_execution_context()
    with pytest.raises(NNError) as before:
        context.get_output(0)
    assert before.value.errno == Lifecycle.OUTPUT_BEFORE_COMPUTE.errno == Errno.RUNTIME_ERROR
    context.set_input(0, Tensor.from_array(X))
    context.compute()
    graph.detach()  # the legacy unload: outputs drain, nothing else runs
    np.testing.assert_array_equal(context.get_output(0), native_infer(xml, [X])[0])
    for operation in (context.compute, lambda: context.set_input(0, Tensor.from_array(X))):
        with pytest.raises(NNError) as detached:
            operation()
        assert detached.value.errno == Lifecycle.GRAPH_DETACHED.errno
    context.close()
    context.close()  # idempotent
    with pytest.raises(NNError) as released:
        context.get_output(0)
    assert released.value.errno == Lifecycle.CONTEXT_RELEASED.errno
    backend_context = graph.backend_graph.init_execution_context()
    backend_context.release()
    with pytest.raises(NNError, match="finalized"):
        backend_context.compute()


def test_a_released_graph_keeps_serving_its_contexts(tiny_ir: tuple[Path, Path]) -> None:
    """A WIT drop of the graph, unlike a legacy unload, leaves its contexts fully usable."""
    xml, weights = tiny_ir
    session = NNSession(get_backend)
    graph = session.load(
        [xml.read_bytes(), weights.read_bytes()], GraphEncoding.OPENVINO, ExecutionTarget.CPU
    )
    context = graph.init_execution_context()
    graph.release()
    assert session.live_graphs == 0
    context.set_input(0, Tensor.from_array(X))
    context.compute()
    np.testing.assert_array_equal(context.get_output(0), native_infer(xml, [X])[0])
    context.close()
    assert session.live_contexts == 0


def test_preloaded_models_load_once_per_runtime(
    tiny_ir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    xml, weights = tiny_ir
    backend = get_backend(GraphEncoding.OPENVINO)
    loads: list[int] = []
    real_load = backend.load

    def counting_load(*args: object, **kwargs: object) -> BackendGraph:
        loads.append(1)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "load", counting_load)
    with Runtime(cache=False, preload=[f"m:openvino:cpu:{xml}:{weights}"]) as runtime:
        handles = []
        probes = [make_probe(runtime) for _ in range(3)]
        for probe in probes:
            name, length = probe.string("m")
            assert probe.call("load_by_name", name, length, 0) == Errno.SUCCESS
            handles.append(probe.instance._abi._graphs.get(probe.u32(0)))
        assert len(loads) == 1
        assert len({id(graph.backend_graph) for graph in handles}) == 1
        for probe in probes:
            probe.instance.close()


def test_instances_in_threads_share_one_preloaded_graph(tiny_ir: tuple[Path, Path]) -> None:
    xml, weights = tiny_ir
    expected = native_infer(xml, [X])[0]
    registry = ModelRegistry(
        [Preload("m", GraphEncoding.OPENVINO, ExecutionTarget.CPU, (str(xml), str(weights)))], get_backend
    )
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def worker() -> None:
        context = NNSession(get_backend, registry).load_by_name("m").init_execution_context()
        for _ in range(20):
            context.set_input(0, Tensor.from_array(X))
            context.compute()
            with lock:
                results.append(np.array(context.get_output(0)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80
    for result in results:
        np.testing.assert_array_equal(result, expected)
    registry.close()


def test_a_config_is_its_own_shared_graph(tiny_ir: tuple[Path, Path]) -> None:
    xml, weights = tiny_ir
    registry = ModelRegistry(
        [Preload("m", GraphEncoding.OPENVINO, ExecutionTarget.CPU, (str(xml), str(weights)))], get_backend
    )
    plain, threaded = registry.get("m"), registry.get("m", b'{"threads": 1}')
    assert plain is registry.get("m") and threaded is registry.get("m", b'{"threads": 1}')
    assert plain.graph is not threaded.graph
    registry.close()
