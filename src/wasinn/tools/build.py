"""``wasinn build app.py -o app.wasm``: a Python program as a ``wasi:nn`` component.

componentize-py (an optional extra) bundles CPython 3.14, the app and the ``wasinn_guest``
package into a ``wasi:cli`` command component importing ``wasi:nn`` 0.2.0-rc-2024-10-28 and
wasinn's ``wasinn:nn/chunks``. A build takes about 20 s, so results are cached by a hash of
everything that goes in (the Python sources, the WIT and componentize-py's version).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from wasinn.core import ConfigError, ModuleError
from wasinn.core._paths import user_cache_dir

COMPONENTIZE_PY = "componentize-py"
WIT_DIR = Path(__file__).resolve().parents[1] / "wit"
# The wasinn_guest package: a wheel carries it (setup.py), a checkout has it under guest/.
SHIPPED_GUEST_PYTHON = Path(__file__).resolve().parents[1] / "_guests" / "python"
CHECKOUT_GUEST_PYTHON = Path(__file__).resolve().parents[3] / "guest" / "python"
GUEST_PYTHON = next(
    (
        path
        for path in (SHIPPED_GUEST_PYTHON, CHECKOUT_GUEST_PYTHON)
        if (path / "wasinn_guest" / "__init__.py").is_file()
    ),
    CHECKOUT_GUEST_PYTHON,
)
NN_VERSIONS = ("0.2.0-rc-2024-10-28", "0.2.0-rc-2024-08-19", "0.2.0-rc-2024-06-25")
NN_INTERFACES = ("tensor", "graph", "inference", "errors")
MAX_SOURCE_FILES = 2000


def world_wit(versions: Sequence[str]) -> str:
    """The guest's world: a wasi:cli command importing wasi:nn (and wasinn's chunks for 10-28)."""
    imports = [f"  import wasi:nn/{name}@{version};" for version in versions for name in NN_INTERFACES]
    if NN_VERSIONS[0] in versions:
        imports.append("  import wasinn:nn/chunks@0.1.0;")
    return (
        "package wasinn:app;\n\nworld command {\n  export wasi:cli/run@0.2.0;\n"
        + "\n".join(imports)
        + "\n}\n"
    )


def _stage_wit(directory: Path, versions: Sequence[str]) -> None:
    deps = directory / "deps"
    deps.mkdir(parents=True)
    shutil.copytree(WIT_DIR / "cli", deps / "cli")
    for version in NN_VERSIONS:  # chunks uses the 10-28 types, so 10-28 is always there
        if version in versions or version == NN_VERSIONS[0]:
            shutil.copytree(WIT_DIR / f"nn-{version.removeprefix('0.2.0-rc-')}", deps / f"nn-{version}")
    shutil.copytree(WIT_DIR / "wasinn", deps / "wasinn")
    (directory / "world.wit").write_text(world_wit(versions))


def _sources(paths: Sequence[Path]) -> list[Path]:
    """The importable sources under ``paths``: top-level modules and packages (recursively),
    not every file below (an app in a busy directory such as /tmp must not hash all of it)."""
    found: list[Path] = []

    def visit(directory: Path, package: bool) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.suffix in {".py", ".wit", ".toml"} and entry.is_file():
                found.append(entry)
            elif (
                entry.is_dir()
                and entry.name != "__pycache__"
                and (package or (entry / "__init__.py").is_file())
            ):
                visit(entry, True)
            if len(found) > MAX_SOURCE_FILES:
                raise ConfigError(f"more than {MAX_SOURCE_FILES} source files under {directory}")

    for root in paths:
        visit(root, False)
    return found


def build_key(app: Path, paths: Sequence[Path], versions: Sequence[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_componentize_version()}\0{app.stem}\0{','.join(versions)}\0".encode())
    sources = [(root, path) for root in paths for path in _sources([root])]
    sources += [(WIT_DIR, path) for path in sorted(WIT_DIR.rglob("*.wit"))]
    for root, source in sources:
        try:
            digest.update(f"{source.relative_to(root)}\0".encode() + source.read_bytes() + b"\0")
        except OSError:
            continue  # vanished while we looked: not part of this build
    return digest.hexdigest()


def _componentize_version() -> str:
    try:
        return metadata.version("componentize-py")
    except metadata.PackageNotFoundError:
        raise ConfigError("wasinn build needs componentize-py: pip install 'wasinn[build]'") from None


def _componentize_command() -> str:
    beside = Path(sys.executable).parent / COMPONENTIZE_PY
    if beside.is_file():
        return str(beside)
    found = shutil.which(COMPONENTIZE_PY)
    if found is None:
        raise ConfigError("wasinn build needs componentize-py: pip install 'wasinn[build]'")
    return found


def build(
    app: str | Path,
    output: str | Path,
    *,
    paths: Sequence[str | Path] = (),
    versions: Sequence[str] = (NN_VERSIONS[0],),
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> bool:
    """Build ``app`` (a Python file defining ``Run``) into the component ``output``.

    ``paths`` are more directories for imports (the app's own directory and ``wasinn_guest``
    are always there). Returns True when the component came from the cache.
    """
    app_path = Path(app).resolve()
    if not app_path.is_file() or app_path.suffix != ".py":
        raise ConfigError(f"{app}: expected a Python file (app.py)")
    if app_path.stem in {"wit_world", "wasinn_guest"}:
        raise ConfigError(f"{app}: the app module must not be named {app_path.stem!r}")
    unknown = [version for version in versions if version not in NN_VERSIONS]
    if unknown or not versions:
        raise ConfigError(f"unknown wasi:nn version(s) {unknown}; known: {', '.join(NN_VERSIONS)}")
    if not (GUEST_PYTHON / "wasinn_guest" / "__init__.py").is_file():
        raise ConfigError(
            f"the wasinn_guest package is not at {GUEST_PYTHON}; "
            "build from a wasinn checkout or install a wheel built by `pip wheel .`"
        )
    search = [app_path.parent, *(Path(p).resolve() for p in paths), GUEST_PYTHON]
    target = Path(output)
    directory = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "guests"
    cached = directory / f"{build_key(app_path, search, versions)}.wasm"
    if cache and cached.is_file():
        _copy(cached, target)
        return True
    with tempfile.TemporaryDirectory(prefix="wasinn-build-") as scratch:
        wit = Path(scratch) / "wit"
        _stage_wit(wit, versions)
        built = Path(scratch) / "app.wasm"
        command = [_componentize_command(), "-q", "-d", str(wit), "-w", "wasinn:app/command", "componentize"]
        for path in search:
            command += ["-p", str(path)]
        command += [app_path.stem, "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if result.returncode != 0 or not built.is_file():
            detail = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
            raise ModuleError(f"componentize-py could not build {app}:\n{detail}")
        if cache:
            _copy(built, cached)
        _copy(built, target)
    return False


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
