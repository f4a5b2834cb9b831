"""Autodetect (encoding 5): the model format is recognised from the builders' bytes.

WasmEdge answers errno 2 for encoding 5; wasinn detects OpenVINO IR, TFLite, GGUF,
TorchScript and ONNX and loads the model with that backend. Each format is checked on real
bytes its own framework wrote; anything else must be errno 2, never a crash.
"""

from __future__ import annotations

import contextlib
import io
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import missing, nn_run, require_module, stage
from wasinn.backends.autodetect import AutodetectBackend, detect_encoding
from wasinn.core import (
    Backend,
    BackendContext,
    BackendGraph,
    Errno,
    ExecutionTarget,
    GraphEncoding,
    InvalidEncoding,
    ModelConfig,
)

# ------------------------------------------------------------------ real bytes of each format


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = relu(x) * 3, x f32 [1, 4]."""
    require_module("onnx")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "k"], ["y"])],
        "relu3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(3, np.float32), "k")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="wasinn-tests"
    )
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "relu3.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def torchscript_bytes() -> bytes:
    require_module("torch")
    import torch

    class Scale(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still shipped
        torch.jit.save(torch.jit.script(Scale()), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tflite_bytes(shared_data: Path) -> bytes:
    models = sorted((shared_data / "birds-v1").glob("*.tflite"))
    if not models:
        missing(f"no .tflite model in {shared_data / 'birds-v1'}")
    return models[0].read_bytes()


def test_openvino_ir(tiny_ir: tuple[Path, Path]) -> None:
    xml, weights = tiny_ir
    assert detect_encoding([xml.read_bytes(), weights.read_bytes()]) is GraphEncoding.OPENVINO


def test_openvino_ir_after_bom_declaration_and_comment(tiny_ir: tuple[Path, Path]) -> None:
    xml = tiny_ir[0].read_bytes()
    body = xml[xml.index(b"<net") :]
    dressed = b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n<!-- exported -->\n' + body
    assert detect_encoding([dressed, b""]) is GraphEncoding.OPENVINO


def test_onnx(onnx_model: Path) -> None:
    assert detect_encoding([onnx_model.read_bytes()]) is GraphEncoding.ONNX


def test_onnx_exported_by_torch() -> None:
    # Another writer than onnx.helper: torch's TorchScript-based exporter.
    require_module("torch")
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), buffer, dynamo=False, input_names=["image"])
    assert detect_encoding([buffer.getvalue()]) is GraphEncoding.ONNX


def test_torchscript(torchscript_bytes: bytes) -> None:
    assert detect_encoding([torchscript_bytes]) is GraphEncoding.PYTORCH


def test_tflite(tflite_bytes: bytes) -> None:
    assert detect_encoding([tflite_bytes]) is GraphEncoding.TENSORFLOWLITE


def test_gguf_magic() -> None:
    assert detect_encoding([b"GGUF\x03\x00\x00\x00" + b"\0" * 16]) is GraphEncoding.GGML


def test_only_builder_0_decides(onnx_model: Path) -> None:
    # A config or weights blob after the model does not change the answer.
    assert detect_encoding([onnx_model.read_bytes(), b"<net/>"]) is GraphEncoding.ONNX


# ------------------------------------------------------------------ what is not a model


def zip_of(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    return buffer.getvalue()


NOT_MODELS = {
    "empty": b"",
    "text": b"hello, world\n",
    "random": np.random.default_rng(5).integers(0, 256, 4096).astype(np.uint8).tobytes(),
    "other-xml-root": b'<?xml version="1.0"?><network version="11"></network>',
    "broken-xml": b"<net version=",
    "html": b"<!DOCTYPE html><html><body>net</body></html>",
    "zip-without-pickles": zip_of("readme.txt", "weights/w.bin"),
    "truncated-zip": zip_of("archive/data.pkl")[:30],
    "short-tflite-header": b"\x1c\0\0\0TFL",
    "protobuf-without-graph": b"\x08\x08\x12\x04test",
    "protobuf-group": b"\x08\x08\x3b\x00",
}


@pytest.mark.parametrize("blob", NOT_MODELS.values(), ids=NOT_MODELS.keys())
def test_unrecognised_bytes_are_errno_2(blob: bytes) -> None:
    with pytest.raises(InvalidEncoding, match=r"autodetect: cannot recognise the model format") as caught:
        detect_encoding([blob])
    assert caught.value.errno == Errno.INVALID_ENCODING
    assert "tried OpenVINO IR" in str(caught.value)


def test_no_builders_is_errno_2() -> None:
    with pytest.raises(InvalidEncoding, match="no builders"):
        detect_encoding([])


def test_damaged_onnx_is_not_onnx(onnx_model: Path) -> None:
    blob = onnx_model.read_bytes()
    for damaged in (blob[: len(blob) // 2], blob[:-1], blob + b"\x00", blob + b"\x07"):
        with pytest.raises(InvalidEncoding):
            detect_encoding([damaged])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_an_encoding_or_errno_2(blob: bytes) -> None:
    with contextlib.suppress(InvalidEncoding):
        assert isinstance(detect_encoding([blob]), GraphEncoding)


@pytest.fixture(scope="session")
def onnx_model_ends(onnx_model: Path) -> frozenset[int]:
    """The lengths at which a prefix of the model is itself a model: after each top-level field,
    once ``ir_version`` and ``graph`` are in. Protobuf writes fields in field-number order, so
    the model with only its first k fields, serialised by protobuf, is a prefix of the file."""
    import onnx

    model, blob = onnx.load(onnx_model), onnx_model.read_bytes()
    fields = [descriptor for descriptor, _ in model.ListFields()]
    assert len(model.opset_import) == 1  # no repeated field with several records, ends inside it
    ends = set()
    for count in range(1, len(fields) + 1):
        partial = onnx.ModelProto()
        partial.CopyFrom(model)
        for later in fields[count:]:
            partial.ClearField(later.name)
        head = partial.SerializeToString()
        assert blob.startswith(head)
        if partial.ir_version and partial.HasField("graph"):
            ends.add(len(head))
    assert max(ends) == len(blob) and len(ends) == 2  # after graph, and after opset_import
    return frozenset(ends)


def test_a_prefix_of_a_model_is_onnx_only_at_a_field_end(
    onnx_model: Path, onnx_model_ends: frozenset[int]
) -> None:
    blob = onnx_model.read_bytes()
    detected = set()
    for cut in range(len(blob) + 1):
        with contextlib.suppress(InvalidEncoding):
            assert detect_encoding([blob[:cut]]) is GraphEncoding.ONNX
            detected.add(cut)
    assert detected == onnx_model_ends


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=4096), st.binary(min_size=1, max_size=8))
def test_prefixes_and_tails_of_a_model_are_onnx_or_errno_2(
    onnx_model: Path, onnx_model_ends: frozenset[int], cut: int, tail: bytes
) -> None:
    blob = onnx_model.read_bytes()
    prefix = blob[:cut]
    if len(prefix) in onnx_model_ends:
        assert detect_encoding([prefix]) is GraphEncoding.ONNX
    else:  # cut inside a field, or before the graph
        with pytest.raises(InvalidEncoding):
            detect_encoding([prefix])
    # Past the first 8 bytes, where every magic number sits, a tail can only make another
    # ONNX model (it may complete a field or add one) or no model.
    if cut >= 8:
        with contextlib.suppress(InvalidEncoding):
            assert detect_encoding([prefix + tail]) is GraphEncoding.ONNX


# ------------------------------------------------------------------ dispatch


class RecordingGraph(BackendGraph):
    def init_execution_context(self) -> BackendContext:
        raise AssertionError("autodetect only loads; the detected backend runs the graph")


class RecordingBackend(Backend):
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[bytes, ...], ExecutionTarget]] = []

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> BackendGraph:
        self.calls.append((tuple(builders), target))
        return RecordingGraph()


def test_load_hands_the_same_builders_and_target_to_the_detected_backend() -> None:
    backends: dict[GraphEncoding, RecordingBackend] = {}

    def resolve(encoding: GraphEncoding) -> Backend:
        return backends.setdefault(encoding, RecordingBackend())

    builders = [b"<net name='m' version='11'><layers/></net>", b"weights"]
    graph = AutodetectBackend(resolve).load(builders, ExecutionTarget.AUTO)
    assert isinstance(graph, RecordingGraph)
    assert list(backends) == [GraphEncoding.OPENVINO]
    assert backends[GraphEncoding.OPENVINO].calls == [(tuple(builders), ExecutionTarget.AUTO)]
    with pytest.raises(InvalidEncoding):
        AutodetectBackend(resolve).load([b"nothing"], ExecutionTarget.CPU)


def test_load_through_the_registry_runs_the_onnx_model(onnx_model: Path) -> None:
    require_module("onnxruntime")
    from wasinn.core import Tensor

    graph = AutodetectBackend().load([onnx_model.read_bytes()], ExecutionTarget.CPU)
    context = graph.init_execution_context()
    context.set_input(0, Tensor.from_array(np.array([[-1, 0.5, 2, -3]], np.float32)))
    context.compute()
    np.testing.assert_array_equal(context.get_output(0), [[0, 1.5, 6, 0]])


# ------------------------------------------------------------------ through the nn-run guest


def run_both(tmp_path: Path, encoding: str, models: list[str], dims: str) -> tuple[bytes, bytes]:
    """Output 0 with the explicit encoding and with autodetect; both runs must succeed."""
    outputs = []
    for name in (encoding, "autodetect"):
        arguments = [arg for model in models for arg in ("--model", model)]
        result = nn_run(
            tmp_path,
            "--encoding",
            name,
            *arguments,
            "--input",
            f"0:f32:{dims}:in.bin",
            "--output",
            f"0:{name}.bin",
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        outputs.append((tmp_path / f"{name}.bin").read_bytes())
    return outputs[0], outputs[1]


def test_guest_autodetect_openvino_ir(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    models = stage(tmp_path, *tiny_ir)
    np.array([[1.0, -2.0, 0.25, 3.0]], np.float32).tofile(tmp_path / "in.bin")
    explicit, detected = run_both(tmp_path, "openvino", models, "1x4")
    assert len(explicit) == 16
    assert detected == explicit


def test_guest_autodetect_onnx(onnx_model: Path, tmp_path: Path) -> None:
    require_module("onnxruntime")
    models = stage(tmp_path, onnx_model)
    np.array([[1.0, -2.0, 0.25, 3.0]], np.float32).tofile(tmp_path / "in.bin")
    explicit, detected = run_both(tmp_path, "onnx", models, "1x4")
    assert detected == explicit == np.array([3.0, 0.0, 0.75, 9.0], np.float32).tobytes()


def test_guest_autodetect_preloaded_by_name(onnx_model: Path, tmp_path: Path) -> None:
    require_module("onnxruntime")
    np.ones((1, 4), np.float32).tofile(tmp_path / "in.bin")
    result = nn_run(
        tmp_path,
        "--name",
        "a",
        "--input",
        "0:f32:1x4:in.bin",
        "--output",
        "0:out.bin",
        preload=[f"a:autodetect:cpu:{onnx_model}"],
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.bin").read_bytes() == np.full(4, 3.0, np.float32).tobytes()


def test_guest_autodetect_garbage_is_errno_2(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"definitely not a model")
    result = nn_run(tmp_path, "--encoding", "autodetect", "--model", "junk.bin")
    assert result.returncode == Errno.INVALID_ENCODING, result.stderr
    assert "autodetect: cannot recognise the model format of builder 0 (22 bytes)" in result.stderr
