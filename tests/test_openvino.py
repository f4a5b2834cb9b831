"""OpenVINO through real guests (C nn-run, Rust road-segmentation) compared with native OpenVINO."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import guest_wasm, native_infer, nn_run, requires_no_gpu, run_guest, stage

pytestmark = pytest.mark.usefixtures("openvino_available")


def test_tiny_model_matches_native(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    xml, weights = stage(tmp_path, *tiny_ir)
    data = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    data.tofile(tmp_path / "in.bin")
    result = nn_run(
        tmp_path, "--model", xml, "--model", weights, "--input", "0:f32:1x4:in.bin", "--output", "0:out.bin"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output 0: 16 bytes"]
    (expected,) = native_infer(tiny_ir[0], [data])
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out.bin", np.float32), expected.reshape(-1))


def test_cnn_nchw_and_nhwc_inputs_match_native(conv_ir: tuple[Path, Path], tmp_path: Path) -> None:
    xml, weights = stage(tmp_path, *conv_ir)
    image = np.random.default_rng(2).standard_normal((1, 3, 8, 12)).astype(np.float32)
    image.tofile(tmp_path / "nchw.bin")
    image.transpose(0, 2, 3, 1).tofile(tmp_path / "nhwc.bin")
    (expected,) = native_infer(conv_ir[0], [image])
    for dims, path in (("1x3x8x12", "nchw.bin"), ("1x8x12x3", "nhwc.bin")):
        result = nn_run(
            tmp_path,
            "--model",
            xml,
            "--model",
            weights,
            "--input",
            f"0:f32:{dims}:{path}",
            "--output",
            "0:out.bin",
        )
        assert result.returncode == 0, result.stderr
        got = np.fromfile(tmp_path / "out.bin", np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=dims)


def test_two_inputs_of_different_types_and_two_outputs(
    two_input_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    xml, weights = stage(tmp_path, *two_input_ir)
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    b = np.arange(6, dtype=np.int32).reshape(2, 3) * -3
    a.tofile(tmp_path / "a.bin")
    b.tofile(tmp_path / "b.bin")
    result = nn_run(
        tmp_path,
        "--model",
        xml,
        "--model",
        weights,
        "--input",
        "0:f32:2x3:a.bin",
        "--input",
        "1:i32:2x3:b.bin",
        "--output",
        "0:sum.bin",
        "--output",
        "1:double.bin",
    )
    assert result.returncode == 0, result.stderr
    total, double = native_infer(two_input_ir[0], [a, b])
    np.testing.assert_array_equal(np.fromfile(tmp_path / "sum.bin", np.float32), total.reshape(-1))
    np.testing.assert_array_equal(np.fromfile(tmp_path / "double.bin", np.float32), double.reshape(-1))


def test_wrong_input_type_reaches_the_guest_as_errno_and_a_message(
    two_input_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    xml, weights = stage(tmp_path, *two_input_ir)
    np.zeros(6, np.float32).tofile(tmp_path / "b.bin")
    result = nn_run(tmp_path, "--model", xml, "--model", weights, "--input", "1:f32:2x3:b.bin")
    assert result.returncode == 1  # nn-run exits with the errno: invalid_argument
    assert (
        "wasinn: set_input: openvino: input 1 (b): the model expects i32 data, the guest sent f32"
        in result.stderr
    )


def test_preloaded_model_by_name_repeated(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    np.ones((1, 4), np.float32).tofile(tmp_path / "in.bin")
    xml, weights = tiny_ir
    result = nn_run(
        tmp_path,
        "--name",
        "tiny",
        "--input",
        "0:f32:1x4:in.bin",
        "--output",
        "0:out.bin",
        "--repeat",
        "3",
        preload=(f"tiny:OpenVINO:CPU:{xml}:{weights}",),
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native_infer(xml, [np.ones((1, 4), np.float32)])
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out.bin", np.float32), expected.reshape(-1))


def test_auto_target_runs_where_wasmedge_refuses(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    xml, weights = stage(tmp_path, *tiny_ir)
    np.ones((1, 4), np.float32).tofile(tmp_path / "in.bin")
    result = nn_run(
        tmp_path, "--target", "auto", "--model", xml, "--model", weights, "--input", "0:f32:1x4:in.bin"
    )
    assert result.returncode == 0, result.stderr


def test_gpu_target_without_a_gpu_is_a_clear_error_not_a_fallback(
    tiny_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    import openvino as ov

    requires_no_gpu(
        any(device.startswith("GPU") for device in ov.Core().available_devices), "an OpenVINO GPU device"
    )
    xml, weights = stage(tmp_path, *tiny_ir)
    result = nn_run(tmp_path, "--target", "gpu", "--model", xml, "--model", weights)
    assert result.returncode == 5
    assert "needs the GPU device, which this machine does not have" in result.stderr


# ------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def road_model(shared_data: Path) -> tuple[Path, Path]:
    folder = shared_data / "road-segmentation-adas-0001"
    return folder / "road-segmentation-adas-0001.xml", folder / "road-segmentation-adas-0001.bin"


def test_road_segmentation_guest_matches_native(road_model: tuple[Path, Path], tmp_path: Path) -> None:
    xml, weights = stage(tmp_path, *road_model)
    # The tensor file is HWC, as im2tensor writes it; the guest labels it NHWC and the host
    # converts the layout, so native OpenVINO gets the same pixels as NCHW planes.
    image = np.random.default_rng(3).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    image.tofile(tmp_path / "input.tensor")
    started = time.perf_counter()
    result = run_guest(guest_wasm("road-segmentation"), xml, weights, "input.tensor", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "bytes_written: 7340032" in result.stdout
    output = tmp_path / "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"
    got = np.fromfile(output, np.float32).reshape(1, 4, 512, 896)
    (expected,) = native_infer(road_model[0], [image.transpose(0, 3, 1, 2)])
    max_diff = float(np.abs(got - expected).max())
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    print(f"road-segmentation: run {elapsed:.2f}s, max |diff| {max_diff:.2e}, agreement {agreement:.5f}")
    assert agreement >= 0.999
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _backend_graph(xml: Path, weights: Path) -> Any:
    from wasinn.backends import get_backend
    from wasinn.core import ExecutionTarget, GraphEncoding

    backend = get_backend(GraphEncoding.OPENVINO)
    return backend.load([xml.read_bytes(), weights.read_bytes()], ExecutionTarget.CPU)


def _f32(values: list[float]) -> Any:
    from wasinn.core import Tensor, TensorType

    return Tensor((1, 4), TensorType.F32, np.array([values], np.float32).view(np.uint8).reshape(-1))


def test_a_finished_contexts_infer_request_serves_the_next_context(tiny_ir: tuple[Path, Path]) -> None:
    """A server makes a context per request: the next one takes the last one's warm infer
    request (no fresh buffers to fault in), and sees nothing of its inputs or outputs."""
    from wasinn.core import NNError

    graph = _backend_graph(*tiny_ir)
    first = graph.init_execution_context()
    first.set_input(0, _f32([1, 1, 1, 1]))
    first.compute()
    np.testing.assert_array_equal(first.get_output(0), [[1.5, 0, 2.5, 0]])
    used = first.request
    first.release()
    second = graph.init_execution_context()
    with pytest.raises(NNError):
        second.get_output(0)  # the first context's output is not this one's
    with pytest.raises(NNError):
        second.compute()  # nor are its inputs
    second.set_input(0, _f32([-1, -1, 2, 0]))
    assert second.request is used
    second.compute()
    np.testing.assert_array_equal(second.get_output(0), [[0, 2.5, 5.5, 1]])
    # A cancelled request is not handed on.
    second.cancel()
    second.release()
    third = graph.init_execution_context()
    third.set_input(0, _f32([0, 0, 0, 0]))
    assert third.request is not used
    graph.release()


def test_a_reused_infer_request_starts_a_stateful_model_afresh(tmp_path: Path) -> None:
    """y = x + (the sum of the earlier x of this context): a new context starts from zero."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    from conftest import save_ir

    info = VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1, 4]), ov.Type.f32, "sum"
    variable = Variable(info)
    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    total = ops.add(ops.read_value(ops.constant(np.zeros((1, 4), np.float32)), variable), x)
    model = ov.Model([ops.result(total)], [ops.assign(total, variable)], [x], "sum")
    graph = _backend_graph(*save_ir(model, tmp_path, "sum"))
    for _ in range(2):
        context = graph.init_execution_context()
        for step in (1, 2):
            context.set_input(0, _f32([1, 2, 3, 4]))
            context.compute()
            np.testing.assert_array_equal(context.get_output(0), [[step * v for v in (1, 2, 3, 4)]])
        context.release()
    graph.release()
