"""ONNX Runtime (encoding 1) through the nn-run guest, compared with onnxruntime called natively.

WasmEdge only stubs ONNX (errno 1 for everything); wasinn runs it. The models are built here
with ``onnx.helper``; each guest result is compared exactly with a native InferenceSession.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import Probe, make_probe, nn_run, require_module, requires_gpu, requires_no_gpu, stage
from wasinn import Errno, Runtime
from wasinn.core import BackendError, ExecutionTarget, InvalidArgument, Tensor

ONNX_ENCODING = 1
CPU, GPU, TPU, AUTO = 0, 1, 2, 3
F16, F32, F64, U8, I32, I64 = 0, 1, 2, 3, 4, 5
OUT = 64


@pytest.fixture(scope="session", autouse=True)
def onnx_available() -> None:
    require_module("onnxruntime")
    require_module("onnx")


# ------------------------------------------------------------------ models


def save_model(graph: Any, path: Path, opset: int = 17) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by any onnxruntime of the last years
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """f32 [1, 8] → dense 16 → relu → dense 3 → softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    weights = {
        "w1": rng.standard_normal((8, 16)).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32),
        "w2": rng.standard_normal((16, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return save_model(graph, tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture(scope="session")
def embed_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ids i64 [2, 5] and pixels u8 [2, 5] → (table[ids] * pixels / 255: f32 [2, 5, 4], ids + 1: i64)."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(12).standard_normal((10, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
        helper.make_node("Cast", ["pixels"], ["fpixels"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["fpixels", "scale"], ["unit"]),
        helper.make_node("Unsqueeze", ["unit", "axis"], ["column"]),
        helper.make_node("Mul", ["rows", "column"], ["embedded"]),
        helper.make_node("Add", ["ids", "one"], ["next_ids"]),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
            helper.make_tensor_value_info("pixels", TensorProto.UINT8, [2, 5]),
        ],
        [
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [2, 5, 4]),
            helper.make_tensor_value_info("next_ids", TensorProto.INT64, [2, 5]),
        ],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(255, np.float32), "scale"),
            numpy_helper.from_array(np.array([2], np.int64), "axis"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
        ],
    )
    return save_model(graph, tmp_path_factory.mktemp("embed") / "embed.onnx")


@pytest.fixture(scope="session")
def batch_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A symbolic batch: x f16 [batch, 3] → relu(x) * 2 (f16); n i32 [batch] → -n (i32)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["r", "two"], ["y"]),
        helper.make_node("Neg", ["n"], ["m"]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 3]),
            helper.make_tensor_value_info("n", TensorProto.INT32, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3]),
            helper.make_tensor_value_info("m", TensorProto.INT32, ["batch"]),
        ],
        [numpy_helper.from_array(np.array(2, np.float16), "two")],
    )
    return save_model(graph, tmp_path_factory.mktemp("batch") / "batch.onnx")


@pytest.fixture(scope="session")
def broadcast_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a f32 [n] + b f32 [m]: loads and accepts any lengths, fails in compute when n != m."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "broadcast",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m"]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["k"])],
    )
    return save_model(graph, tmp_path_factory.mktemp("broadcast") / "broadcast.onnx")


@pytest.fixture(scope="session")
def odd_types_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x f32 [2] → (x as strings, an output WASI-NN cannot return; x + 1); d f64 [2] → d as f32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["text"], to=TensorProto.STRING),
            helper.make_node("Add", ["x", "one"], ["x1"]),
            helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        ],
        "odd",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("d", TensorProto.DOUBLE, [2]),
        ],
        [
            helper.make_tensor_value_info("text", TensorProto.STRING, [2]),
            helper.make_tensor_value_info("x1", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("df", TensorProto.FLOAT, [2]),
        ],
        [numpy_helper.from_array(np.array(1, np.float32), "one")],
    )
    return save_model(graph, tmp_path_factory.mktemp("odd") / "odd.onnx")


def native(model: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The reference: onnxruntime called directly on the same model and input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {node.name: value for node, value in zip(session.get_inputs(), inputs, strict=True)}
    return [np.asarray(value) for value in session.run(None, feeds)]


# ------------------------------------------------------------------ the guest


def write(directory: Path, name: str, array: np.ndarray) -> str:
    array.tofile(directory / name)
    return name


def read(directory: Path, name: str, like: np.ndarray) -> np.ndarray:
    return np.fromfile(directory / name, like.dtype).reshape(like.shape)


def test_mlp_matches_native(mlp_onnx: Path, tmp_path: Path) -> None:
    (model,) = stage(tmp_path, mlp_onnx)
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    result = nn_run(
        tmp_path,
        "--encoding",
        "onnx",
        "--model",
        model,
        "--input",
        f"0:f32:1x8:{write(tmp_path, 'x.bin', x)}",
        "--output",
        "0:out.bin",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output 0: 12 bytes"]
    (expected,) = native(mlp_onnx, [x])
    np.testing.assert_array_equal(read(tmp_path, "out.bin", expected), expected)


@pytest.mark.parametrize("u8_code", ["u8", "2"], ids=["u8", "legacy-code-2"])
def test_i64_and_u8_inputs_and_two_outputs(embed_onnx: Path, tmp_path: Path, u8_code: str) -> None:
    (model,) = stage(tmp_path, embed_onnx)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 10, (2, 5)).astype(np.int64)
    pixels = rng.integers(0, 256, (2, 5)).astype(np.uint8)
    result = nn_run(
        tmp_path,
        "--encoding",
        "onnx",
        "--model",
        model,
        "--input",
        f"0:i64:2x5:{write(tmp_path, 'ids.bin', ids)}",
        "--input",
        f"1:{u8_code}:2x5:{write(tmp_path, 'px.bin', pixels)}",
        "--output",
        "0:embedded.bin",
        "--output",
        "1:next.bin",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output 0: 160 bytes", "output 1: 80 bytes"]
    embedded, next_ids = native(embed_onnx, [ids, pixels])
    np.testing.assert_array_equal(read(tmp_path, "embedded.bin", embedded), embedded)
    np.testing.assert_array_equal(read(tmp_path, "next.bin", next_ids), next_ids)


@pytest.mark.parametrize("batch", [1, 7])
def test_symbolic_batch_f16_and_i32(batch_onnx: Path, tmp_path: Path, batch: int) -> None:
    (model,) = stage(tmp_path, batch_onnx)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 3)).astype(np.float16)
    n = rng.integers(-1000, 1000, batch).astype(np.int32)
    result = nn_run(
        tmp_path,
        "--encoding",
        "onnx",
        "--model",
        model,
        "--input",
        f"0:f16:{batch}x3:{write(tmp_path, 'x.bin', x)}",
        "--input",
        f"1:i32:{batch}:{write(tmp_path, 'n.bin', n)}",
        "--output",
        "0:y.bin",
        "--output",
        "1:m.bin",
    )
    assert result.returncode == 0, result.stderr
    y, m = native(batch_onnx, [x, n])
    assert y.shape == (batch, 3)
    np.testing.assert_array_equal(read(tmp_path, "y.bin", y), y)
    np.testing.assert_array_equal(read(tmp_path, "m.bin", m), m)


def test_preloaded_by_name_repeated(mlp_onnx: Path, tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    result = nn_run(
        tmp_path,
        "--name",
        "m",
        "--input",
        f"0:f32:1x8:{write(tmp_path, 'x.bin', x)}",
        "--output",
        "0:out.bin",
        "--repeat",
        "3",
        preload=[f"m:onnx:cpu:{mlp_onnx}"],
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native(mlp_onnx, [x])
    np.testing.assert_array_equal(read(tmp_path, "out.bin", expected), expected)


def test_auto_target_runs(mlp_onnx: Path, tmp_path: Path) -> None:
    (model,) = stage(tmp_path, mlp_onnx)
    x = np.ones((1, 8), np.float32)
    result = nn_run(
        tmp_path,
        "--encoding",
        "onnx",
        "--target",
        "auto",
        "--model",
        model,
        "--input",
        f"0:f32:1x8:{write(tmp_path, 'x.bin', x)}",
        "--output",
        "0:out.bin",
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native(mlp_onnx, [x])
    np.testing.assert_allclose(read(tmp_path, "out.bin", expected), expected, rtol=1e-5)


def test_gpu_without_a_gpu_provider_is_a_clear_error(mlp_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    requires_no_gpu(
        "CUDAExecutionProvider" in available or "OpenVINOExecutionProvider" in available,
        "a GPU execution provider in onnxruntime",
    )
    (model,) = stage(tmp_path, mlp_onnx)
    result = nn_run(tmp_path, "--encoding", "onnx", "--target", "gpu", "--model", model)
    assert result.returncode == Errno.INVALID_ARGUMENT
    assert "onnx: target GPU needs the CUDA or OpenVINO execution provider" in result.stderr


def test_gpu_provider_that_falls_back_to_cpu_is_refused(
    mlp_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # onnxruntime only warns and runs on CPU when CUDA cannot start: wasinn must not accept that.
    import onnxruntime as ort

    from wasinn.backends.onnx import ONNXBackend

    requires_no_gpu("CUDAExecutionProvider" in ort.get_available_providers(), "onnxruntime's CUDA provider")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.warns(UserWarning), pytest.raises(InvalidArgument, match="CUDAExecutionProvider failed"):
        ONNXBackend().load([mlp_onnx.read_bytes()], ExecutionTarget.GPU)


def test_gpu_target_uses_cuda_when_present(mlp_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    requires_gpu("CUDAExecutionProvider" in ort.get_available_providers(), "onnxruntime's CUDA provider")
    from wasinn.backends.onnx import ONNXBackend

    graph = ONNXBackend().load([mlp_onnx.read_bytes()], ExecutionTarget.GPU)
    assert graph.session.get_providers()[0] == "CUDAExecutionProvider"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--input", "0:i32:1x8:x.bin"),
            "wasinn: set_input: onnx: input 0 (x): the model expects f32 data, the guest sent i32",
        ),
        (
            ("--input", "0:f32:2x4:x.bin"),
            "wasinn: set_input: onnx: input 0 (x): the model expects dims 1x8, the guest sent 2x4",
        ),
        (
            ("--input", "3:f32:1x8:x.bin"),
            "wasinn: set_input: onnx: input index 3 out of range; the model has 1",
        ),
        (("--output", "1"), "wasinn: get_output: onnx: output index 1 out of range; the model has 1"),
    ],
    ids=["type", "dims", "input-index", "output-index"],
)
def test_errors_reach_the_guest_as_errno_1_and_a_message(
    mlp_onnx: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (model,) = stage(tmp_path, mlp_onnx)
    write(tmp_path, "x.bin", np.zeros(8, np.float32))
    if args[0] == "--output":
        args = ("--input", "0:f32:1x8:x.bin", *args)
    result = nn_run(tmp_path, "--encoding", "onnx", "--model", model, *args)
    assert result.returncode == Errno.INVALID_ARGUMENT, result.stderr
    assert message in result.stderr


def test_garbage_model_message(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"this is not a model")
    result = nn_run(tmp_path, "--encoding", "onnx", "--model", "bad.onnx")
    assert result.returncode == Errno.INVALID_ARGUMENT
    assert "wasinn: load: onnx: cannot parse the model:" in result.stderr


# ------------------------------------------------------------------ exact errno through a WAT probe


def onnx_probe(pages: int = 4) -> Probe:
    return make_probe(Runtime(cache=False), pages=pages)


def f32_input(probe: Probe, dims: Sequence[int], count: int | None = None) -> int:
    values = count if count is not None else int(np.prod(dims))
    return probe.tensor(dims, F32, struct.pack(f"<{values}f", *range(values)))


@pytest.mark.parametrize(
    ("blobs", "target"),
    [
        ([], CPU),
        (["model", b"extra"], CPU),
        ([b"\x08\x07garbage"], CPU),
        ([b""], CPU),
        (["model"], TPU),
    ],
    ids=["no-builders", "two-builders", "garbage", "empty", "tpu"],
)
def test_load_errors(mlp_onnx: Path, blobs: list[Any], target: int) -> None:
    probe = onnx_probe()
    real = [mlp_onnx.read_bytes() if blob == "model" else blob for blob in blobs]
    assert probe.load(ONNX_ENCODING, real, target) == Errno.INVALID_ARGUMENT
    assert probe.instance.nn.live_graphs == 0


def test_load_twice_gives_handles_0_and_1(mlp_onnx: Path) -> None:
    probe = onnx_probe()
    blob = mlp_onnx.read_bytes()
    assert probe.load(ONNX_ENCODING, [blob]) == Errno.SUCCESS
    first = probe.u32(OUT)
    assert probe.load(ONNX_ENCODING, [blob]) == Errno.SUCCESS
    assert (first, probe.u32(OUT)) == (0, 1)


@pytest.mark.parametrize(
    ("index", "dims", "type_word", "nbytes"),
    [
        (1, [1, 8], F32, 32),  # index past the inputs
        (0, [1, 8], I32, 32),  # wrong type, right size
        (0, [1, 8], F64, 64),  # F64 is never an ONNX input type here
        (0, [1, 8], I64, 64),
        (0, [8], F32, 32),  # rank
        (0, [1, 9], F32, 36),  # a static dim
        (0, [1, 8], F32, 31),  # one byte short
        (0, [1, 8], F32, 36),  # too long
        (0, [1, 8], 0x101, 32),  # low byte 1 = F32 is accepted ...
    ],
    ids=["index", "i32", "f64", "i64", "rank", "dim", "short", "long", "type-word-0x101"],
)
def test_set_input_errors(mlp_onnx: Path, index: int, dims: list[int], type_word: int, nbytes: int) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, mlp_onnx)
    record = probe.tensor(dims, type_word, b"\0" * nbytes)
    expected = Errno.SUCCESS if type_word == 0x101 else Errno.INVALID_ARGUMENT
    assert probe.call("set_input", context, index, record) == expected


def test_symbolic_dims_accept_any_size_but_not_another_rank(batch_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, batch_onnx)
    for batch in (1, 3, 64):
        record = probe.tensor([batch, 3], F16, b"\0" * (batch * 6))
        assert probe.call("set_input", context, 0, record) == Errno.SUCCESS
    assert probe.call("set_input", context, 0, probe.tensor([2, 4], F16, b"\0" * 16)) == 1
    assert probe.call("set_input", context, 0, probe.tensor([6], F16, b"\0" * 12)) == 1
    assert probe.call("set_input", context, 1, probe.tensor([2, 1], I32, b"\0" * 8)) == 1
    assert probe.call("set_input", context, 1, probe.tensor([2], F32, b"\0" * 8)) == 1


def test_legacy_u8_code_2_needs_one_byte_per_element(embed_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, embed_onnx)
    assert probe.call("set_input", context, 1, probe.tensor([2, 5], F64, b"\1" * 10)) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, probe.tensor([2, 5], F64, b"\1" * 80)) == 1
    assert probe.call("set_input", context, 0, probe.tensor([2, 5], I32, b"\1" * 40)) == 1


def test_compute_needs_every_input(embed_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, embed_onnx)
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR
    assert probe.call("set_input", context, 1, probe.tensor([2, 5], U8, b"\1" * 10)) == 0
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR  # input 0 still missing
    assert probe.call("set_input", context, 0, probe.tensor([2, 5], I64, b"\0" * 80)) == 0
    assert probe.call("compute", context) == Errno.SUCCESS


def test_get_output_before_compute_and_out_of_range(mlp_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, mlp_onnx)
    buffer = probe.put(b"\0" * 16)
    assert probe.call("get_output", context, 0, buffer, 16, OUT + 8) == Errno.RUNTIME_ERROR
    assert probe.call("get_output", context, 1, buffer, 16, OUT + 8) == Errno.INVALID_ARGUMENT
    assert probe.call("set_input", context, 0, f32_input(probe, [1, 8])) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    assert probe.call("get_output", context, 1, buffer, 16, OUT + 8) == Errno.INVALID_ARGUMENT
    assert probe.call("get_output", context, 0, buffer, 11, OUT + 8) == Errno.TOO_LARGE
    assert probe.u32(OUT + 8) == 12
    assert probe.call("get_output", context, 0, buffer, 16, OUT + 8) == Errno.SUCCESS
    (expected,) = native(mlp_onnx, [np.arange(8, dtype=np.float32).reshape(1, 8)])
    assert probe.read(buffer, 12) == expected.tobytes()


def test_inference_failure_is_errno_5_and_clears_old_outputs(broadcast_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, broadcast_onnx)
    buffer = probe.put(b"\0" * 64)
    assert probe.call("set_input", context, 0, f32_input(probe, [3])) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, f32_input(probe, [3])) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    assert probe.call("get_output", context, 0, buffer, 64, OUT + 8) == Errno.SUCCESS
    assert probe.read(buffer, 12) == struct.pack("<3f", 0, 2, 4)
    assert probe.call("set_input", context, 1, f32_input(probe, [4])) == Errno.SUCCESS  # any length
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR  # 3 + 4 do not broadcast
    assert probe.call("get_output", context, 0, buffer, 64, OUT + 8) == Errno.RUNTIME_ERROR


def test_types_wasi_nn_cannot_carry(odd_types_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, odd_types_onnx)
    assert probe.call("set_input", context, 0, f32_input(probe, [2])) == Errno.SUCCESS
    # An f64 input: code 2 is legacy U8 for wasinn, so no guest can feed it ...
    assert probe.call("set_input", context, 1, probe.tensor([2], F64, b"\0" * 16)) == 1
    assert probe.call("set_input", context, 1, probe.tensor([2], F32, b"\0" * 8)) == 1
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR
    # ... and a string output has no bytes to return, though the other outputs do.
    from wasinn.backends.onnx import ONNXBackend

    backend_context = (
        ONNXBackend().load([odd_types_onnx.read_bytes()], ExecutionTarget.CPU).init_execution_context()
    )
    backend_context._feeds["d"] = np.zeros(2, np.float64)  # what no guest can send
    backend_context.set_input(0, Tensor.from_array(np.array([1.5, -2.0], np.float32)))
    backend_context.compute()
    with pytest.raises(BackendError, match=r"onnx: output 0 \(text\) holds .* which have no byte layout"):
        backend_context.get_output(0)
    np.testing.assert_array_equal(backend_context.get_output(1), [2.5, -1.0])


def test_contexts_are_independent_and_outlive_unload(mlp_onnx: Path) -> None:
    probe = onnx_probe()
    first = probe.context(ONNX_ENCODING, mlp_onnx)
    assert probe.call("init_execution_context", probe.u32(OUT), OUT + 4) == Errno.SUCCESS
    second = probe.u32(OUT + 4)
    ones = probe.tensor([1, 8], F32, struct.pack("<8f", *[1.0] * 8))
    assert probe.call("set_input", first, 0, f32_input(probe, [1, 8])) == Errno.SUCCESS
    assert probe.call("set_input", second, 0, ones) == Errno.SUCCESS
    assert probe.call("compute", first) == Errno.SUCCESS
    assert probe.call("compute", second) == Errno.SUCCESS
    assert probe.call("unload", probe.u32(OUT)) == Errno.SUCCESS
    buffer = probe.put(b"\0" * 12)
    for context, x in ((first, np.arange(8.0)), (second, np.ones(8))):
        assert probe.call("get_output", context, 0, buffer, 12, OUT + 8) == Errno.SUCCESS
        (expected,) = native(mlp_onnx, [x.astype(np.float32).reshape(1, 8)])
        assert probe.read(buffer, 12) == expected.tobytes()
    assert probe.call("compute", first) == Errno.INVALID_ARGUMENT  # the graph was unloaded


def test_set_input_copies_guest_memory_once(mlp_onnx: Path) -> None:
    probe = onnx_probe()
    context = probe.context(ONNX_ENCODING, mlp_onnx)
    record = f32_input(probe, [1, 8])
    assert probe.call("set_input", context, 0, record) == Errno.SUCCESS
    data_ptr = struct.unpack_from("<I", probe.read(record + 12, 4))[0]
    probe.write(data_ptr, b"\xff" * 32)  # the guest reuses its buffer before compute
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(b"\0" * 12)
    assert probe.call("get_output", context, 0, buffer, 12, OUT + 8) == Errno.SUCCESS
    (expected,) = native(mlp_onnx, [np.arange(8, dtype=np.float32).reshape(1, 8)])
    assert probe.read(buffer, 12) == expected.tobytes()


def test_a_model_onnxruntime_cannot_run_is_errno_1() -> None:
    from onnx import TensorProto, helper

    from wasinn.backends.onnx import ONNXBackend

    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"])],
        "unknown-op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(InvalidArgument, match=r"^onnx: cannot create a session on CPUExecutionProvider: "):
        ONNXBackend().load([model.SerializeToString()], ExecutionTarget.CPU)


def test_provider_lists() -> None:
    from wasinn.backends.onnx import providers_for

    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(ExecutionTarget.CPU, cpu_only) == ["CPUExecutionProvider"]
    assert providers_for(ExecutionTarget.AUTO, cpu_only) == ["CPUExecutionProvider"]
    everything = ["OpenVINOExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(ExecutionTarget.AUTO, everything) == [
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers_for(ExecutionTarget.GPU, everything) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(ExecutionTarget.GPU, ["OpenVINOExecutionProvider", "CPUExecutionProvider"]) == [
        ("OpenVINOExecutionProvider", {"device_type": "GPU"}),
        "CPUExecutionProvider",
    ]
    for target, available in ((ExecutionTarget.GPU, cpu_only), (ExecutionTarget.TPU, everything)):
        with pytest.raises(InvalidArgument):
            providers_for(target, available)


def test_openvino_gpu_provider_that_is_not_there_is_refused(
    mlp_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    from wasinn.backends.onnx import ONNXBackend

    requires_no_gpu(
        "OpenVINOExecutionProvider" in ort.get_available_providers(), "onnxruntime's OpenVINO provider"
    )
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.warns(UserWarning), pytest.raises(InvalidArgument, match="OpenVINOExecutionProvider failed"):
        ONNXBackend().load([mlp_onnx.read_bytes()], ExecutionTarget.GPU)
