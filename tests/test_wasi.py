"""WASI preview 1 basics through `wasinn run`: args, env, --dir, stdio, exit codes, traps, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import guest_wasm, wasinn_cli
from wasinn import ConfigError, GuestTrap, ModuleError, Runtime


def wasinn(*args: str, cwd: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return wasinn_cli(*args, cwd=cwd, stdin=stdin, timeout=120)


@pytest.fixture(scope="module")
def probe_wasm() -> Path:
    return guest_wasm("wasi-probe")


def test_args_pass_through_with_program_name_first(probe_wasm: Path) -> None:
    result = wasinn("run", str(probe_wasm), "args", "--dir", "x y")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"0={probe_wasm}", "1=args", "2=--dir", "3=x y"]


def test_env_is_set_and_nothing_else_leaks(probe_wasm: Path) -> None:
    result = wasinn("run", "--env", "GREETING=hello=world", str(probe_wasm), "env", "GREETING")
    assert (result.returncode, result.stdout) == (0, "hello=world\n")
    leaked = wasinn("run", str(probe_wasm), "env", "PATH")
    assert (leaked.returncode, leaked.stdout) == (1, "(unset)\n")


def test_dir_maps_guest_to_host_for_reading_and_writing(probe_wasm: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from the host")
    read = wasinn("run", "--dir", f"/data:{host}", str(probe_wasm), "cat", "/data/in.txt")
    assert (read.returncode, read.stdout) == (0, "from the host")
    wrote = wasinn("run", "--dir", f"/data:{host}", str(probe_wasm), "write", "/data/out.txt", "guest")
    assert wrote.returncode == 0, wrote.stderr
    assert (host / "out.txt").read_text() == "guest"


def test_dot_maps_the_working_directory(probe_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("cwd")
    for spelling in (".:.", "."):
        result = wasinn("run", "--dir", spelling, str(probe_wasm), "cat", "here.txt", cwd=tmp_path)
        assert (result.returncode, result.stdout) == (0, "cwd"), spelling


def test_readonly_dir_refuses_writes(probe_wasm: Path, tmp_path: Path) -> None:
    result = wasinn("run", "--dir", f"/d:{tmp_path}:readonly", str(probe_wasm), "write", "/d/x", "no")
    assert result.returncode == 4
    assert not (tmp_path / "x").exists()


def test_files_outside_mapped_dirs_are_invisible(probe_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("no")
    inner = tmp_path / "inner"
    inner.mkdir()
    for path in ("/d/../secret", str(tmp_path / "secret"), "secret"):
        result = wasinn("run", "--dir", f"/d:{inner}", str(probe_wasm), "cat", path)
        assert result.returncode == 3, path
        assert result.stdout == ""


def test_stdin_passes_through(probe_wasm: Path) -> None:
    result = wasinn("run", str(probe_wasm), "stdin", stdin="line one\nline two\n")
    assert (result.returncode, result.stdout) == (0, "line one\nline two\n")


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_proc_exit_is_the_process_exit_code(probe_wasm: Path, code: int) -> None:
    assert wasinn("run", str(probe_wasm), "exit", str(code)).returncode == code


def test_trap_prints_one_line_and_fails(probe_wasm: Path) -> None:
    result = wasinn("run", str(probe_wasm), "trap")
    assert result.returncode == 134
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "wasinn: error: guest trapped: wasm `unreachable` instruction executed in function "
    )


def test_missing_module_is_one_line_exit_2(tmp_path: Path) -> None:
    result = wasinn("run", str(tmp_path / "nope.wasm"))
    assert result.returncode == 2
    assert result.stderr == f"wasinn: error: {tmp_path / 'nope.wasm'}: no such file\n"


def test_invalid_module_is_one_line_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\0asm garbage")
    result = wasinn("run", "--no-cache", str(bogus))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"wasinn: error: {bogus} is not a valid WebAssembly module")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--dir", "/nonexistent-dir-for-wasinn", "does not exist"),
        ("--dir", "a:b:c", "bad --dir"),
        ("--env", "NOVALUE", "bad --env"),
        ("--nn-preload", "m:openvino", "bad --nn-preload"),
        ("--nn-preload", "m:tflite:cpu:x", "unknown encoding 'tflite'"),
        ("--nn-preload", "m:openvino:fpga:x", "unknown target 'fpga'"),
        ("--nn-preload", "m:openvino:cpu:/missing.xml:/missing.bin", "cannot read /missing.xml"),
    ],
)
def test_bad_options_are_one_line_exit_2(probe_wasm: Path, option: str, value: str, message: str) -> None:
    result = wasinn("run", option, value, str(probe_wasm), "args")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_python_api_returns_exit_code_and_raises_typed_errors(probe_wasm: Path, tmp_path: Path) -> None:
    assert Runtime().run(probe_wasm, ["exit", "9"]) == 9
    with pytest.raises(GuestTrap, match="unreachable"):
        Runtime().run(probe_wasm, ["trap"])
    with pytest.raises(ModuleError, match="cannot read"):
        Runtime().run(tmp_path / "missing.wasm")
    with pytest.raises(ConfigError, match="bad --env"):
        Runtime(env=["x"])


def test_second_run_uses_the_compiled_module_cache(probe_wasm: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    runtime = Runtime(cache_dir=cache)
    assert runtime.run(probe_wasm, ["exit", "0"]) == 0
    (entry,) = cache.iterdir()
    # Swap the cached artifact for a different program's: if the next run uses it, the
    # module was not compiled again.
    other = Runtime(cache=False).instantiate(guest_wasm("nn-run")).instance
    del other
    from wasmtime import Module

    from wasinn.host import shared_engine

    entry.write_bytes(Module.from_file(shared_engine(), str(guest_wasm("nn-run"))).serialize())
    result = Runtime(cache_dir=cache).run(probe_wasm, ["args"])
    assert result == 64  # nn-run's usage error: the cached (swapped) module ran
    assert Runtime(cache=False).run(probe_wasm, ["args"]) == 0


def test_no_cache_flag_compiles_afresh(probe_wasm: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WASINN_CACHE_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "wasinn", "run", "--no-cache", str(probe_wasm), "args"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "modules").exists()
    subprocess.run(
        [sys.executable, "-m", "wasinn", "run", str(probe_wasm), "args"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert len(list((tmp_path / "modules").iterdir())) == 1


def test_python_api_redirects_the_guest_streams_to_files(probe_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("fed from a file\n")
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    runtime = Runtime(stdin=tmp_path / "in.txt", stdout=out, stderr=err)
    assert runtime.run(probe_wasm, ["stdin"]) == 0
    assert out.read_text() == "fed from a file\n"
    assert runtime.run(probe_wasm, ["nonsense"]) == 64
    assert err.read_text() == "wasi-probe: unknown action nonsense\n"
