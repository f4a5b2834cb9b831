"""abi/wit.py's linker tables against the .wit files wasinn ships (src/wasinn/wit/).

Every interface the shipped WIT declares for the host (wasi:nn at each version, wasinn's
chunks) must be defined by ``WitNN.define`` with exactly its resources, constructors, methods
and functions, each taking the declared number of parameters, and nothing else: a function
missing from the linker fails a guest's instantiation, and one the WIT lacks is dead or
misspelt. The tables are read by handing ``define`` a linker that records what it is given
(wasmtime-py's linker cannot list its definitions).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from wasinn.abi import wit
from wasinn.host.component import RUN_INTERFACE

WIT_DIR = REPO / "src" / "wasinn" / "wit"


@dataclass
class Interface:
    resources: set[str] = field(default_factory=set)
    functions: dict[str, int] = field(default_factory=dict)  # canonical name → parameter count


def _top_level_count(params: str) -> int:
    """Parameters in ``a: list<tuple<string, t>>, b: u32``: commas outside angle brackets."""
    if not params.strip():
        return 0
    depth, count = 0, 1
    for char in params:
        depth += {"<": 1, ">": -1}.get(char, 0)
        count += char == "," and depth == 0
    return count


def _blocks(text: str, keyword: str) -> Iterator[tuple[str, str]]:
    """``keyword NAME { body }`` at the top of ``text``, with braces nested in the body."""
    for match in re.finditer(rf"\b{keyword}\s+([\w-]+)\s*\{{", text):
        depth, start = 1, match.end()
        position = start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        yield match.group(1), text[start : position - 1]


def parse_wit(path: Path) -> dict[str, Interface]:
    """The interfaces of one .wit file, by their full name (``wasi:nn/tensor@0.2.0-rc-…``)."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    package = re.search(r"\bpackage\s+([\w:-]+)@([\w.-]+)\s*;", text)
    assert package, f"{path}: no package"
    namespace, version = package.groups()
    interfaces: dict[str, Interface] = {}
    for name, body in _blocks(text, "interface"):
        interface = interfaces[f"{namespace}/{name}@{version}"] = Interface()
        outside = body
        for resource, members in _blocks(body, "resource"):
            interface.resources.add(resource)
            outside = outside.replace(members, "")
            for params in re.findall(r"\bconstructor\s*\(([^;]*)\)\s*;", members):
                interface.functions[f"[constructor]{resource}"] = _top_level_count(params)
            for method, params in re.findall(r"([\w-]+)\s*:\s*func\s*\(([^)]*)\)", members):
                interface.functions[f"[method]{resource}.{method}"] = _top_level_count(params) + 1  # self
        for function, params in re.findall(r"([\w-]+)\s*:\s*func\s*\(([^)]*)\)", outside):
            interface.functions[function] = _top_level_count(params)
    return interfaces


class RecordingLinker:
    """Just enough of wasmtime-py's component Linker for ``WitNN.define``: it records."""

    def __init__(self) -> None:
        self.instances: dict[str, Interface] = {}
        self.destructors: list[Callable[..., Any]] = []

    @contextmanager
    def root(self) -> Iterator[RecordingLinker]:
        yield self

    @contextmanager
    def add_instance(self, name: str) -> Iterator[RecordingInstance]:
        assert name not in self.instances, f"{name} defined twice"
        self.instances[name] = Interface()
        yield RecordingInstance(self, self.instances[name])


@dataclass
class RecordingInstance:
    linker: RecordingLinker
    interface: Interface

    def add_resource(self, name: str, kind: Any, destructor: Callable[..., Any]) -> None:
        assert name not in self.interface.resources
        self.interface.resources.add(name)
        self.linker.destructors.append(destructor)

    def add_func(self, name: str, function: Callable[..., Any]) -> None:
        assert name not in self.interface.functions, f"{name} defined twice"
        parameters = list(inspect.signature(function).parameters)
        assert parameters[0] == "store", f"{name}: host functions take the store first"
        self.interface.functions[name] = len(parameters) - 1


def shipped() -> dict[str, Interface]:
    interfaces: dict[str, Interface] = {}
    for path in sorted(WIT_DIR.glob("*/*.wit")):
        if path.parent.name != "cli":  # wasi:cli is the guest's export, checked below
            interfaces.update(parse_wit(path))
    return interfaces


def defined() -> RecordingLinker:
    linker = RecordingLinker()
    wit.WitNN(None, lambda encoding: True).define(linker)  # type: ignore[arg-type]
    return linker


def test_every_shipped_version_is_served() -> None:
    versions = {path.parent.name.removeprefix("nn-") for path in WIT_DIR.glob("nn-*/wasi-nn.wit")}
    assert {v.removeprefix("0.2.0-rc-") for v in wit.VERSIONS} == versions
    assert len(versions) == 3


@pytest.mark.parametrize("name", sorted(shipped()))
def test_an_interface_is_defined_exactly(name: str) -> None:
    declared, linked = shipped()[name], defined().instances.get(name)
    assert linked is not None, f"the linker does not define {name}"
    assert linked.resources == declared.resources
    missing = {f: n for f, n in declared.functions.items() if f not in linked.functions}
    extra = {f: n for f, n in linked.functions.items() if f not in declared.functions}
    assert (missing, extra) == ({}, {})
    assert linked.functions == declared.functions  # and each takes what the WIT declares


def test_the_linker_defines_nothing_the_wit_lacks() -> None:
    linker = defined()
    assert set(linker.instances) == set(shipped())
    for destructor in linker.destructors:
        assert list(inspect.signature(destructor).parameters) == ["store", "rep"]


def test_the_run_export_the_host_calls_is_the_shipped_one() -> None:
    [(name, interface)] = parse_wit(WIT_DIR / "cli" / "run.wit").items()
    assert name == RUN_INTERFACE
    assert interface.functions == {"run": 0}


def test_the_parser_reads_what_it_checks() -> None:
    """The parser itself, on the 06-25 differences (spec wit-wasi-nn.md §5)."""
    old = parse_wit(WIT_DIR / "nn-2024-06-25" / "wasi-nn.wit")
    new = parse_wit(WIT_DIR / "nn-2024-10-28" / "wasi-nn.wit")
    assert old["wasi:nn/errors@0.2.0-rc-2024-06-25"].functions["[constructor]error"] == 2
    assert "[constructor]error" not in new["wasi:nn/errors@0.2.0-rc-2024-10-28"].functions
    inference = new["wasi:nn/inference@0.2.0-rc-2024-10-28"]
    assert inference.functions == {"[method]graph-execution-context.compute": 2}
    assert old["wasi:nn/inference@0.2.0-rc-2024-06-25"].functions == {
        "[method]graph-execution-context.set-input": 3,
        "[method]graph-execution-context.compute": 1,
        "[method]graph-execution-context.get-output": 2,
    }
    assert new["wasi:nn/graph@0.2.0-rc-2024-10-28"].functions["load"] == 3
