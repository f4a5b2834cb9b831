"""The component-model wasi:nn front-end: the conformance cases of spec wit-wasi-nn.md §11.

Guests: tests/guests/wit_conformance.py (a componentize-py guest importing all three wasi:nn
versions, built once per session and cached by content) and tests/guests/wit_stale_handles.wat
(a hand-written component). Results are compared with onnxruntime called directly.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime
from wasmtime import component

from conftest import REPO, python_guest, require_module, wasinn_cli
from wasinn import Limits, Runtime
from wasinn.abi import _bytelists, _wasmedge, wit
from wasinn.backends import get_backend, onnx
from wasinn.core import (
    Errno,
    ExecutionTarget,
    GraphEncoding,
    GuestTrap,
    Lifecycle,
    LimitExceeded,
    ModelRegistry,
    ModuleError,
    NNError,
    NNSession,
    Preload,
    Tensor,
    TensorType,
)
from wasinn.host import (
    ComponentCache,
    ComponentInstance,
    is_component,
)
from wasinn.tools.build import NN_VERSIONS

GUESTS = REPO / "tests" / "guests"
SINGLE_INPUT = "x"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def conformance_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return python_guest(GUESTS / "wit_conformance.py", tmp_path_factory.mktemp("guest"), versions=NN_VERSIONS)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``pair``: (a, b) f32[1,4] → (sum = a + b, prod = a * b); ``double``: x → y = 2x."""
    require_module("onnx")
    require_module("onnxruntime")
    import onnx
    from onnx import TensorProto, helper

    directory = tmp_path_factory.mktemp("onnx")

    def save(graph: Any, name: str) -> Path:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = directory / f"{name}.onnx"
        onnx.save(model, path)
        return path

    def f32(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])

    pair = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "pair",
        [f32("a"), f32("b")],
        [f32("sum"), f32("prod")],
    )
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    double = helper.make_graph(
        [helper.make_node("Mul", [SINGLE_INPUT, "two"], ["y"])],
        "double",
        [f32(SINGLE_INPUT)],
        [f32("y")],
        [two],
    )
    return {"pair": save(pair, "pair"), "double": save(double, "double")}


def native(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


@pytest.fixture
def guest_dir(tmp_path: Path, onnx_models: dict[str, Path]) -> Path:
    for model in onnx_models.values():
        shutil.copy(model, tmp_path / model.name)
    return tmp_path


def make_runtime(directory: Path, preload: Sequence[str] = (), limits: Limits | None = None) -> Runtime:
    return Runtime(
        dirs=[f".:{directory}"],
        preload=list(preload),
        stdout=directory / "stdout.txt",
        limits=limits or Limits(),
    )


def preloads(directory: Path) -> list[str]:
    return [f"pair:onnx:cpu:{directory / 'pair.onnx'}", f"double:onnx:cpu:{directory / 'double.onnx'}"]


class Scenario:
    """One run of the conformance guest; the instance stays open for host-side checks."""

    def __init__(
        self,
        wasm: Path,
        directory: Path,
        *args: str,
        preload: Sequence[str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.directory = directory
        runtime = make_runtime(directory, preloads(directory) if preload is None else preload, limits)
        self.instance = runtime.instantiate_guest(wasm, list(args))
        self.code = self.instance.run()
        self.result: Any = json.loads((directory / "stdout.txt").read_text().strip().splitlines()[-1])


def scenario(wasm: Path, directory: Path, *args: str, preload: Sequence[str] | None = None) -> Any:
    ran = Scenario(wasm, directory, *args, preload=preload)
    ran.instance.close()
    assert ran.code == 0
    return ran.result


def floats(hex_data: str) -> list[float]:
    data = bytes.fromhex(hex_data)
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def assert_error(outcome: dict[str, Any], *codes: str) -> str:
    """Case 29: every error result is checked through error.code() and error.data()."""
    assert "error" in outcome, outcome
    code, data = outcome["error"]
    assert code in codes
    assert data  # §3.4: the message reaches the guest
    return str(data)


# ------------------------------------------------------------------ enums and linking (1-3, 35, 43)


def test_enum_indices_match_the_wit_spec(conformance_wasm: Path, guest_dir: Path) -> None:
    """Case 1: the guest's generated enums have the WIT indices the host's tables use."""
    seen = scenario(conformance_wasm, guest_dir, "enums")
    assert list(seen["tensor-type"]) == list(wit.TENSOR_TYPE_CASES)
    assert seen["tensor-type"] == {case: i for i, case in enumerate(wit.TENSOR_TYPE_CASES)}
    assert seen["tensor-type"]["BF16"] == 3 and seen["tensor-type"]["U8"] == 4
    assert seen["graph-encoding"]["GGML"] == 5 and seen["graph-encoding"]["AUTODETECT"] == 6
    assert [c.upper() for c in wit.ENCODING_CASES] == list(seen["graph-encoding"])
    assert seen["execution-target"] == {"CPU": 0, "GPU": 1, "TPU": 2}
    assert [c.upper().replace("-", "_") for c in wit.ERROR_CODE_CASES] == list(seen["error-code"])
    assert seen["error-code"]["INVALID_ARGUMENT"] == 0 and seen["error-code"]["UNKNOWN"] == 8


def test_legacy_and_wit_numbering_reach_different_backends() -> None:
    """Case 43: witx 5 is autodetect and WIT 5 is ggml; witx U8 (3) is WIT U8 (4)."""
    assert _wasmedge.encoding_from_code(5) is GraphEncoding.AUTODETECT
    assert wit.ENCODING_CASES[5] == "ggml" and GraphEncoding["GGML"] is not GraphEncoding.AUTODETECT
    assert _wasmedge.tensor_type_from_code(3) is TensorType.U8
    assert wit.TENSOR_TYPE_CASES[4] == "U8"
    assert wit.error_code_of(Errno.BUSY) == "timeout"
    assert wit.error_code_of(Errno.MISSING_MEMORY) == "unknown"


def test_a_linker_without_the_guests_version_names_the_missing_instance(conformance_wasm: Path) -> None:
    """Case 2: only WASI defined; instantiation fails naming a wasi:nn instance and version."""
    runtime = Runtime()
    engine = runtime.engine
    compiled = runtime.components.load(conformance_wasm)  # compiled once, then cached
    linker = component.Linker(engine)
    linker.add_wasip2()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    with pytest.raises(wasmtime.WasmtimeError, match=r"wasi:nn/\w+@0\.2\.0-rc-2024-"):
        linker.instantiate(store, compiled)


def test_three_versions_coexist_in_one_linker(conformance_wasm: Path, guest_dir: Path) -> None:
    """Cases 3 and 35: one guest binds 10-28, 08-19 and 06-25 at once; aliases resolve."""
    assert scenario(conformance_wasm, guest_dir, "error-constructor") == ["TIMEOUT", "made by the guest"]
    ran = scenario(conformance_wasm, guest_dir, "old-api", "08-19", "double", SINGLE_INPUT, "y")
    assert floats(ran["first"][2]) == [2.0, 4.0, 6.0, 8.0]


# ------------------------------------------------------------------ tensors (4-6, 38)


def test_tensors_round_trip_unchanged(conformance_wasm: Path, guest_dir: Path) -> None:
    """Cases 4-6: every type (BF16 too), odd lengths and rank 0, repeated data(), drops."""
    seen = scenario(conformance_wasm, guest_dir, "tensors")
    for index, case in enumerate(wit.TENSOR_TYPE_CASES):
        assert seen["types"][case] == [[2, 1], case, bytes(range(index + 1)).hex()]
    assert seen["odd"] == [[], "FP32", "010203"]
    assert seen["repeated"] == ["61626364"] * 3
    assert seen["after-drop"] == [[2], "U8", "7879"]


# ------------------------------------------------------------------ load (7-14)


def test_load_by_bytes_and_encoding_errors(
    conformance_wasm: Path, guest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cases 7-11: ok for ONNX bytes; no backend → invalid-encoding; a wrong part count, a
    corrupt model and TPU → runtime-error, as wasmtime reports every backend failure."""
    assert scenario(conformance_wasm, guest_dir, "load", "onnx", "cpu", "pair.onnx") == {"ok": "loaded"}
    # Every WIT encoding has a backend in a full install: take two frameworks away, as in a
    # wasinn installed without the tensorflow and ggml extras.
    import wasinn.host.component

    installed = wasinn.host.component._installed_backends() - {GraphEncoding.TENSORFLOW, GraphEncoding.GGML}
    monkeypatch.setattr(wasinn.host.component, "_installed_backends", lambda: installed)
    for encoding in ("tensorflow", "ggml"):
        outcome = scenario(conformance_wasm, guest_dir, "load", encoding, "cpu", "pair.onnx")
        assert_error(outcome, "invalid-encoding")
    monkeypatch.undo()
    two_parts = scenario(conformance_wasm, guest_dir, "load", "onnx", "cpu", "pair.onnx", "pair.onnx")
    assert "builder" in assert_error(two_parts, "runtime-error")
    (guest_dir / "corrupt.onnx").write_bytes(b"this is not a model" * 10)
    assert_error(
        scenario(conformance_wasm, guest_dir, "load", "onnx", "cpu", "corrupt.onnx"), "runtime-error"
    )
    tpu = scenario(conformance_wasm, guest_dir, "load", "onnx", "tpu", "pair.onnx")
    assert "TPU" in assert_error(tpu, "runtime-error", "unsupported-operation")


def test_openvino_load_with_one_part_is_a_runtime_error(
    conformance_wasm: Path, guest_dir: Path, tiny_ir: tuple[Path, Path]
) -> None:
    """Case 9, OpenVINO's half: the XML without its weights; both parts load."""
    for path in tiny_ir:
        shutil.copy(path, guest_dir / path.name)
    xml, weights = (path.name for path in tiny_ir)
    one_part = scenario(conformance_wasm, guest_dir, "load", "openvino", "cpu", xml)
    assert "2" in assert_error(one_part, "runtime-error")
    assert scenario(conformance_wasm, guest_dir, "load", "openvino", "cpu", xml, weights) == {"ok": "loaded"}


def test_load_by_name(conformance_wasm: Path, guest_dir: Path) -> None:
    """Cases 12-13: a preloaded name loads; an unknown one is not-found naming it."""
    assert scenario(conformance_wasm, guest_dir, "by-name", "pair") == {"ok": "loaded"}
    assert "nope" in assert_error(scenario(conformance_wasm, guest_dir, "by-name", "nope"), "not-found")


def test_graph_and_context_lifetimes(conformance_wasm: Path, guest_dir: Path) -> None:
    """Cases 14-16 and 19: two handles per name, independent contexts, contexts outliving
    their graph, and repeated computes that depend only on the new inputs."""
    seen = scenario(conformance_wasm, guest_dir, "lifetimes", "double", SINGLE_INPUT)
    assert floats(seen["a1"][0][3]) == [2.0, 4.0, 6.0, 8.0]
    assert floats(seen["b"][0][3]) == [-2.0] * 4
    assert floats(seen["a2"][0][3]) == [10.0, 12.0, 14.0, 16.0]
    assert seen["again"] == seen["a1"]


# ------------------------------------------------------------------ compute (17-23)


def test_compute_returns_every_output_by_model_name(
    conformance_wasm: Path, guest_dir: Path, onnx_models: dict[str, Path]
) -> None:
    """Cases 12, 17, 20, 23 and 37: inputs bind by name (or a decimal index); all outputs come back
    under the model's names (a bare list, §9.2), equal to onnxruntime's, whether the graph was
    loaded by name or by bytes."""
    a, b = np.array([[1, 2, 3, 4]], np.float32), np.array([[0.5, -1, 2, 10]], np.float32)
    expected = native(onnx_models["pair"], {"a": a, "b": b})
    by_name = [f"a:1x4:{csv(a)}", f"b:1x4:{csv(b)}"]
    by_index = [f"1:1x4:{csv(b)}", f"0:1x4:{csv(a)}"]  # decimal names are indices (§7)
    for source, inputs in (("pair", by_name), ("pair", by_index), ("pair.onnx", by_name)):
        seen = scenario(conformance_wasm, guest_dir, "compute", source, *inputs)["ok"]
        assert [name for name, *_ in seen] == ["sum", "prod"]
        for name, dims, kind, data in seen:
            assert dims == [1, 4] and kind == "FP32"
            np.testing.assert_array_equal(np.array(floats(data), np.float32).reshape(1, 4), expected[name])


def csv(values: np.ndarray) -> str:
    return ",".join(repr(float(v)) for v in values.ravel())


def test_compute_errors_are_results(conformance_wasm: Path, guest_dir: Path) -> None:
    """Cases 21-22: an unknown name, an unbound input, a wrong type or rank → error result."""
    unknown = scenario(conformance_wasm, guest_dir, "compute", "pair", "a:1x4:1,2,3,4", "zzz:1x4:1,2,3,4")
    assert "zzz" in assert_error(unknown, "invalid-argument", "runtime-error")
    unbound = scenario(conformance_wasm, guest_dir, "compute", "pair", "a:1x4:1,2,3,4")
    assert_error(unbound, "invalid-argument", "runtime-error")
    wrong_type = scenario(conformance_wasm, guest_dir, "typed", "double", SINGLE_INPUT, "U8", "1x4")
    assert_error(wrong_type, "invalid-argument", "runtime-error")
    wrong_rank = scenario(conformance_wasm, guest_dir, "typed", "double", SINGLE_INPUT, "FP32", "4")
    assert_error(wrong_rank, "invalid-argument", "runtime-error")


def test_each_compute_takes_only_its_own_inputs(
    conformance_wasm: Path, guest_dir: Path, onnx_models: dict[str, Path]
) -> None:
    """Cases 19 and 21 on a two-input model and one context: a second compute gives the
    sums of its own inputs; one that leaves an input out is an error, never the new a plus
    the old b (the backends keep inputs between computes for the legacy ABI)."""
    a1, b1 = np.array([[1, 2, 3, 4]], np.float32), np.array([[10, 20, 30, 40]], np.float32)
    a2, b2 = np.array([[-1, 0, 0.5, 7]], np.float32), np.array([[100, 200, 300, 400]], np.float32)
    both1, both2 = [f"a:1x4:{csv(a1)}", f"b:1x4:{csv(b1)}"], [f"a:1x4:{csv(a2)}", f"b:1x4:{csv(b2)}"]
    first, second, partial, again = scenario(
        conformance_wasm, guest_dir, "sequence", "pair", *both1, "--", *both2, "--", f"a:1x4:{csv(a2)}",
        "--", *both1,
    )  # fmt: skip
    for outcome, (a, b) in ((first, (a1, b1)), (second, (a2, b2)), (again, (a1, b1))):
        expected = native(onnx_models["pair"], {"a": a, "b": b})
        for name, _, _, data in outcome["ok"]:
            np.testing.assert_array_equal(np.array(floats(data), np.float32).reshape(1, 4), expected[name])
    assert "input(s) b not given" in assert_error(partial, "runtime-error")


def test_pytorch_binds_inputs_in_list_order(conformance_wasm: Path, guest_dir: Path) -> None:
    """Case 24: a backend without input names takes the list order, whatever the names."""
    require_module("torch")
    import torch

    class Difference(torch.nn.Module):
        def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            return first - second

    torch.jit.save(torch.jit.script(Difference()), str(guest_dir / "difference.pt"))
    preload = [f"difference:pytorch:cpu:{guest_dir / 'difference.pt'}"]
    seen = scenario(
        conformance_wasm,
        guest_dir,
        "compute",
        "difference",
        "zz:1x4:10,20,30,40",
        "aa:1x4:1,2,3,4",
        preload=preload,
    )
    ((name, dims, kind, data),) = seen["ok"]
    assert (name, dims, kind) == ("0", [1, 4], "FP32")
    assert floats(data) == [9.0, 18.0, 27.0, 36.0]
    # Without input names, an input bound by an earlier compute must be bound again (case 21).
    first, partial = scenario(
        conformance_wasm, guest_dir, "sequence", "difference", "x:1x4:5,5,5,5", "y:1x4:1,2,3,4",
        "--", "x:1x4:7,7,7,7", preload=preload,
    )  # fmt: skip
    assert floats(first["ok"][0][3]) == [4.0, 3.0, 2.0, 1.0]
    assert "input(s) 1 not given" in assert_error(partial, "runtime-error")


def test_a_ggml_compute_returns_its_text_and_metadata(
    conformance_wasm: Path, guest_dir: Path, tiny_model: Path
) -> None:
    """A backend that names no outputs declares how many it makes (GGML: the text, then the
    metadata JSON); asking by index until one failed never ended on GGML."""
    config = {"n-predict": 6, "temp": 0, "threads": 1}
    seen = scenario(
        conformance_wasm, guest_dir, "compute", "tiny", f"1:text:{json.dumps(config)}", "0:text:Once upon",
        preload=[f"tiny:ggml:cpu:{tiny_model}"],
    )  # fmt: skip
    (text_name, text_dims, text_kind, text), (meta_name, _, meta_kind, meta) = seen["ok"]
    assert (text_name, meta_name, text_kind, meta_kind) == ("0", "1", "U8", "U8")
    # The same backend through the legacy calls: the same text and counts.
    session = NNSession(get_backend)
    graph = session.load([b"preload:" + bytes(tiny_model)], GraphEncoding.GGML, ExecutionTarget.CPU)
    context = graph.init_execution_context()
    context.set_input(1, Tensor.from_array(np.frombuffer(json.dumps(config).encode(), np.uint8)))
    context.set_input(0, Tensor.from_array(np.frombuffer(b"Once upon", np.uint8)))
    context.compute()
    assert bytes.fromhex(text) == context.get_output(0).tobytes() and text_dims == [len(text) // 2]
    assert json.loads(bytes.fromhex(meta)) == json.loads(context.get_output(1).tobytes())
    assert json.loads(bytes.fromhex(meta))["output_tokens"] == 6
    session.close()


# ------------------------------------------------------------------ ownership (18, 30, 40)


def test_moved_inputs_and_dropped_outputs_leave_no_host_state(
    conformance_wasm: Path, guest_dir: Path
) -> None:
    """Cases 18 and 30: 50 computes; every input is taken by the host, every output dropped
    by the guest runs the destructor: nothing is left in the tables."""
    ran = Scenario(conformance_wasm, guest_dir, "repeat", "double", SINGLE_INPUT, "50")
    try:
        assert ran.result == "done"
        wit_state = ran.instance.wit
        assert (wit_state.tensors, wit_state.graphs, wit_state.contexts, wit_state.errors) == ({}, {}, {}, {})
        assert ran.instance.nn.live_contexts == 0 and ran.instance.nn.live_graphs == 0
    finally:
        ran.instance.close()


def test_destructors_run_once_per_drop(
    conformance_wasm: Path, guest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 30: each guest drop of a graph, context, output tensor or error calls the host
    destructor exactly once, with the rep issued; input tensors move to the host instead."""
    issued: list[tuple[int, int]] = []
    inputs: list[int] = []
    dropped: list[tuple[str, int]] = []
    real_add, real_new = wit.WitNN._add, wit.WitNN._tensor_new

    def add(self: wit.WitNN, table: dict[int, Any], entry: Any, type_id: int) -> Any:
        handle = real_add(self, table, entry, type_id)
        issued.append((type_id, handle.rep))
        return handle

    def tensor_new(self: wit.WitNN, store: Any, dims: list[int], case: str, data: bytes) -> Any:
        handle = real_new(self, store, dims, case, data)
        inputs.append(handle.rep)
        return handle

    monkeypatch.setattr(wit.WitNN, "_add", add)
    monkeypatch.setattr(wit.WitNN, "_tensor_new", tensor_new)
    for kind in ("tensor", "graph", "context", "error"):
        real = getattr(wit.WitNN, f"_drop_{kind}")

        def drop(self: wit.WitNN, store: Any, rep: int, real: Any = real, kind: str = kind) -> None:
            dropped.append((kind, rep))
            real(self, store, rep)

        monkeypatch.setattr(wit.WitNN, f"_drop_{kind}", drop)
    seen = scenario(conformance_wasm, guest_dir, "drops", "double", SINGLE_INPUT)
    assert "no-such-model" in assert_error(seen["error"], "not-found")
    names = {wit.TENSOR: "tensor", wit.GRAPH: "graph", wit.CONTEXT: "context", wit.ERROR: "error"}
    by_kind: dict[str, set[int]] = {kind: set() for kind in names.values()}
    for type_id, rep in issued:
        by_kind[names[type_id]].add(rep)
    outputs = by_kind["tensor"] - set(inputs)
    assert len(by_kind["graph"]) == 3 and len(by_kind["context"]) == 3
    assert len(outputs) == 4 and len(by_kind["error"]) == 1 and len(inputs) == 4
    assert len(dropped) == len(set(dropped))  # once each
    expected = {("tensor", rep) for rep in outputs} | {
        (kind, rep) for kind in ("graph", "context", "error") for rep in by_kind[kind]
    }
    assert set(dropped) == expected  # every one dropped, with its own rep; no input tensor


def test_closing_the_instance_frees_what_the_guest_kept(conformance_wasm: Path, guest_dir: Path) -> None:
    """Case 40: no destructor runs at store close; the host frees the leftovers itself."""
    ran = Scenario(conformance_wasm, guest_dir, "leak", "double")
    wit_state = ran.instance.wit
    assert len(wit_state.graphs) == 1 and len(wit_state.contexts) == 1
    assert len(wit_state.tensors) == 1 and len(wit_state.errors) == 1
    ran.instance.close()
    assert (wit_state.tensors, wit_state.graphs, wit_state.contexts, wit_state.errors) == ({}, {}, {}, {})
    assert ran.instance.nn.live_graphs == 0 and ran.instance.nn.live_contexts == 0


# ------------------------------------------------------------------ traps (31, 36, 41)


@pytest.fixture(scope="session")
def stale_component(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wat") / "wit_stale_handles.wasm"
    path.write_bytes(wasmtime.wat2wasm((GUESTS / "wit_stale_handles.wat").read_text()))
    return path


def call_export(instance: ComponentInstance, name: str) -> Any:
    index = instance.instance.get_export_index(instance.store, name)
    function = instance.instance.get_func(instance.store, index)
    assert function is not None
    result = function(instance.store)
    function.post_return(instance.store)
    return result


@pytest.mark.parametrize(
    ("export", "message"),
    [("stale", "unknown handle index"), ("wrong-type", "used with the wrong type")],
)
def test_stale_and_wrong_type_handles_trap_before_the_host(
    stale_component: Path, export: str, message: str
) -> None:
    """Case 31, through a hand-written component: the canonical ABI traps; no host code runs
    (a host lookup would have raised KeyError instead)."""
    runtime = Runtime(cache=False)
    with runtime.instantiate_guest(stale_component, []) as instance:
        assert call_export(instance, "fresh") == 4  # U8 is case 4 in WIT
    with (
        runtime.instantiate_guest(stale_component, []) as instance,
        pytest.raises(wasmtime.WasmtimeError, match=message),
    ):
        call_export(instance, export)


def test_a_method_that_keeps_its_borrow_traps(stale_component: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 36: wasmtime-py traps when a host method never releases ``self``."""
    monkeypatch.setattr(wit.WitNN, "_tensor_ty", lambda self, store, self_: "U8")
    with (
        Runtime(cache=False).instantiate_guest(stale_component, []) as instance,
        pytest.raises(wasmtime.WasmtimeError, match="borrow handles still remain"),
    ):
        call_export(instance, "fresh")


def test_a_host_exception_comes_back_out_of_the_call(
    stale_component: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 41: a Python exception in a host function traps the guest and is re-raised."""

    def broken(self: wit.WitNN, store: Any, self_: Any) -> str:
        raise ZeroDivisionError("host bug")

    monkeypatch.setattr(wit.WitNN, "_tensor_ty", broken)
    with (
        Runtime(cache=False).instantiate_guest(stale_component, []) as instance,
        pytest.raises(ZeroDivisionError, match="host bug"),
    ):
        call_export(instance, "fresh")


@pytest.mark.parametrize(
    ("method", "operation", "args"),
    [
        ("_compute", "compute", ("compute", "pair", "a:1x4:1,2,3,4", "b:1x4:1,2,3,4")),
        ("_get_output", "compute", ("compute", "pair", "a:1x4:1,2,3,4", "b:1x4:1,2,3,4")),
    ],
)
def test_an_unexpected_exception_is_runtime_error_not_a_trap(
    conformance_wasm: Path,
    guest_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    operation: str,
    args: tuple[str, ...],
) -> None:
    """The host-call policy (abi/_errors.py, docs/architecture.md): an exception out of the
    core or a backend that is no NNError (a framework's, or a wasinn bug) is runtime-error, as
    wasmtime answers every backend failure; what traps is case 31's canonical-ABI handle checks
    and the resource-table lookups before the work (wasmtime's ErrorCode::Trap)."""

    def bug(self: onnx.ONNXContext, *args: Any) -> None:
        raise KeyError("some wasinn bug")

    monkeypatch.setattr(onnx.ONNXContext, method, bug)
    ran = Scenario(conformance_wasm, guest_dir, *args)
    ran.instance.close()
    assert ran.code == 0
    message = assert_error(ran.result, "runtime-error")
    assert message == f"internal error in wasi:nn {operation}: KeyError: 'some wasinn bug'"


def test_an_unexpected_exception_in_load_too(
    conformance_wasm: Path, guest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(self: onnx.ONNXBackend, *args: Any) -> None:
        raise AttributeError("'NoneType' object has no attribute 'run'")

    monkeypatch.setattr(onnx.ONNXBackend, "load", bug)
    outcome = scenario(conformance_wasm, guest_dir, "load", "onnx", "cpu", "pair.onnx")
    message = assert_error(outcome, "runtime-error")
    assert message.startswith("internal error in wasi:nn load: AttributeError")


def test_tensor_caps_apply_as_the_guest_builds(conformance_wasm: Path, guest_dir: Path) -> None:
    """max_tensor_bytes / max_model_bytes bound every host-side tensor when it is made (the
    constructor) or grown (chunks.append): neither has an error result, so it traps as a limit."""
    capped = Limits(max_tensor_bytes=1_000, max_model_bytes=1_200_000)
    fits = Scenario(conformance_wasm, guest_dir, "big", "1200000", limits=capped)
    fits.instance.close()
    assert fits.result == 1_200_000
    with pytest.raises(
        LimitExceeded, match="a tensor of 1,200,001 bytes exceeds the host's limit of 1,200,000"
    ):
        Scenario(conformance_wasm, guest_dir, "big", "1200001", limits=capped)
    # 1 MiB in the constructor, then an append past the cap
    with pytest.raises(LimitExceeded, match="a tensor of 1,500,000 bytes exceeds"):
        Scenario(conformance_wasm, guest_dir, "chunked", "1500000", limits=capped)
    only_tensors = Limits(max_tensor_bytes=1_000)
    with pytest.raises(LimitExceeded, match="limit of 1,000 bytes"):
        Scenario(conformance_wasm, guest_dir, "big", "1001", limits=only_tensors)


def test_a_context_whose_preloaded_model_was_released(onnx_models: dict[str, Path]) -> None:
    """A registry closed under a live context: every backend answers Lifecycle.GRAPH_RELEASED
    (errno 1, a graph not Ready: abi §4.0) from the core; ONNX answered 5, others 1."""
    preload = Preload("pair", GraphEncoding.ONNX, ExecutionTarget.CPU, (str(onnx_models["pair"]),))
    registry = ModelRegistry([preload], get_backend)
    session = NNSession(get_backend, registry)
    graph = session.load_by_name("pair")
    context = graph.init_execution_context()
    x = Tensor.from_array(np.ones((1, 4), np.float32))
    context.set_input("a", x)
    context.set_input("b", x)
    context.compute()
    registry.close()
    for operation in (context.compute, lambda: context.set_input("a", x), graph.init_execution_context):
        with pytest.raises(NNError, match="the graph's model was released") as released:
            operation()
        assert released.value.errno == Lifecycle.GRAPH_RELEASED.errno == Errno.INVALID_ARGUMENT
    session.close()


# ------------------------------------------------------------------ old rcs (32-34)


@pytest.mark.parametrize("version", ["08-19", "06-25"])
def test_set_input_compute_get_output(conformance_wasm: Path, guest_dir: Path, version: str) -> None:
    """Cases 32-33: set-input moves the tensor; get-output gives a new tensor each call;
    get-output before compute, an unknown output or input are error results."""
    seen = scenario(conformance_wasm, guest_dir, "old-api", version, "double", SINGLE_INPUT, "y")
    assert_error(seen["before"], "invalid-argument", "runtime-error")
    assert seen["first"] == seen["second"]
    assert seen["first"][:2] == [[1, 4], "FP32"] and floats(seen["first"][2]) == [2.0, 4.0, 6.0, 8.0]
    assert "no-such-output" in assert_error(seen["unknown"], "invalid-argument", "runtime-error")
    # §6: set-input itself answers invalid-argument for a bad name, and keeps nothing of it.
    assert "no-such-input" in assert_error(seen["bad-input"], "invalid-argument")
    assert seen["after-bad-input"] == seen["first"]


def test_the_06_25_error_constructor_echoes(conformance_wasm: Path, guest_dir: Path) -> None:
    """Case 34: a host [constructor]error (wasmtime traps here)."""
    assert scenario(conformance_wasm, guest_dir, "error-constructor") == ["TIMEOUT", "made by the guest"]


# ------------------------------------------------------------------ sizes (39) and the fast path


def test_one_call_past_the_hostcall_limit_traps_with_a_clear_message(
    conformance_wasm: Path, guest_dir: Path
) -> None:
    """Case 39: 2,796,201 bytes pass in one call; one more traps, naming the limit."""
    assert scenario(conformance_wasm, guest_dir, "big", "2796201") == 2_796_201
    with pytest.raises(GuestTrap, match="2,796,201 bytes"):
        Scenario(conformance_wasm, guest_dir, "big", "2796202", preload=[])


def test_chunks_carry_tensors_and_models_past_the_limit(conformance_wasm: Path, guest_dir: Path) -> None:
    """wasinn:nn/chunks: a 6 MB tensor built in pieces comes back whole (host→guest is not
    capped; case 38: the grown bytearray is returned as bytes); a model loaded from chunked
    tensors works."""
    seen = scenario(conformance_wasm, guest_dir, "chunked", str(6_000_000), "onnx", "pair.onnx")
    piece = bytes(range(256)) * 4096
    whole = (piece * 6)[:6_000_000]
    assert seen["length"] == 6_000_000
    assert seen["head"] == whole[:8].hex() and seen["tail"] == whole[-8:].hex()
    assert seen["load"] == {"ok": "loaded"}


@pytest.fixture
def stock_byte_lists() -> Iterator[None]:
    _bytelists.enable(False)
    yield
    _bytelists.enable(True)


def test_the_stock_byte_list_converter_gives_the_same_bytes(
    conformance_wasm: Path, guest_dir: Path, stock_byte_lists: None
) -> None:
    """§9.4: with the fast path off (wasmtime-py's own converter) the tensors are identical."""
    assert _bytelists.layout_matches()
    seen = scenario(conformance_wasm, guest_dir, "tensors")
    for index, case in enumerate(wit.TENSOR_TYPE_CASES):
        assert seen["types"][case] == [[2, 1], case, bytes(range(index + 1)).hex()]


# ------------------------------------------------------------------ components on disk (42)


def test_components_are_detected_and_cached_by_content(conformance_wasm: Path, tmp_path: Path) -> None:
    """Case 42: a compiled component is serialized under its content hash and deserialized
    next time; a rebuild under the same file name does not reuse it (a cache keyed by file
    name would go stale)."""
    assert is_component(conformance_wasm)
    assert not is_component(REPO / "pyproject.toml")
    engine = Runtime(cache=False).engine
    cache = ComponentCache(engine, tmp_path / "cache")
    cache.load(conformance_wasm)
    (cached,) = (tmp_path / "cache").glob("*.cwasm")
    assert isinstance(cache.load(conformance_wasm), component.Component)
    assert list((tmp_path / "cache").glob("*.cwasm")) == [cached]
    same_name = tmp_path / "guest.wasm"
    shutil.copy(conformance_wasm, same_name)
    cache.load(same_name)
    assert list((tmp_path / "cache").glob("*.cwasm")) == [cached]  # same bytes, same entry
    same_name.write_bytes(wasmtime.wat2wasm((GUESTS / "wit_stale_handles.wat").read_text()))
    rebuilt = cache.load(same_name)
    assert len(list((tmp_path / "cache").glob("*.cwasm"))) == 2
    with ComponentInstance(Runtime(cache=False), rebuilt, [str(same_name)]) as instance:
        assert call_export(instance, "fresh") == 4  # the new component, not the cached old one


def test_a_broken_component_is_a_module_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm\x0d\x00\x01\x00garbage")
    with pytest.raises(ModuleError, match="not a valid WebAssembly component"):
        ComponentCache(Runtime(cache=False).engine, None).load(broken)


def test_enum_tables_translate_by_name() -> None:
    assert wit._ENCODINGS["autodetect"] is GraphEncoding.AUTODETECT
    assert wit._TARGETS["tpu"] is ExecutionTarget.TPU
    assert wit._TENSOR_TYPES["BF16"] is TensorType.BF16


def test_missing_componentize_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from wasinn.core import ConfigError
    from wasinn.tools import build as guest_build

    def absent(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(guest_build.metadata, "version", absent)
    with pytest.raises(ConfigError, match="componentize-py"):
        guest_build.build_key(Path("app.py"), [], NN_VERSIONS[:1])


# ------------------------------------------------------------------ wasinn run


def test_wasinn_run_gives_a_component_its_dirs_env_and_models(
    conformance_wasm: Path, guest_dir: Path
) -> None:
    """The CLI tells a component from a module by its header and runs it as a wasi:cli command."""
    ran = wasinn_cli(
        "run", "--dir", ".:.", "--env", "GREETING=hello", str(conformance_wasm), "environment", "GREETING",
        "pair.onnx", cwd=guest_dir,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"env": "hello", "size": (guest_dir / "pair.onnx").stat().st_size}
    named = wasinn_cli(
        "run",
        f"--nn-preload=pair:onnx:cpu:{guest_dir / 'pair.onnx'}",
        str(conformance_wasm),
        "by-name",
        "pair",
    )
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout) == {"ok": "loaded"}
    for status, code in (("0", 0), ("3", 1)):  # wasi:cli 0.2.0's exit carries only ok or err
        exited = wasinn_cli("run", str(conformance_wasm), "exit", status)
        assert exited.returncode == code, exited.stderr
    trapped = wasinn_cli("run", str(conformance_wasm), "big", "3000000")
    assert trapped.returncode == 134 and "2,796,201 bytes" in trapped.stderr


def test_closed_instances_release_their_host_functions(stale_component: Path) -> None:
    """wasmtime-py keeps host functions in a global table until their store is freed; an
    instance reachable from them (a bound method in its session) would never be freed."""
    import gc

    from wasmtime.component import _linker

    runtime = Runtime(cache=False)

    def live_after(count: int) -> int:
        for _ in range(count):
            with runtime.instantiate_guest(stale_component, []) as instance:
                call_export(instance, "fresh")
        gc.collect()
        return len(_linker.FUNCTIONS.handles)

    baseline = live_after(2)
    assert live_after(20) <= baseline


def test_limits_stop_a_component(conformance_wasm: Path) -> None:
    """--gas-limit and --time-limit stop a component as they stop a module (exit 124)."""
    gas = wasinn_cli("run", "--gas-limit", "100000", str(conformance_wasm), "enums")
    assert gas.returncode == 124 and "gas limit of 100000 exceeded" in gas.stderr
    slow = wasinn_cli("run", "--time-limit", "100", str(conformance_wasm), "chunked", "200000000")
    assert slow.returncode == 124 and "time limit of 100 ms exceeded" in slow.stderr
