"""The wheel's build step that pyproject.toml cannot declare: ship what the commands need.

``wasinn demo`` and ``wasinn serve --demo`` run example guests, and ``wasinn build`` bundles
the ``wasinn_guest`` package, none of which live under src/. A wheel built here carries them
as package data under ``wasinn/_guests/``:

- ``wasm/*.wasm``: the example guests (examples/c/*.c and the Rust road-segmentation), built
  by the Makefile's own rules at wheel-build time, so the wheel holds what ``make examples``
  makes (make skips guests already built and newer than their sources);
- ``python/wasinn_guest/``: the guest-side Python package, copied from guest/python.

The WIT files already live in the package (src/wasinn/wit). A build that cannot make the
guests fails rather than produce a wheel whose demo does not run. An editable install
(``pip install -e .``, what ``make setup`` does) builds nothing: there the code finds the
checkout's build/wasm and guest/python.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = "_guests"


def example_guests() -> list[str]:
    return sorted(path.stem for path in (ROOT / "examples" / "c").glob("*.c")) + ["road-segmentation"]


class BuildWithGuests(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "wasinn" / SHIPPED
        self._ship_guests(target / "wasm")
        self._ship_guest_python(target / "python")

    def _ship_guests(self, target: Path) -> None:
        names = example_guests()
        wanted = [f"build/wasm/{name}.wasm" for name in names]
        make = shutil.which("make")
        if make is None:
            raise SystemExit("building the wasinn wheel needs `make` and the guest toolchains")
        result = subprocess.run([make, "--no-print-directory", "-C", str(ROOT), *wanted])
        if result.returncode != 0:
            raise SystemExit(
                "building the wasinn wheel: `make " + " ".join(wanted) + "` failed; the wheel ships the "
                "example guests, so the guest toolchains must be installed (`make toolchain`)"
            )
        target.mkdir(parents=True, exist_ok=True)
        for name, path in zip(names, wanted, strict=True):
            shutil.copyfile(ROOT / path, target / f"{name}.wasm")

    def _ship_guest_python(self, target: Path) -> None:
        source = ROOT / "guest" / "python" / "wasinn_guest"
        if not (source / "__init__.py").is_file():
            raise SystemExit(f"building the wasinn wheel: {source} is missing")
        if target.exists():
            shutil.rmtree(target)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(source, target / "wasinn_guest", ignore=ignore)


setup(cmdclass={"build_py": BuildWithGuests})
