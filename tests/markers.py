"""Markers that select what they say, applied at collection (docs/testing.md, "Markers").

``openvino``, ``shared_data`` and ``gpu`` follow from what a test reaches: a test is marked
when its body, a fixture it uses, or a helper it calls (in its module, conftest, or a tests
module it imports from, followed to any depth) names a gate of conftest.py (``shared_file``,
``openvino_available``, ``requires_gpu`` …). A gate called only at run time is still seen,
so a new test that reads shared data is marked without anyone remembering to. ``serve`` and
``ray`` follow from the file; ``slow`` is measured and written on the test itself.

A fixture with ``params`` is not followed: what one param needs is written on that param
(``pytest.param(..., marks=pytest.mark.shared_data)``), so the others stay unmarked.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# marker → the names whose use means a test needs what the marker says
TRIGGERS: dict[str, frozenset[str]] = {
    "shared_data": frozenset({"shared_file", "shared_data", "shared_data_dir"}),
    "openvino": frozenset({"openvino_available", "import:openvino"}),
    "gpu": frozenset({"requires_gpu"}),
}


@functools.cache
def _module(path: Path) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """(every function in ``path``, by name → the names it uses; the tests modules it imports
    from). A fixture with ``params`` uses nothing here: its params carry their own marks."""
    tree = ast.parse(path.read_text(), str(path))
    functions: dict[str, set[str]] = {}
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            used = functions.setdefault(node.name, set())
            if any(
                isinstance(decorator, ast.Call) and any(k.arg == "params" for k in decorator.keywords)
                for decorator in node.decorator_list
            ):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name):
                    used.add(inner.id)
                elif isinstance(inner, ast.Attribute):
                    used.add(inner.attr)
                elif isinstance(inner, ast.arg):
                    used.add(inner.arg)  # a fixture is asked for by parameter name
                elif isinstance(inner, ast.Import | ast.ImportFrom):
                    modules = [alias.name for alias in inner.names] if isinstance(inner, ast.Import) else []
                    if isinstance(inner, ast.ImportFrom) and inner.module:
                        modules = [inner.module]
                    used.update(f"import:{module.split('.')[0]}" for module in modules)
                elif (
                    isinstance(inner, ast.Call)
                    and isinstance(inner.func, ast.Name)
                    and inner.func.id == "require_module"
                    and inner.args
                    and isinstance(inner.args[0], ast.Constant)
                ):
                    used.add(f"import:{inner.args[0].value}")
        elif isinstance(node, ast.ImportFrom) and node.module and (TESTS / f"{node.module}.py").is_file():
            imported.add(node.module)
    return {name: frozenset(used) for name, used in functions.items()}, frozenset(imported)


@functools.cache
def _scope(path: Path) -> dict[str, frozenset[str]]:
    """The functions a test in ``path`` can reach by name: its own, conftest's, and those of
    the tests modules it imports from (its own win over a helper of the same name)."""
    scope: dict[str, frozenset[str]] = {}
    for module in sorted({"conftest", *_module(path)[1]}):
        scope.update(_module(TESTS / f"{module}.py")[0])
    scope.update(_module(path)[0])
    return scope


@functools.cache
def _reaches(path: Path, name: str, marker: str) -> bool:
    scope, seen, todo = _scope(path), set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        used = scope.get(current, frozenset())
        if used & TRIGGERS[marker]:
            return True
        todo.extend(used & scope.keys())
    return False


def apply(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.parent != TESTS:
            continue
        name = getattr(item, "originalname", item.name)
        fixtures = getattr(item, "fixturenames", ())
        for marker, triggers in TRIGGERS.items():
            if item.get_closest_marker(marker) is None and (
                triggers & set(fixtures)
                or _reaches(path, name, marker)
                or any(_reaches(path, fixture, marker) for fixture in fixtures)
            ):
                item.add_marker(marker)
        if path.name.startswith("test_serve") or path.name == "test_pool.py":
            item.add_marker("serve")
        if item.get_closest_marker("ray") is not None and item.get_closest_marker("slow") is None:
            item.add_marker("slow")  # a local Ray cluster takes tens of seconds to start
