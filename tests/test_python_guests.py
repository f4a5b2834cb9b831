"""Python guests end to end: ``wasinn build``, then ``wasinn run`` of the component.

The examples under examples/python must give what the legacy-ABI guests give on the same
model and input (spec wit-wasi-nn.md §11 case 28): byte-identical road segmentation against
the Rust guest, and the same bird classes as the C guest and as TFLite called directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    REPO,
    guest_wasm,
    nn_run,
    python_guest,
    require_module,
    run_guest,
    shared_file,
    wasinn_cli,
)

EXAMPLES = REPO / "examples" / "python"
BIRDS = ("birds-v1", "lite-model_aiy_vision_classifier_birds_V1_3.tflite")
ROAD = "road-segmentation-adas-0001"
ROAD_OUTPUT = "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("python-guests")


def test_build_reuses_the_cache_and_reports_bad_apps(built: Path, tmp_path: Path) -> None:
    python_guest(EXAMPLES / "classify_birds.py", built)
    again = wasinn_cli("build", str(EXAMPLES / "classify_birds.py"), "-o", str(tmp_path / "again.wasm"))
    assert again.returncode == 0, again.stderr
    assert "reused a cached build" in again.stderr
    assert (tmp_path / "again.wasm").read_bytes() == (built / "classify_birds.wasm").read_bytes()
    (tmp_path / "broken.py").write_text("this is not python\n")
    broken = wasinn_cli("build", str(tmp_path / "broken.py"), "-o", str(tmp_path / "broken.wasm"))
    assert broken.returncode == 2 and "componentize-py could not build" in broken.stderr
    not_python = wasinn_cli("build", str(REPO / "pyproject.toml"), "-o", str(tmp_path / "x.wasm"))
    assert not_python.returncode == 2 and "expected a Python file" in not_python.stderr


def birds_tensor(directory: Path) -> Path:
    """The shared bird picture as 1x224x224x3 RGB u8, made by wasinn im2tensor."""
    require_module("PIL")
    shutil.copy(shared_file("birds-v1", "bird.jpg"), directory / "bird.jpg")
    made = wasinn_cli(
        "im2tensor", "--image", "bird.jpg", "--dims", "224x224x3xu8", "--color", "rgb",
        "--tensor", "bird.tensor", cwd=directory,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return directory / "bird.tensor"


def test_birds_classify_alike_through_both_front_ends(built: Path, tmp_path: Path) -> None:
    require_module("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    model = shared_file(*BIRDS)
    pixels = np.fromfile(birds_tensor(tmp_path), np.uint8).reshape(1, 224, 224, 3)
    preload = [f"birds:tensorflowlite:cpu:{model}"]
    wasm = python_guest(EXAMPLES / "classify_birds.py", built)
    component = run_guest(wasm, "bird.tensor", cwd=tmp_path, preload=preload)
    assert component.returncode == 0, component.stderr
    # "1. class 166 (166): 224" → (166, 224), best first
    ranked = [
        (int(line.split("(")[1].split(")")[0]), int(line.rsplit(": ", 1)[1]))
        for line in component.stdout.splitlines()
        if line[:1].isdigit()
    ]
    legacy = nn_run(
        tmp_path, "--name", "birds", "--input", "0:u8:1x224x224x3:bird.tensor",
        "--output", "0:legacy.out", preload=preload,
    )  # fmt: skip
    assert legacy.returncode == 0, legacy.stderr
    scores = np.fromfile(tmp_path / "legacy.out", np.uint8)
    assert ranked[0] == (int(scores.argmax()), int(scores.max()))
    assert [score for _, score in ranked] == sorted(scores.tolist(), reverse=True)[:5]
    interpreter = Interpreter(str(model))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    native = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).ravel()
    assert ranked[0][0] == int(native.argmax())  # scores may differ by a quantisation step


def test_a_model_past_the_per_call_limit_loads_by_bytes(built: Path, tmp_path: Path) -> None:
    """wasinn_guest.load sends a model over 2 MiB through wasinn:nn/chunks load-parts: the
    3.6 MB birds model, read by the guest, classifies as the preloaded one does."""
    from wasinn.host import HOSTCALL_BYTE_LIMIT

    model = shared_file(*BIRDS)
    assert model.stat().st_size > HOSTCALL_BYTE_LIMIT  # graph.load would trap on it
    shutil.copy(model, tmp_path / model.name)
    birds_tensor(tmp_path)
    wasm = python_guest(EXAMPLES / "classify_birds.py", built)
    by_name = run_guest(wasm, "bird.tensor", cwd=tmp_path, preload=[f"birds:tensorflowlite:cpu:{model}"])
    by_bytes = run_guest(wasm, "--model", model.name, "bird.tensor", cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert by_bytes.returncode == 0, by_bytes.stderr
    assert "1. class" in by_bytes.stdout
    assert by_bytes.stdout == by_name.stdout


def test_a_failing_python_guest_exits_1_with_its_message(built: Path, tmp_path: Path) -> None:
    wasm = python_guest(EXAMPLES / "classify_birds.py", built)
    usage = run_guest(wasm, cwd=tmp_path)
    assert usage.returncode == 1 and "usage: classify_birds" in usage.stdout
    (tmp_path / "bird.tensor").write_bytes(bytes(10))
    unloaded = run_guest(wasm, "bird.tensor", cwd=tmp_path)
    assert unloaded.returncode == 1
    assert "not-found: no preloaded model named 'birds'" in unloaded.stderr


@pytest.mark.slow
def test_road_segmentation_python_equals_rust(built: Path, tmp_path: Path, openvino_available: None) -> None:
    """The Python example and the Rust guest write byte-identical outputs (5.5 MB input: chunked)."""
    for name in (f"{ROAD}.xml", f"{ROAD}.bin", "empty_road_mapillary.jpg"):
        shutil.copy(shared_file(ROAD, name), tmp_path / name)
    made = wasinn_cli(
        "im2tensor", "--image", "empty_road_mapillary.jpg", "--dims", "512x896x3xfp32",
        "--tensor", "input.tensor", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    args = (f"{ROAD}.xml", f"{ROAD}.bin", "input.tensor")
    rust = run_guest(guest_wasm("road-segmentation"), *args, cwd=tmp_path)
    assert rust.returncode == 0, rust.stderr
    expected = (tmp_path / ROAD_OUTPUT).read_bytes()
    (tmp_path / ROAD_OUTPUT).unlink()
    python = run_guest(python_guest(EXAMPLES / "road_segmentation.py", built), *args, cwd=tmp_path)
    assert python.returncode == 0, python.stderr
    assert "bytes_written: 7340032" in python.stdout
    assert (tmp_path / ROAD_OUTPUT).read_bytes() == expected


def test_the_build_key_follows_importable_sources_only(tmp_path: Path) -> None:
    require_module("componentize_py")
    from wasinn.tools.build import NN_VERSIONS, build_key

    app = tmp_path / "app.py"
    app.write_text("import helper\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    (tmp_path / "data").mkdir()  # not a package: never imported, never hashed
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "__init__.py").write_text("")

    def key() -> str:
        return build_key(app, [tmp_path], NN_VERSIONS[:1])

    first = key()
    (tmp_path / "data" / "scratch.py").write_text("ignored = True\n")
    assert key() == first
    (tmp_path / "package" / "module.py").write_text("Y = 2\n")
    second = key()
    assert second != first
    (tmp_path / "helper.py").write_text("X = 2\n")
    assert key() != second
