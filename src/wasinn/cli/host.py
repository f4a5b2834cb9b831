"""``wasinn host start|stop|status``: the warm host that ``wasinn run`` hands its work to."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from wasinn.cli._errors import (
    INTERNAL_ERROR,
    INTERRUPTED,
    LIMIT_EXIT,
    TRAP_EXIT,
    USAGE_ERROR,
    CommandError,
    error_line,
    usage_line,
)
from wasinn.warm import protocol
from wasinn.warm.client import start_host


def parse_run(argv: Sequence[str]) -> dict[str, Any] | tuple[int, str]:
    """``wasinn run ARGV``'s options as the cold command parses them, or its usage error
    (exit code, line): the warm host answers exactly as ``wasinn run`` would."""
    from wasinn.cli import main, run

    try:
        return run.make_context("run", list(argv), parent=click.Context(main, info_name="wasinn")).params
    except click.UsageError as usage:
        return USAGE_ERROR, usage_line(usage)
    except click.ClickException as failure:
        return failure.exit_code, error_line(failure.format_message())


def outcome(run: Callable[[], int]) -> tuple[int, str | None]:
    """The exit code and error line of ``run`` (a guest run in the warm host), as the cold
    ``wasinn run`` makes them; a Ctrl-C or SIGTERM sent to the client is ``interrupted``."""
    from wasinn.core import GuestCancelled, GuestTrap, LimitExceeded, WasinnError

    try:
        return run(), None
    except GuestCancelled:
        return INTERRUPTED, error_line("interrupted")
    except LimitExceeded as exceeded:
        return LIMIT_EXIT, error_line(str(exceeded))
    except GuestTrap as trap:
        return TRAP_EXIT, error_line(str(trap))
    except WasinnError as err:
        return USAGE_ERROR, error_line(str(err))
    except Exception as err:  # a wasinn bug: one line, as the cold command says it
        return INTERNAL_ERROR, error_line(
            f"internal error: {type(err).__name__}: {err} (run with -v for the traceback)"
        )


@click.group("host")
def host_command() -> None:
    """A warm host that keeps the engine, compiled guests and models loaded, so that
    ``wasinn run`` starts in milliseconds (docs/usage.md, "Warm host")."""


@host_command.command("start")
@click.option("--workers", type=click.IntRange(min=1), help="Guests run at once (default: CPU count).")
def start(workers: int | None) -> None:
    """Start the warm host in the background (nothing to do when it is up)."""
    try:
        answer = protocol.request({"op": "ping"}, timeout=5.0)
        click.echo(f"warm host already running (pid {answer['pid']}, {protocol.socket_path()})")
        return
    except (OSError, protocol.ProtocolError):
        pass
    try:
        pid = start_host(workers=workers)
    except (OSError, TimeoutError, protocol.UnsafeDirectory) as err:
        raise CommandError(f"cannot start the warm host: {err}") from None
    click.echo(f"warm host started (pid {pid}, {protocol.socket_path()})")


@host_command.command("stop")
def stop() -> None:
    """Stop the warm host once its running guests finish."""
    try:
        pid = int(protocol.request({"op": "stop"}, timeout=5.0)["pid"])
    except (OSError, protocol.ProtocolError, KeyError, ValueError):
        holder = _lock_holder()
        if holder is None:
            click.echo("warm host not running" + (" (removed a stale socket)" if _remove_stale() else ""))
            return
        pid = holder
        os.kill(pid, signal.SIGTERM)  # a host that does not speak this version's protocol
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    click.echo(f"warm host stopped (pid {pid})")


@host_command.command("status")
def status() -> None:
    """Show whether the warm host runs, and what it keeps; exit 1 when it does not run."""
    try:
        answer = protocol.request({"op": "status"}, timeout=5.0)
    except (OSError, protocol.ProtocolError):
        pid = _lock_holder()
        if pid is not None:
            click.echo(f"a warm host of another wasinn version runs (pid {pid}): `wasinn host stop` ends it")
        else:
            click.echo(f"warm host not running ({protocol.socket_path()})")
        raise SystemExit(1) from None
    for key, value in answer.items():
        click.echo(f"{key}: {value}")


def _lock_holder() -> int | None:
    """The pid of a host that holds the lock but does not answer (another version), if any."""
    directory = protocol.runtime_dir()
    try:
        with open(os.path.join(directory, protocol.LOCK_NAME), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        pass
    except OSError:
        return None
    try:
        with open(os.path.join(directory, "host.pid")) as file:
            pid = int(file.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            if b"wasinn.warm.daemon" not in file.read():
                return None  # a reused pid: not ours to signal
    except (OSError, ValueError):
        return None
    return pid


def _remove_stale() -> bool:
    """Remove a dead host's socket; only while holding its lock, so never a starting host's."""
    directory = protocol.runtime_dir()
    stale = protocol.socket_path(directory)
    if not os.path.exists(stale):
        return False
    try:
        with open(os.path.join(directory, protocol.LOCK_NAME), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(stale)
    except OSError:  # a host holds the lock (it is starting), or the file is gone
        return False
    return True
