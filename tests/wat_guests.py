"""Tiny WAT guests for ABI tests, generated from the import table so they never drift."""

from __future__ import annotations

import wasmtime

from wasinn.abi.ephemeral import MODULE, SIGNATURES
from wasinn.runtime import shared_engine


def probe_wat(*, memory_pages: int | None = 1) -> str:
    """A module that re-exports every ``wasi_ephemeral_nn`` import as ``nn_<name>``.

    Tests write guest memory directly and call the exports, so each call crosses
    wasm → host exactly as a compiled guest's would.
    """
    lines = ["(module"]
    for name, arity in SIGNATURES.items():
        params = " ".join(["i32"] * arity)
        lines.append(f'  (import "{MODULE}" "{name}" (func ${name} (param {params}) (result i32)))')
    if memory_pages is not None:
        lines.append(f'  (memory (export "memory") {memory_pages})')
    for name, arity in SIGNATURES.items():
        params = " ".join(["i32"] * arity)
        gets = " ".join(f"local.get {i}" for i in range(arity))
        lines.append(f'  (func (export "nn_{name}") (param {params}) (result i32) {gets} call ${name})')
    lines.append('  (func (export "_start"))')
    lines.append(")")
    return "\n".join(lines)


def compile_wat(source: str) -> wasmtime.Module:
    return wasmtime.Module(shared_engine(), wasmtime.wat2wasm(source))
