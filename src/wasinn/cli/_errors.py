"""The exit codes and the one error line every ``wasinn`` subcommand uses (docs/usage.md).

Library code raises :class:`wasinn.core.WasinnError`; a subcommand turns it into
:class:`CommandError` (exit 1) or :class:`CommandUsageError` (exit 2), or, for ``run``, into
the guest's own codes (124 a limit, 134 a trap). The ``wasinn`` group turns click's usage
errors and any unexpected exception into the same single ``wasinn: error: …`` line on stderr.
"""

from __future__ import annotations

from typing import IO, Any

import click

FAILED = 1  # the command could not do its work (a download failed, the demo's guest failed)
USAGE_ERROR = 2  # the person's mistake: a bad option or value, a missing or unusable input file
INTERNAL_ERROR = 70  # EX_SOFTWARE: a wasinn bug
LIMIT_EXIT = 124  # as coreutils' timeout: a --time-limit or --gas-limit ran out
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
TRAP_EXIT = 134  # what wasmtime's CLI returns for a trapping guest (128 + SIGABRT)

PREFIX = "wasinn: error: "


def error_line(message: str) -> str:
    """``wasinn: error: message`` on one line, whatever the message holds."""
    return PREFIX + " ".join(message.split())


class CommandError(click.ClickException):
    """A subcommand could not do its work: one ``wasinn: error:`` line on stderr, exit 1."""

    exit_code = FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(error_line(self.format_message()), file=file, err=file is None)


class CommandUsageError(CommandError):
    """The person's mistake found by the subcommand (a missing or unreadable input, an unknown
    name): the same one line, exit 2."""

    exit_code = USAGE_ERROR


def usage_line(error: click.UsageError) -> str:
    """click's usage error (usually several lines) as one line that points at ``--help``."""
    where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
    return error_line(error.format_message() + where)


__all__ = [
    "FAILED",
    "INTERNAL_ERROR",
    "INTERRUPTED",
    "LIMIT_EXIT",
    "PREFIX",
    "TRAP_EXIT",
    "USAGE_ERROR",
    "CommandError",
    "CommandUsageError",
    "error_line",
    "usage_line",
]
