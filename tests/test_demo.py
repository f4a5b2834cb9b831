"""`wasinn demo road-segmentation` end to end, as `make demo` runs it, and the picture it draws."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import guest_wasm

pytestmark = pytest.mark.usefixtures("openvino_available")


def test_demo_draws_the_segmentation_picture(shared_data: Path, tmp_path: Path) -> None:
    guest_wasm("road-segmentation")
    env = {**os.environ, "WASINN_MODELS": str(shared_data), "WASINN_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wasinn",
            "demo",
            "road-segmentation",
            "--out",
            str(tmp_path / "out"),
            "--no-download",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    picture = tmp_path / "out" / "road-segmentation.png"
    assert result.stdout.strip().endswith(f"picture written to {picture}")
    assert "bytes_written: 7340032" in result.stdout
    image = np.asarray(Image.open(picture).convert("RGB"))
    # Three 896-wide panels with margins, titles and a legend (tools' ResultLayout).
    assert image.shape == (632, 2752, 3)
    segmentation = image[56 : 56 + 512, 16 + 896 + 16 : 16 + 2 * 896 + 16]
    road = np.array([48, 103, 141])
    background = np.array([68, 1, 84])
    bottom, top = segmentation[400:], segmentation[:150]
    assert (bottom == road).all(axis=-1).mean() > 0.5  # the road fills the bottom of the picture
    assert (top == background).all(axis=-1).mean() > 0.95  # sky and trees are background


def test_the_seed_commands_work_verbatim(shared_data: Path, tmp_path: Path) -> None:
    """The seed's exact steps: im2tensor, wasinn run with --dir .:., visualize; outputs vs native."""
    import shutil

    from conftest import native_infer

    folder = shared_data / "road-segmentation-adas-0001"
    for name in (
        "road-segmentation-adas-0001.xml",
        "road-segmentation-adas-0001.bin",
        "empty_road_mapillary.jpg",
    ):
        shutil.copy(folder / name, tmp_path / name)
    shutil.copy(guest_wasm("road-segmentation"), tmp_path / "road-segmentation.wasm")

    def wasinn(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wasinn", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )

    made = wasinn(
        "im2tensor",
        "--image",
        "empty_road_mapillary.jpg",
        "--dims",
        "512x896x3xfp32",
        "--tensor",
        "input.tensor",
    )
    assert made.returncode == 0, made.stderr
    ran = wasinn(
        "run",
        "--dir",
        ".:.",
        "road-segmentation.wasm",
        "road-segmentation-adas-0001.xml",
        "road-segmentation-adas-0001.bin",
        "input.tensor",
    )
    assert ran.returncode == 0, ran.stderr
    assert "bytes_written: 7340032" in ran.stdout
    output = tmp_path / "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"
    hwc = np.fromfile(tmp_path / "input.tensor", np.float32).reshape(1, 512, 896, 3)
    (expected,) = native_infer(folder / "road-segmentation-adas-0001.xml", [hwc.transpose(0, 3, 1, 2)])
    got = np.fromfile(output, np.float32).reshape(expected.shape)
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    print(f"seed commands: class agreement {agreement:.5f}, max |diff| {np.abs(got - expected).max():.2e}")
    assert agreement >= 0.999
    drawn = wasinn(
        "visualize", "--image", "empty_road_mapillary.jpg", "--tensor", output.name, "--output", "result.png"
    )
    assert drawn.returncode == 0, drawn.stderr
    assert Image.open(tmp_path / "result.png").size == (2752, 632)
