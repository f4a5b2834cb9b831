"""The `wasinn` command group: version, help, lazy subcommands, backends."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click
import pytest
import wasmtime
from click.testing import CliRunner

from conftest import wasinn_cli
from wasinn import BackendInfo, Runtime, __version__, backends
from wasinn.abi._wasmedge import CODE_OF_ENCODING
from wasinn.cli import DEBUG_ENV, main
from wasinn.cli._errors import FAILED, INTERNAL_ERROR, USAGE_ERROR
from wasinn.core._paths import CACHE_ENV
from wasinn.tools.models import MODELS_ENV


def test_version_and_help_list_every_command() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output == f"wasinn, version {__version__}\n"
    help_text = runner.invoke(main, ["--help"]).output
    for command in ("run", "im2tensor", "visualize", "demo", "models", "bench", "backends", "build"):
        assert f"  {command} " in help_text


def test_backends_command_matches_the_api() -> None:
    lines = CliRunner().invoke(main, ["backends"]).output.splitlines()
    assert len(lines) == len(backends())
    for line, info in zip(lines, backends(), strict=True):
        assert line.split()[:2] == [str(CODE_OF_ENCODING[info.encoding]), info.name]
        assert ("installed" in line) == info.installed


# ---------------------------------------------------------------- one error line, documented codes

FAILURES = [
    # (arguments, exit code, what the one line names)
    (["run", "no-such.wasm"], USAGE_ERROR, "no-such.wasm: no such file"),
    (["run", "--memory-page-limit", "lots", "x.wasm"], USAGE_ERROR, "'--memory-page-limit'"),
    (["run"], USAGE_ERROR, "Missing argument 'MODULE.wasm'"),
    (["im2tensor", "--image", "no.png", "--dims", "4x4x3xfp32", "--tensor", "t"], USAGE_ERROR, "no.png"),
    (["im2tensor", "--image", "no.png"], USAGE_ERROR, "Missing option '--dims'"),
    (["visualize", "--image", "no.jpg", "--tensor", "no.bin", "--output", "o.png"], USAGE_ERROR, "no.bin"),
    (["demo", "no-such-example"], USAGE_ERROR, "'no-such-example'"),
    (["demo", "road-segmentation", "--no-download", "--out", "out"], FAILED, "road-segmentation-adas-0001"),
    (["models", "path", "no-such-model"], USAGE_ERROR, "unknown model 'no-such-model'"),
    (["models", "path", "birds-v1"], FAILED, "wasinn models download birds-v1"),
    (["models", "download", "no-such-model"], USAGE_ERROR, "unknown model 'no-such-model'"),
    (["bench", "--case", "no-such-case"], USAGE_ERROR, "no case matches no-such-case"),
    (["backends", "--verbose"], USAGE_ERROR, "No such option '--verbose'"),
    (["no-such-command"], USAGE_ERROR, "No such command 'no-such-command'"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), FAILURES, ids=[" ".join(f[0]) for f in FAILURES])
def test_every_subcommand_fails_with_one_error_line_and_its_code(
    tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    empty = tmp_path / "empty"  # no model anywhere on the search path, nothing cached
    empty.mkdir()
    env = {**os.environ, MODELS_ENV: str(empty), CACHE_ENV: str(empty)}
    result = wasinn_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("wasinn demo ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wasinn: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_an_internal_error_is_one_line_and_exit_70(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wasinn bug (here: the backend table breaks) is not the person's fault: code 70."""

    def broken() -> list[BackendInfo]:
        raise RuntimeError("the table is gone")

    # The module, not the function ``wasinn.backends`` that the package re-exports.
    monkeypatch.setattr(importlib.import_module("wasinn.backends"), "backends", broken)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == INTERNAL_ERROR
    assert result.stderr == (
        "wasinn: error: internal error: RuntimeError: the table is gone"
        f" (set {DEBUG_ENV}=1 for the traceback)\n"
    )
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert isinstance(CliRunner().invoke(main, ["backends"]).exception, RuntimeError)


def test_bare_wasinn_shows_the_help() -> None:
    result = wasinn_cli()
    assert result.returncode == USAGE_ERROR
    assert "Commands:" in result.stdout + result.stderr


def test_run_internal_error_is_one_line_or_the_traceback_with_v(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = tmp_path / "empty.wasm"
    module.write_bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))

    def broken(*_: object) -> int:
        raise RuntimeError("the runtime broke")

    monkeypatch.setattr(Runtime, "run", broken)
    quiet = CliRunner().invoke(main, ["run", str(module)])
    assert quiet.exit_code == INTERNAL_ERROR
    assert quiet.stderr == (
        "wasinn: error: internal error: RuntimeError: the runtime broke (run with -v for the traceback)\n"
    )
    loud = CliRunner().invoke(main, ["run", "-v", str(module)])
    assert loud.exit_code == INTERNAL_ERROR
    assert loud.stderr.startswith("Traceback") and "RuntimeError: the runtime broke" in loud.stderr


def test_every_limit_is_a_flag_of_run_and_serve() -> None:
    """One declaration (host.Limits' fields) makes the options of both commands."""
    import dataclasses

    from wasinn.cli.serve import serve_command
    from wasinn.host import Limits

    flags = [field.metadata["flag"] for field in dataclasses.fields(Limits)]
    assert len(flags) == 7
    for command in (main.get_command(click_context(), "run"), serve_command):
        assert command is not None
        declared = {option for parameter in command.params for option in parameter.opts}
        assert set(flags) <= declared, command.name


def click_context() -> click.Context:
    return click.Context(main)


def test_a_model_size_cap_from_the_command_line_reaches_the_guest_as_errno(
    tiny_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    from conftest import guest_wasm, stage

    xml, weights = stage(tmp_path, *tiny_ir)
    np_input = tmp_path / "x.bin"
    np_input.write_bytes(b"\0" * 16)
    args = ["--model", xml, "--model", weights, "--input", "0:f32:1x4:x.bin"]
    capped = wasinn_cli(
        "run", "--dir", ".:.", "--max-model-bytes", "100", str(guest_wasm("nn-run")), *args, cwd=tmp_path
    )
    assert capped.returncode == 5, capped.stderr  # nn-run exits with the errno: runtime_error
    assert "exceed the limit of 100 bytes" in capped.stderr
    free = wasinn_cli("run", "--dir", ".:.", str(guest_wasm("nn-run")), *args, cwd=tmp_path)
    assert free.returncode == 0, free.stderr
