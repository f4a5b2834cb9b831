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
