"""PyTorch (TorchScript, encoding 3) through the nn-run guest and a WAT probe, against torch itself.

Every model is built here with torch (script or trace) and saved with ``torch.jit.save``; the
reference is the same saved module loaded with ``torch.jit.load`` and called in this process.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import Probe, make_probe, nn_run, require_module, requires_gpu, requires_no_gpu, stage
from wasinn import Errno, Runtime

PYTORCH, CPU, GPU, TPU, AUTO = 3, 0, 1, 2, 3
F16, F32, F64, U8, I32, I64 = 0, 1, 2, 3, 4, 5
OUT = 64  # in-bounds out-pointers for handles and byte counts


@pytest.fixture(scope="session")
def torch_available() -> None:
    require_module("torch")


pytestmark = [
    pytest.mark.usefixtures("torch_available"),
    # torch 2.13 marks torch.jit as deprecated; TorchScript archives are what WasmEdge loads.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]


# ------------------------------------------------------------------ models


def _modules() -> dict[str, Any]:
    """The test models; defined in a function so that collecting this file never imports torch."""
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        """f32 [1, 3, 8, 8] → conv 3x3 (4) → relu → max-pool 2 → linear → [1, 5]."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    class TwoOutputs(nn.Module):
        """(a [2, 3], b [2, 3]) → (a + b [2, 3], mean over rows of a * b [3]): a tuple."""

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, (a * b).mean(0)

    class ThreeInputsList(nn.Module):
        """(a, b, c) → [a + 2b + 3c, c - a]: three inputs and a list return."""

        def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
            return [a + 2 * b + 3 * c, c - a]

    class MobileNetStandIn(nn.Module):
        """MobileNet's interface, [1, 3, 224, 224] → [1, 1000], in a few kilobytes."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    class ReturnsDict(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    class ReturnsTupleWithInt(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
            return x, 3

    class Argmax(nn.Module):
        """An int64 output, which the backend hands over as f32 (as WasmEdge does)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.argmax(1)

    class Scaled(nn.Module):
        """A non-tensor argument with a default: one tensor input works, a second cannot."""

        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return x * scale

    class NoForward(nn.Module):
        @torch.jit.export
        def other(self, x: torch.Tensor) -> torch.Tensor:
            return x

    return {
        "cnn": torch.jit.trace(TinyCNN().eval(), torch.zeros(1, 3, 8, 8)),
        "two": torch.jit.script(TwoOutputs()),
        "three": torch.jit.script(ThreeInputsList()),
        "mobilenet": torch.jit.script(MobileNetStandIn().eval()),
        "dict": torch.jit.script(ReturnsDict()),
        "tuple_int": torch.jit.script(ReturnsTupleWithInt()),
        "argmax": torch.jit.script(Argmax()),
        "scaled": torch.jit.script(Scaled()),
        "noforward": torch.jit.script(NoForward()),
    }


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, torch_available: None) -> dict[str, Path]:
    """name → saved TorchScript archive (``<name>.pt``)."""
    import torch

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("pytorch")
    paths = {}
    for name, module in _modules().items():
        paths[name] = directory / f"{name}.pt"
        torch.jit.save(module, str(paths[name]))
    return paths


def native(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    """The reference: the saved module loaded by torch and called here, outputs as f32."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        result = module(*(torch.from_numpy(np.array(x)) for x in inputs))
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    return [t.to(torch.float32).numpy().copy() for t in tensors]


# ------------------------------------------------------------------ nn-run


def save(directory: Path, name: str, array: np.ndarray) -> None:
    np.ascontiguousarray(array, dtype=np.float32).tofile(directory / name)


def read(directory: Path, name: str, shape: Sequence[int]) -> np.ndarray:
    return np.fromfile(directory / name, np.float32).reshape(shape)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    # Same torch, same kernels, same thread count in both processes: the same bits.
    np.testing.assert_array_equal(got, expected)


def test_tiny_cnn_matches_native(models: dict[str, Path], tmp_path: Path) -> None:
    (model,) = stage(tmp_path, models["cnn"])
    image = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    save(tmp_path, "in.bin", image)
    result = nn_run(
        tmp_path,
        "--encoding",
        "pytorch",
        "--model",
        model,
        "--input",
        "0:f32:1x3x8x8:in.bin",
        "--output",
        "0:out.bin",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output 0: 20 bytes"]
    (expected,) = native(models["cnn"], image)
    assert_same(read(tmp_path, "out.bin", (1, 5)), expected)


def test_tuple_of_two_outputs_matches_native(models: dict[str, Path], tmp_path: Path) -> None:
    (model,) = stage(tmp_path, models["two"])
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    save(tmp_path, "a.bin", a)
    save(tmp_path, "b.bin", b)
    result = nn_run(
        tmp_path,
        *("--encoding", "3", "--model", model),
        *("--input", "0:f32:2x3:a.bin", "--input", "1:f32:2x3:b.bin"),
        *("--output", "0:sum.bin", "--output", "1:mean.bin"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["output 0: 24 bytes", "output 1: 12 bytes"]
    total, mean = native(models["two"], a, b)
    assert_same(read(tmp_path, "sum.bin", (2, 3)), total)
    assert_same(read(tmp_path, "mean.bin", (3,)), mean)


def test_inputs_set_out_of_order_and_a_list_return(models: dict[str, Path], tmp_path: Path) -> None:
    """Setting index 2 first grows the input list; 0 and 1 fill it before compute."""
    (model,) = stage(tmp_path, models["three"])
    a, b, c = (np.full((1, 4), v, np.float32) * np.arange(1, 5, dtype=np.float32) for v in (1.0, -0.5, 0.25))
    for name, array in (("a.bin", a), ("b.bin", b), ("c.bin", c)):
        save(tmp_path, name, array)
    result = nn_run(
        tmp_path,
        *("--encoding", "pytorch", "--model", model),
        *("--input", "2:f32:1x4:c.bin", "--input", "0:f32:1x4:a.bin", "--input", "1:f32:1x4:b.bin"),
        *("--output", "0:y.bin", "--output", "1:z.bin"),
    )
    assert result.returncode == 0, result.stderr
    y, z = native(models["three"], a, b, c)
    np.testing.assert_array_equal(read(tmp_path, "y.bin", (1, 4)), y)
    np.testing.assert_array_equal(read(tmp_path, "z.bin", (1, 4)), z)


def test_named_model_by_preload(models: dict[str, Path], tmp_path: Path) -> None:
    image = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    save(tmp_path, "in.bin", image)
    result = nn_run(
        tmp_path,
        *("--name", "demo", "--input", "0:f32:1x3x8x8:in.bin", "--output", "0:out.bin", "--repeat", "3"),
        preload=[f"demo:PyTorch:CPU:{models['cnn']}"],
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native(models["cnn"], image)
    assert_same(read(tmp_path, "out.bin", (1, 5)), expected)


def test_preload_with_target_auto_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    result = nn_run(tmp_path, "--name", "demo", preload=[f"demo:pytorch:auto:{models['cnn']}"])
    assert result.returncode == 1
    assert "pytorch: target AUTO is not supported; use CPU or GPU" in result.stderr


def test_gpu_target_without_cuda_is_a_clear_error_not_a_fallback(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    requires_no_gpu(torch.cuda.is_available(), "CUDA (as torch sees it)")
    (model,) = stage(tmp_path, models["cnn"])
    result = nn_run(tmp_path, "--encoding", "pytorch", "--target", "gpu", "--model", model)
    assert result.returncode == 1
    assert "pytorch: target GPU needs CUDA, which torch does not see here" in result.stderr


def test_gpu_target_runs_on_cuda_when_torch_sees_it(models: dict[str, Path], tmp_path: Path) -> None:
    import torch

    requires_gpu(torch.cuda.is_available(), "CUDA (as torch sees it)")
    (model,) = stage(tmp_path, models["cnn"])
    image = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    save(tmp_path, "in.bin", image)
    result = nn_run(
        tmp_path,
        *("--encoding", "pytorch", "--target", "gpu", "--model", model),
        *("--input", "0:f32:1x3x8x8:in.bin", "--output", "0:out.bin"),
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native(models["cnn"], image)
    np.testing.assert_allclose(read(tmp_path, "out.bin", (1, 5)), expected, rtol=1e-4, atol=1e-4)


def test_shape_mismatch_in_the_model_is_runtime_error_with_torch_message(
    models: dict[str, Path], tmp_path: Path
) -> None:
    (model,) = stage(tmp_path, models["cnn"])
    save(tmp_path, "in.bin", np.zeros((1, 3, 4, 4), np.float32))
    result = nn_run(tmp_path, "--encoding", "pytorch", "--model", model, "--input", "0:f32:1x3x4x4:in.bin")
    assert result.returncode == Errno.RUNTIME_ERROR
    assert "wasinn: compute: pytorch: forward failed: RuntimeError: mat1 and mat2 shapes cannot be" in (
        result.stderr
    )


def test_wrong_input_type_reaches_the_guest_as_errno_and_a_message(
    models: dict[str, Path], tmp_path: Path
) -> None:
    (model,) = stage(tmp_path, models["cnn"])
    (tmp_path / "in.bin").write_bytes(bytes(192))
    result = nn_run(tmp_path, "--encoding", "pytorch", "--model", model, "--input", "0:u8:1x3x8x8:in.bin")
    assert result.returncode == 1
    assert (
        "wasinn: set_input: pytorch: input 0: the model expects f32 data, the guest sent u8" in result.stderr
    )


def test_garbage_model_message_is_one_short_line(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a TorchScript archive")
    result = nn_run(tmp_path, "--encoding", "pytorch", "--model", "model.pt")
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("wasinn:")]
    prefix = (
        "wasinn: load: pytorch: cannot load the TorchScript archive (25 bytes): PytorchStreamReader failed"
    )
    assert line.startswith(prefix)
    assert "miniz" not in line  # torch's generic advice paragraph is cut


# ------------------------------------------------------------------ WasmEdge's mobilenet example guests


def test_mobilenet_example_through_nn_run(models: dict[str, Path], shared_data: Path, tmp_path: Path) -> None:
    """pytorch-mobilenet-image: one builder, PyTorch, CPU, F32 [1,3,224,224], 1000 f32 out."""
    (model,) = stage(tmp_path, models["mobilenet"])
    shutil.copy(shared_data / "mobilenet" / "image-1x3x224x224.rgb", tmp_path / "image.rgb")
    result = nn_run(
        tmp_path,
        *("--encoding", "pytorch", "--target", "cpu", "--model", model),
        *("--input", "0:f32:1x3x224x224:image.rgb", "--output", "0:out.bin", "--print"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("output 0: 4000 bytes, f32[1000] first:")
    image = np.fromfile(tmp_path / "image.rgb", np.float32).reshape(1, 3, 224, 224)
    (expected,) = native(models["mobilenet"], image)
    assert_same(read(tmp_path, "out.bin", (1, 1000)), expected)


def mobilenet_session(probe: Probe, shared_data: Path) -> tuple[int, bytes]:
    """The example's calls after load: init, set_input as it sends it, compute, get_output(4000)."""
    graph = probe.u32(OUT)
    assert probe.call("init_execution_context", graph, OUT + 4) == Errno.SUCCESS
    context = probe.u32(OUT + 4)
    image = (shared_data / "mobilenet" / "image-1x3x224x224.rgb").read_bytes()
    assert len(image) == 602112
    record = probe.tensor([1, 3, 224, 224], F32, image)
    assert probe.call("set_input", context, 0, record) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(b"\0" * 4000)
    assert probe.call("get_output", context, 0, buffer, 4000, OUT + 8) == Errno.SUCCESS
    return probe.u32(OUT + 8), probe.read(buffer, 4000)


def test_mobilenet_example_exact_calls(models: dict[str, Path], shared_data: Path) -> None:
    probe = make_probe(Runtime(cache=False), pages=16)
    array, count = probe.builders([models["mobilenet"].read_bytes()])
    assert probe.call("load", array, count, PYTORCH, CPU, OUT) == Errno.SUCCESS
    written, payload = mobilenet_session(probe, shared_data)
    assert written == 4000
    image = np.fromfile(shared_data / "mobilenet" / "image-1x3x224x224.rgb", np.float32).reshape(
        1, 3, 224, 224
    )
    (expected,) = native(models["mobilenet"], image)
    assert_same(np.frombuffer(payload, "<f4").reshape(1, 1000), expected)


def test_mobilenet_named_model_example_exact_calls(models: dict[str, Path], shared_data: Path) -> None:
    """The named-model variant: ``--nn-preload demo:PyTorch:CPU:mobilenet.pt``, load_by_name("demo")."""
    probe = make_probe(Runtime(cache=False, preload=[f"demo:PyTorch:CPU:{models['mobilenet']}"]), pages=16)
    name, length = probe.string("demo")
    assert probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    written, payload = mobilenet_session(probe, shared_data)
    assert written == 4000
    image = np.fromfile(shared_data / "mobilenet" / "image-1x3x224x224.rgb", np.float32).reshape(
        1, 3, 224, 224
    )
    (expected,) = native(models["mobilenet"], image)
    assert_same(np.frombuffer(payload, "<f4").reshape(1, 1000), expected)


# ------------------------------------------------------------------ exact errno (spec §6.3, §8)


def probe_for(pages: int = 4, preload: Sequence[str] = ()) -> Probe:
    return make_probe(Runtime(cache=False, preload=list(preload)), pages=pages)


def f32_tensor(probe: Probe, array: np.ndarray, dims: Sequence[int] | None = None) -> int:
    data = np.ascontiguousarray(array, "<f4").tobytes()
    return probe.tensor(list(array.shape) if dims is None else dims, F32, data)


@pytest.mark.parametrize(
    "blobs",
    [[], [b"a", b"b"], [b"garbage bytes, not a zip archive"], [b""], [b"\x7fELF\x02\x01\x01" + bytes(64)]],
    ids=["0-builders", "2-builders", "garbage", "empty", "elf-aotinductor"],
)
def test_13_load_errors(blobs: list[bytes]) -> None:
    probe = probe_for()
    assert probe.load(PYTORCH, blobs) == Errno.INVALID_ARGUMENT
    assert probe.instance.nn.live_graphs == 0


def test_13_two_valid_archives_are_still_two_builders(models: dict[str, Path]) -> None:
    probe = probe_for()
    blob = models["cnn"].read_bytes()
    assert probe.load(PYTORCH, [blob, blob]) == Errno.INVALID_ARGUMENT


def test_load_refuses_a_guest_preload_path(models: dict[str, Path]) -> None:
    # WasmEdge would open that host path; a guest must not be able to name host files.
    probe = probe_for()
    assert probe.load(PYTORCH, [f"preload:{models['cnn']}".encode()]) == Errno.INVALID_ARGUMENT


def test_load_a_pickle_that_is_not_torchscript(tmp_path: Path) -> None:
    import torch

    torch.save({"weight": torch.ones(2)}, tmp_path / "state.pt")
    probe = probe_for()
    assert probe.load(PYTORCH, [(tmp_path / "state.pt").read_bytes()]) == Errno.INVALID_ARGUMENT


def test_load_an_archive_without_forward(models: dict[str, Path]) -> None:
    probe = probe_for()
    assert probe.load(PYTORCH, [models["noforward"].read_bytes()]) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize("target", [TPU, AUTO])
def test_load_targets_other_than_cpu_and_gpu(models: dict[str, Path], target: int) -> None:
    probe = probe_for()
    assert probe.load(PYTORCH, [models["cnn"].read_bytes()], target) == Errno.INVALID_ARGUMENT


def test_load_gpu_without_cuda(models: dict[str, Path]) -> None:
    import torch

    requires_no_gpu(torch.cuda.is_available(), "CUDA (as torch sees it)")
    probe = probe_for()
    assert probe.load(PYTORCH, [models["cnn"].read_bytes()], GPU) == Errno.INVALID_ARGUMENT


def test_gpu_is_never_silently_served_by_the_cpu(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when torch claims CUDA, a module that cannot go to CUDA fails the load (errno 1)."""
    import torch

    from wasinn.backends.pytorch import PyTorchBackend
    from wasinn.core import ExecutionTarget, InvalidArgument

    # With real CUDA, test_gpu_target_runs_on_cuda_when_torch_sees_it covers the GPU path.
    requires_no_gpu(torch.cuda.is_available(), "CUDA (as torch sees it)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(InvalidArgument, match="pytorch: cannot load the TorchScript archive"):
        PyTorchBackend().load([models["cnn"].read_bytes()], ExecutionTarget.GPU)


def test_init_execution_context_and_handles(models: dict[str, Path]) -> None:
    probe = probe_for()
    blob = models["cnn"].read_bytes()
    assert probe.load(PYTORCH, [blob]) == Errno.SUCCESS
    assert probe.load(PYTORCH, [blob]) == Errno.SUCCESS
    assert probe.u32(OUT) == 1
    assert probe.call("init_execution_context", 1, OUT + 4) == Errno.SUCCESS
    assert probe.call("init_execution_context", 1, OUT + 8) == Errno.SUCCESS
    assert (probe.u32(OUT + 4), probe.u32(OUT + 8)) == (0, 1)


@pytest.mark.parametrize(
    ("dims", "type_word", "data", "index"),
    [
        ([1, 3, 8, 8], U8, bytes(192), 0),
        ([1, 3, 8, 8], F16, bytes(384), 0),
        ([1, 3, 8, 8], I32, bytes(768), 0),
        ([1, 3, 8, 8], F64, bytes(1536), 0),
        ([1, 3, 8, 8], I64, bytes(1536), 0),
        ([1, 3, 8, 8], F32, bytes(767), 0),
        ([1, 3, 8, 8], F32, bytes(772), 0),
        ([1, 3, 8, 8], F32, bytes(768), 1024),
        ([1, 3, 8, 8], F32, bytes(768), 0xFFFFFFFF),
    ],
    ids=["28-u8", "f16", "i32", "f64", "i64", "short-data", "long-data", "index-1024", "index-max"],
)
def test_set_input_errors(
    models: dict[str, Path], dims: list[int], type_word: int, data: bytes, index: int
) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["cnn"])
    assert (
        probe.call("set_input", context, index, probe.tensor(dims, type_word, data)) == Errno.INVALID_ARGUMENT
    )


def test_set_input_accepts_any_dims_with_the_right_length(models: dict[str, Path]) -> None:
    """The dims only shape the tensor (WasmEdge checks nothing); the model judges them at compute."""
    probe = probe_for()
    context = probe.context(PYTORCH, models["cnn"])
    assert probe.call("set_input", context, 0, probe.tensor([192], F32, bytes(768))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR


def test_31_compute_with_no_input(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["cnn"])
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


def test_31_compute_with_only_index_1_set(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    assert probe.call("set_input", context, 1, f32_tensor(probe, np.ones((2, 3)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


def test_index_2_first_leaves_empty_slots_until_filled(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["three"])
    values = [np.full((1, 4), v, np.float32) for v in (1.0, 10.0, 100.0)]
    assert probe.call("set_input", context, 2, f32_tensor(probe, values[2])) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT  # slots 0 and 1 are empty
    assert probe.call("set_input", context, 0, f32_tensor(probe, values[0])) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT  # slot 1 still empty
    assert probe.call("set_input", context, 1, f32_tensor(probe, values[1])) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(bytes(16))
    assert probe.call("get_output", context, 0, buffer, 16, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 16), "<f4").tolist() == [321.0] * 4
    assert probe.call("get_output", context, 1, buffer, 16, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 16), "<f4").tolist() == [99.0] * 4


def test_more_inputs_than_forward_takes(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["cnn"])
    for index in (0, 1):
        record = f32_tensor(probe, np.zeros((1, 3, 8, 8)))
        assert probe.call("set_input", context, index, record) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


def test_fewer_inputs_than_forward_needs(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    assert probe.call("set_input", context, 0, f32_tensor(probe, np.ones((2, 3)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


def test_a_tensor_for_a_float_argument(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["scaled"])
    assert probe.call("set_input", context, 0, f32_tensor(probe, np.ones((2,)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS  # scale keeps its default
    buffer = probe.put(bytes(8))
    assert probe.call("get_output", context, 0, buffer, 8, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 8), "<f4").tolist() == [2.0, 2.0]
    assert probe.call("set_input", context, 1, f32_tensor(probe, np.ones(()))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize("name", ["dict", "tuple_int"])
def test_outputs_that_are_not_tensors(models: dict[str, Path], name: str) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models[name])
    assert probe.call("set_input", context, 0, f32_tensor(probe, np.ones((2,)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT
    assert probe.call("get_output", context, 0, probe.put(bytes(8)), 8, OUT + 8) == Errno.INVALID_ARGUMENT


def test_runtime_error_in_the_model(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    assert probe.call("set_input", context, 0, f32_tensor(probe, np.ones((2, 3)))) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, f32_tensor(probe, np.ones((4, 3)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR


def computed(models: dict[str, Path]) -> tuple[Probe, int]:
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert probe.call("set_input", context, 0, f32_tensor(probe, a)) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, f32_tensor(probe, a)) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    return probe, context


def test_37_output_index_out_of_range(models: dict[str, Path]) -> None:
    probe, context = computed(models)
    buffer = probe.put(bytes(64))
    assert probe.call("get_output", context, 1, buffer, 64, OUT + 8) == Errno.SUCCESS
    assert probe.call("get_output", context, 2, buffer, 64, OUT + 8) == Errno.INVALID_ARGUMENT


def test_get_output_before_compute(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    assert probe.call("get_output", context, 0, probe.put(bytes(64)), 64, OUT + 8) == Errno.INVALID_ARGUMENT


def test_38_40_too_small_buffer_and_size_probe(models: dict[str, Path]) -> None:
    probe, context = computed(models)
    buffer = probe.put(b"\xaa" * 24)
    assert probe.call("get_output", context, 0, buffer, 23, OUT + 8) == Errno.TOO_LARGE
    assert probe.u32(OUT + 8) == 24
    assert probe.read(buffer, 24) == b"\xaa" * 24
    assert probe.call("get_output", context, 0, 0, 0, OUT + 8) == Errno.TOO_LARGE
    assert probe.u32(OUT + 8) == 24
    assert probe.call("get_output", context, 0, buffer, 24, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 24), "<f4").tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_int64_output_is_handed_over_as_f32(models: dict[str, Path]) -> None:
    probe = probe_for()
    context = probe.context(PYTORCH, models["argmax"])
    scores = np.array([[0.1, 0.9, 0.0], [5.0, 1.0, 7.0]], np.float32)
    assert probe.call("set_input", context, 0, f32_tensor(probe, scores)) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(bytes(8))
    assert probe.call("get_output", context, 0, buffer, 8, OUT + 8) == Errno.SUCCESS
    assert probe.u32(OUT + 8) == 8  # element count × 4
    assert np.frombuffer(probe.read(buffer, 8), "<f4").tolist() == [1.0, 2.0]


def test_recompute_replaces_the_outputs(models: dict[str, Path]) -> None:
    """WasmEdge appends to its output list on every compute; wasinn replaces it."""
    probe, context = computed(models)
    assert probe.call("set_input", context, 0, f32_tensor(probe, np.ones((2, 3)))) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, f32_tensor(probe, np.ones((2, 3)))) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(bytes(64))
    assert probe.call("get_output", context, 0, buffer, 64, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 24), "<f4").tolist() == [2.0] * 6
    assert probe.call("get_output", context, 2, buffer, 64, OUT + 8) == Errno.INVALID_ARGUMENT


def test_input_is_copied_not_aliased(models: dict[str, Path]) -> None:
    """Changing guest memory after set_input does not change what compute sees."""
    probe = probe_for()
    context = probe.context(PYTORCH, models["two"])
    a = probe.tensor([2, 3], F32, np.ones(6, "<f4").tobytes())
    data_ptr = struct.unpack_from("<I", probe.read(a + 12, 4))[0]
    assert probe.call("set_input", context, 0, a) == Errno.SUCCESS
    assert probe.call("set_input", context, 1, a) == Errno.SUCCESS
    probe.write(data_ptr, np.full(6, 50, "<f4").tobytes())
    assert probe.call("compute", context) == Errno.SUCCESS
    buffer = probe.put(bytes(24))
    assert probe.call("get_output", context, 0, buffer, 24, OUT + 8) == Errno.SUCCESS
    assert np.frombuffer(probe.read(buffer, 24), "<f4").tolist() == [2.0] * 6


@pytest.mark.parametrize("call", ["compute_single", "fini_single"])
def test_43_streaming_on_pytorch(models: dict[str, Path], call: str) -> None:
    probe, context = computed(models)
    assert probe.call(call, context) == Errno.INVALID_ARGUMENT


def test_43_get_output_single_on_pytorch(models: dict[str, Path]) -> None:
    probe, context = computed(models)
    assert probe.call("get_output_single", context, 0, probe.put(bytes(64)), 64, OUT + 8) == 1


def test_load_by_name_with_config_honours_device_only(models: dict[str, Path]) -> None:
    """wasinn parses the config (WasmEdge appends it as a builder): PyTorch applies ``device``;
    ``threads`` would change torch's process-wide pool, so it is refused with errno 1."""
    probe = probe_for(preload=[f"m:pytorch:cpu:{models['cnn']}"])
    name, length = probe.string("m")
    threads, threads_length = probe.string('{"threads": 2}')
    assert probe.call("load_by_name_with_config", name, length, threads, threads_length, OUT) == 1
    config, config_length = probe.string('{"device": "cpu"}')
    assert probe.call("load_by_name_with_config", name, length, config, config_length, OUT) == Errno.SUCCESS
