"""Tiny WAT guests for ABI tests, generated from the import table so they never drift."""

from __future__ import annotations

import wasmtime

from wasinn.abi.ephemeral import MODULE, SIGNATURES
from wasinn.host import shared_engine


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


def sleeper_wat(seconds: float) -> str:
    """A guest stuck in a host call: it sleeps ``seconds`` in WASI's ``poll_oneoff`` (one
    relative clock subscription), then runs a short loop and exits 0.

    The sleep runs in wasmtime's native code, where neither an epoch deadline (the time
    limit) nor a server's interruption reaches: the position of a native inference whose
    framework ignores ``cancel()``. The loop after it is wasm code, where both do.
    """
    nanos = int(seconds * 1e9)
    return f"""
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    ;; subscription at 0: userdata, tag 0 (clock) at 8, clock id at 16, timeout at 24, flags 0 (relative)
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {nanos}))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (loop $again
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 100000))))))
"""
