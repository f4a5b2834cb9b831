"""The wheel on its own, as a new user installs it: ``pip wheel .``, then a fresh venv in a
temporary directory outside the checkout, then the commands from a temporary directory.

The wheel is built from a copy of the checkout's sources (so the build's own outputs, build/lib
and the egg-info, stay out of the checkout) with the checkout's built guests beside them, which
the Makefile rules that setup.py runs find up to date. The venv is made without pip and gets
the wheel with ``--no-deps``; its dependencies come from this interpreter's site-packages through
a ``.pth`` line (a plain directory, so the editable install's own ``.pth`` there, which points at
the checkout, is never processed). Every test checks the code it ran came from the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, guest_wasm, native_infer, require_module, save_ir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("openvino_available")]

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "Makefile", "src", "guest", "examples")
# What setup.py ships: every examples/c guest and the Rust road-segmentation.
SHIPPED = (*sorted(path.stem for path in (REPO / "examples" / "c").glob("*.c")), "road-segmentation")

APP = """\
import wasinn_guest as nn


def main(args: list[str]) -> int:
    graph = nn.load_by_name("tiny")
    (output,) = graph.compute([("x", nn.Tensor([1, 4], "FP32", nn.pack_floats([1.0, 2.0, 3.0, 4.0])))])
    print("y", " ".join(repr(value) for value in nn.floats(output)))
    return 0


Run = nn.command(main)
"""


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """``ARGS[0]`` from the venv's bin, in the work directory, with ``env`` added."""
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.work,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO.resolve())
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "target")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    (source / "build" / "wasm").mkdir(parents=True)
    for name in SHIPPED:  # copy2 keeps the times that tell make these are up to date
        shutil.copy2(guest_wasm(name), source / "build" / "wasm" / f"{name}.wasm")

    # --no-build-isolation: the build uses this venv's setuptools instead of downloading one.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("wasinn-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "wasinn_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # `wasinn build` runs componentize-py from beside the interpreter, as in a venv with [build].
    componentize = Path(sys.executable).parent / "componentize-py"
    if componentize.is_file():
        (venv / "bin" / "componentize-py").symlink_to(componentize)

    work = root / "work"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "WASINN_GUESTS", "VIRTUAL_ENV"}
    }
    return Installed(venv, work, env)


def test_the_installed_package_never_reaches_the_checkout(installed: Installed) -> None:
    where = installed.run(
        "python",
        "-c",
        "import wasinn, wasinn.tools.build as b, wasinn.tools.demo as d; "
        "print(wasinn.__file__); print(d.find_guest('nn-run.wasm')); print(b.GUEST_PYTHON); print(b.WIT_DIR)",
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():
        assert Path(line).is_relative_to(installed.venv), line
        assert not Path(line).resolve().is_relative_to(REPO.resolve()), line


def test_demo_draws_its_picture(installed: Installed, shared_data: Path) -> None:
    result = installed.run(
        "wasinn", "demo", "road-segmentation", "--out", "out", "--no-download",
        WASINN_MODELS=str(shared_data), WASINN_CACHE_DIR=str(installed.work / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bytes_written: 7340032" in result.stdout
    assert (installed.work / "out" / "road-segmentation.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def tiny(installed: Installed) -> tuple[Path, Path]:
    """``y = relu(x * w + b)`` on f32 [1, 4], written into the installed commands' directory."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    w = ops.constant(np.array([[1.0, -2.0, 3.0, -4.0]], dtype=np.float32))
    b = ops.constant(np.array([[0.5, 0.5, -0.5, 1.0]], dtype=np.float32))
    return save_ir(ov.Model([ops.relu(ops.add(ops.multiply(x, w), b))], [x], "tiny"), installed.work, "tiny")


INPUT = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def test_a_wasmedge_style_c_guest_from_the_wheel(installed: Installed, tiny: tuple[Path, Path]) -> None:
    INPUT.tofile(installed.work / "in.bin")
    find = "from wasinn.tools.demo import find_guest; print(find_guest('nn-run.wasm'))"
    found = installed.run("python", "-c", find)
    assert found.returncode == 0, found.stderr
    guest = Path(found.stdout.strip())
    assert guest.is_relative_to(installed.venv)
    result = installed.run(
        "wasinn", "run", "--dir", ".:.", str(guest), "--model", tiny[0].name, "--model", tiny[1].name,
        "--input", "0:f32:1x4:in.bin", "--output", "0:out.bin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (expected,) = native_infer(tiny[0], [INPUT])
    np.testing.assert_array_equal(np.fromfile(installed.work / "out.bin", np.float32), expected.reshape(-1))


def test_build_and_run_a_python_guest(installed: Installed, tiny: tuple[Path, Path]) -> None:
    """The build is cached by content in the user's cache, like every Python guest the tests
    build: the first run on a machine runs componentize-py on the wheel's wasinn_guest and WIT
    (25 s on a quiet machine, 110 s on a loaded one), later ones reuse that component."""
    require_module("componentize_py")
    (installed.work / "app.py").write_text(APP)
    built = installed.run("wasinn", "build", "app.py", "-o", "app.wasm", timeout=600)
    assert built.returncode == 0, built.stderr
    preload = f"--nn-preload=tiny:openvino:cpu:{tiny[0].name}:{tiny[1].name}"
    result = installed.run("wasinn", "run", "--dir", ".:.", preload, "app.wasm")
    assert result.returncode == 0, result.stderr
    (expected,) = native_infer(tiny[0], [INPUT])
    assert result.stdout.split() == ["y", *(repr(float(value)) for value in expected.reshape(-1))]
