"""``wasinn host start|stop|status``: the warm host that ``wasinn run`` hands its work to."""

from __future__ import annotations

import fcntl
import os
import signal
import time

import click

from wasinn.cli._errors import CommandError
from wasinn.warm import protocol
from wasinn.warm.client import start_host


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
