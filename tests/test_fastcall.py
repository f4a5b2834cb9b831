"""The public ``Linker.define_func`` path that ``abi/_fastcall.py`` falls back to when
wasmtime-py's private unchecked-callback bindings are missing (another wasmtime-py).

Every other test runs on the fast path, so here ``_DEFINE`` is taken away and a real guest
must still get the same errno values, outputs and exit codes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wasmtime

from conftest import guest_wasm, native_infer, stage
from wasinn import Errno, GuestExit, Runtime
from wasinn.abi import _fastcall
from wasinn.abi.ephemeral import SIGNATURES
from wat_guests import compile_wat

pytestmark = pytest.mark.usefixtures("openvino_available")


def exit_wat(code: int) -> str:
    return f"""
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const {code}))))
"""


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Forces the fallback; yields the names defined through ``define_func``."""
    defined: list[str] = []
    real_define_func = wasmtime.Linker.define_func

    def counting_define_func(linker: wasmtime.Linker, module: str, name: str, *rest: object) -> None:
        defined.append(f"{module}.{name}")
        real_define_func(linker, module, name, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(_fastcall, "_DEFINE", None)
    monkeypatch.setattr(wasmtime.Linker, "define_func", counting_define_func)
    yield defined


def test_nn_run_gets_results_and_errno_through_define_func(
    fallback: list[str], tiny_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    xml, weights = stage(tmp_path, *tiny_ir)
    x = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)
    x.tofile(tmp_path / "in.bin")
    runtime = Runtime(cache=False, dirs=[f".:{tmp_path}"])
    args = ["--model", xml, "--model", weights, "--input", "0:f32:1x4:in.bin", "--output", "0:out.bin"]
    assert runtime.run(guest_wasm("nn-run"), args) == 0
    assert "wasi_ephemeral_nn.compute" in fallback and "wasi_snapshot_preview1.proc_exit" in fallback
    got = np.fromfile(tmp_path / "out.bin", np.float32).reshape(1, 4)
    np.testing.assert_array_equal(got, native_infer(tiny_ir[0], [x])[0])
    # A failing call comes back as its errno, which nn-run exits with (index 7 does not exist).
    wrong = ["--model", xml, "--model", weights, "--input", "7:f32:1x4:in.bin"]
    assert runtime.run(guest_wasm("nn-run"), wrong) == Errno.INVALID_ARGUMENT


def test_proc_exit_codes_above_125_survive_the_fallback(fallback: list[str], tmp_path: Path) -> None:
    module = tmp_path / "exit.wasm"
    module.write_bytes(wasmtime.wat2wasm(exit_wat(200)))
    assert Runtime(cache=False).run(module) == 200
    assert fallback == ["wasi_snapshot_preview1.proc_exit", *(f"wasi_ephemeral_nn.{n}" for n in SIGNATURES)]


def test_threads_keep_their_own_exit_codes_on_the_fallback(fallback: list[str]) -> None:
    """wasmtime-py keeps a host function's exception in one slot for all threads; the
    fallback hands it to the calling instance instead, as the fast path does."""
    runtime = Runtime(cache=False)
    modules = {code: compile_wat(exit_wat(code)) for code in (3, 130, 200, 255)}
    seen: dict[int, list[int | None]] = {code: [] for code in modules}

    def guest(code: int) -> None:
        for _ in range(40):
            with runtime.instantiate(modules[code]) as instance:
                try:
                    instance.call("_start")
                    seen[code].append(None)  # returned without exiting
                except GuestExit as exit_:
                    seen[code].append(exit_.code)

    threads = [threading.Thread(target=guest, args=(code,)) for code in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {code: [code] * 40 for code in modules}
