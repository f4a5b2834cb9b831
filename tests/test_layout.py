"""The package's shape (docs/architecture.md): rooms by audience, imports pointing down only.

Read from the source with ``ast``, so a new module that imports upwards, a loop between two
modules, a module left in the package root, or a new use of wasmtime-py's private API fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wasinn"

# Bottom up; a module may import its own layer and the ones below.
LAYERS = {
    "core": 1,
    "backends": 2,
    "testing": 2,
    "abi": 3,
    "host": 4,
    "tools": 5,
    "rpc": 5,
    "serve": 6,
    "bench": 7,
    "cli": 8,
    "warm": 8,  # the warm host: the command line's own layer (it parses with cli's run)
    "__init__": 9,
    "__main__": 9,
}
ROOT_MODULES = {"__init__.py", "__main__.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, typing_only: bool = True) -> Iterator[tuple[int, str]]:
    """Every ``wasinn`` module the file imports (at any depth: lazy imports count too);
    without ``typing_only``, not those under ``if TYPE_CHECKING:`` (no import at run time)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # "from wasinn.abi import _ffi" names a module too
                yield node.lineno, f"{node.module}.{alias.name}"


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "wasinn":
        return None
    return LAYERS.get(parts[1] if len(parts) > 1 else "__init__")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_root_holds_only_the_entry_points_and_folders() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ROOT_MODULES)
    assert loose == []
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert set(folders) <= set(LAYERS), f"a folder with no layer in docs/architecture.md: {folders}"


def test_imports_point_down_only() -> None:
    upward = []
    for path in sources():
        own = layer(module_name(path))
        assert own is not None, path
        for line, target in imports(path):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} (layer {theirs} > {own})")
    assert upward == []


def test_no_two_modules_import_each_other() -> None:
    """At run time: a module may name another's types under ``TYPE_CHECKING`` only."""
    known = {module_name(p): p for p in sources()}
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for _, target in imports(path, typing_only=False):
            if target in known and target != name:
                edges[name].add(target)
    loops = []
    for name, targets in edges.items():
        for target in targets:
            # a package __init__ re-exporting its own modules is not a loop
            if name in edges.get(target, set()) and not target.startswith(name + ".") and name < target:
                loops.append((name, target))
    assert loops == []


def test_only_abi_ffi_touches_wasmtime_private_api() -> None:
    users = []
    for path in sources():
        for line, target in imports(path):
            private = target.startswith("wasmtime.") and any(p.startswith("_") for p in target.split(".")[1:])
            if private and path.relative_to(PACKAGE).as_posix() != "abi/_ffi.py":
                users.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert users == []


def test_library_code_raises_no_click_errors() -> None:
    """Only the CLI turns errors into exit codes: click is imported by cli/ alone."""
    users = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in sources()
        if path.relative_to(PACKAGE).parts[0] != "cli"
        for line, target in imports(path)
        if target == "click" or target.startswith("click.")
    ]
    assert users == []
