"""Tiny WAT guests for ABI tests, generated from the import table so they never drift."""

from __future__ import annotations

import struct
from collections.abc import Sequence

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


def _data(raw: bytes) -> str:
    return "".join(f"\\{byte:02x}" for byte in raw)


def nn_guest_wat(
    model: bytes = b"",
    *,
    name: str = "",
    x: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
    read_stdin: bool = False,
    computes: int = 1,
    exit_code: int = 0,
) -> str:
    """A WASI command running one f32[1,4] model through ``wasi_ephemeral_nn``, as a C guest
    would: ``load`` of ``model`` (encoding 0, CPU) or ``load_by_name`` of ``name``, a context,
    then ``computes`` times set_input → compute → get_output, and the output's bytes to stdout.

    The input is ``x``, or with ``read_stdin`` the first 16 bytes of stdin. A call that fails
    ends the guest with ``proc_exit(errno)``, so its exit code is the exact errno; otherwise it
    exits with ``exit_code``.
    """
    x_bytes = struct.pack("<4f", *x)
    if name:
        blob = name.encode()
        load = f"(call $load_by_name (i32.const 1024) (i32.const {len(blob)}) (i32.const 64))"
    else:
        blob = model
        load = "(call $load (i32.const 96) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 64))"
    pages = 1 + (1024 + len(blob)) // 65536
    stdin = (
        "(i32.store (i32.const 0) (i32.const 256)) (i32.store (i32.const 4) (i32.const 16))\n"
        "    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 76)))"
        if read_stdin
        else ""
    )
    return f"""
(module
  (import "wasi_ephemeral_nn" "load" (func $load (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
  (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") {pages})
  ;; builder array at 96: one (ptr, len); tensor record at 128: dims 160, rank 2, f32, data 256, 16 bytes
  (data (i32.const 96) "{_data(struct.pack("<II", 1024, len(blob)))}")
  (data (i32.const 128) "{_data(struct.pack("<IIIII", 160, 2, 1, 256, 16))}")
  (data (i32.const 160) "{_data(struct.pack("<II", 1, 4))}")
  (data (i32.const 256) "{_data(x_bytes)}")
  (data (i32.const 1024) "{_data(blob)}")
  (func $check (param $errno i32)
    (if (local.get $errno) (then (call $exit (local.get $errno)))))
  (func (export "_start") (local $n i32)
    {stdin}
    (call $check {load})
    (call $check (call $init (i32.load (i32.const 64)) (i32.const 68)))
    (local.set $n (i32.const {computes}))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (call $check (call $set_input (i32.load (i32.const 68)) (i32.const 0) (i32.const 128)))
        (call $check (call $compute (i32.load (i32.const 68))))
        (call $check (call $get_output (i32.load (i32.const 68)) (i32.const 0)
                                       (i32.const 512) (i32.const 16) (i32.const 72)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.store (i32.const 0) (i32.const 512)) (i32.store (i32.const 4) (i32.load (i32.const 72)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 76)))
    (if (i32.const {exit_code}) (then (call $exit (i32.const {exit_code}))))))
"""


def spinner_wat() -> str:
    """A guest that spins in wasm code forever: only a time limit or an interruption stops it."""
    return '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'


def trap_wat() -> str:
    """A guest that reaches ``unreachable`` in its function ``boom``."""
    return """
(module
  (memory (export "memory") 1)
  (func $boom (export "boom") unreachable)
  (func (export "_start") call $boom))
"""
