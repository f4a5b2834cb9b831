"""The road-segmentation notebook runs top to bottom with wasinn's Python API (so it never rots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import REPO, guest_wasm, require_module

pytestmark = pytest.mark.usefixtures("openvino_available")


def test_visualize_notebook_executes(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("nbclient")
    require_module("ipykernel")
    import nbformat
    from nbclient import NotebookClient

    guest_wasm("road-segmentation")
    monkeypatch.setenv("WASINN_MODELS", str(shared_data))
    notebook = nbformat.read(REPO / "examples" / "road-segmentation" / "visualize.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}
    ).execute()
    outputs = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(output.get("output_type") != "error" for cell in outputs for output in cell.outputs)
    # The last cell shows the picture: a PNG came back from the kernel.
    assert any("image/png" in output.get("data", {}) for output in outputs[-1].outputs)
