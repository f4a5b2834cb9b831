"""The `wasinn` command group: version, help, lazy subcommands, backends."""

from __future__ import annotations

from click.testing import CliRunner

from wasinn import __version__, backends
from wasinn.abi._wasmedge import CODE_OF_ENCODING
from wasinn.cli import main


def test_version_and_help_list_every_command() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output == f"wasinn, version {__version__}\n"
    help_text = runner.invoke(main, ["--help"]).output
    for command in ("run", "im2tensor", "visualize", "demo", "models", "bench", "backends"):
        assert f"  {command} " in help_text


def test_backends_command_matches_the_api() -> None:
    lines = CliRunner().invoke(main, ["backends"]).output.splitlines()
    assert len(lines) == len(backends())
    for line, info in zip(lines, backends(), strict=True):
        assert line.split()[:2] == [str(CODE_OF_ENCODING[info.encoding]), info.name]
        assert ("installed" in line) == info.installed
