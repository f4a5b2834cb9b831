"""The ``wasinn`` entry point: hand ``wasinn run`` to a warm host when one is up, else run cold.

This module and :mod:`wasinn.warm.protocol` import only the standard library, so a warm
run costs one small Python start (no numpy, wasmtime or click: ``python -X importtime``).
The guest then reads and writes this process's own stdin, stdout and stderr: their file
descriptors travel to the host (SCM_RIGHTS). Anything the client does not recognise as a
plain ``run`` (help, -v, other commands, an option it does not know) runs cold, as before.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C core: signal.py imports enum
import os
import stat
import sys
import time

from wasinn.warm import protocol

TYPE_CHECKING = False  # typing costs the client an import
if TYPE_CHECKING:
    from _socket import socket
    from typing import Any

# `wasinn run`'s flags; these run cold (their output is this process's); every other long
# option takes a value (the limits are many, and the host's click parses them all again).
FLAG_OPTIONS = frozenset({"--no-cache", "--warm"})
# --nn-rpc-*: the models live on an nn-rpc server; that path stays in the cold command.
COLD_OPTIONS = frozenset({"--help", "--verbose", "--version", "--nn-rpc-uri", "--nn-rpc-timeout"})
HOST_DIED_EXIT = 70  # as an internal error: the host, not the guest, failed
INTERRUPTED_EXIT = 130
START_TIMEOUT = 120.0  # a cold daemon imports every framework; on a busy 2-core machine, slowly


def warm_wanted(argv: list[str], environ: os._Environ[str] | dict[str, str]) -> bool | None:
    """For ``wasinn ARGV``: None to run cold; else whether to start a host if none is up."""
    setting = environ.get(protocol.WARM_ENV, "")
    if setting == "0" or not argv or argv[0] != "run":
        return None
    autostart = setting == "1"
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.split("=", 1)[0]
        if name in COLD_OPTIONS or not name.startswith("--"):
            return None  # -h, -v (its log is per process): click answers cold
        if name == "--warm":
            autostart = True
        elif name not in FLAG_OPTIONS and "=" not in arg:
            index += 1  # its value
        index += 1
    if index >= len(argv):
        return None  # no module: click's usage error, cold
    return autostart


def start_host(
    directory: str | None = None, *, wait: float = START_TIMEOUT, workers: int | None = None
) -> int:
    """Start the daemon detached and wait until it answers; its pid.

    A launcher process puts it in a session of its own without making it a session leader
    (a leader would make a terminal it opens for a guest's stdin its controlling one). Two
    clients starting one at once is fine: the daemon that does not get the lock exits.
    """
    import subprocess

    directory = protocol.ensure_runtime_dir(directory or protocol.runtime_dir())
    command = [sys.executable, "-m", "wasinn.warm.daemon", "--dir", str(directory)]
    if workers is not None:
        command += ["--workers", str(workers)]
    launcher = "import subprocess, sys; subprocess.Popen(sys.argv[1:], close_fds=True)"
    log_path = os.path.join(directory, protocol.LOG_NAME)
    with open(log_path, "ab") as log:
        subprocess.run(
            [sys.executable, "-c", launcher, *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            check=True,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
    deadline = time.monotonic() + wait
    while True:
        try:
            answer = protocol.request({"op": "ping"}, protocol.socket_path(directory), timeout=5.0)
            return int(answer["pid"])
        except (OSError, protocol.ProtocolError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the warm host did not answer within {wait:.0f} s (see {log_path})"
                ) from None
            time.sleep(0.05)


def _pythonpath() -> str:
    """The daemon imports this same wasinn, wherever this client was imported from."""
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    current = os.environ.get("PYTHONPATH", "")
    return source if not current else f"{source}{os.pathsep}{current}"


class _Signals:
    """While a guest runs, SIGINT/SIGTERM/SIGHUP to the client stop it in the host."""

    NAMES = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP"}

    def __init__(self, sock: socket) -> None:
        self.sock = sock
        self.received: int | None = None
        self._previous = {number: _signal.signal(number, self._on_signal) for number in self.NAMES}

    def _on_signal(self, number: int, _frame: object) -> None:
        if self.received is None or number != _signal.SIGINT:
            self.received = number
        try:  # noqa: SIM105 (contextlib is one more import on the fast path)
            protocol.send(self.sock, {"op": "signal", "signal": self.NAMES[number]})
        except OSError:
            pass  # the host is gone: the reply loop reports it

    def restore(self) -> None:
        for number, previous in self._previous.items():
            _signal.signal(number, previous)


def run_warm(args: list[str], autostart: bool) -> int | None:
    """``wasinn run ARGS`` in the warm host: its exit code, or None to run it cold."""
    path = protocol.socket_path()
    try:
        sock = protocol.connect(path)
    except OSError:
        if not autostart:
            return None  # no host (or a stale socket of a dead one): cold, as before
        try:
            start_host(os.path.dirname(path))
            sock = protocol.connect(path)
        except (OSError, TimeoutError, protocol.UnsafeDirectory) as err:
            sys.stderr.write(f"wasinn: warning: no warm host ({err}); running cold\n")
            return None
    try:
        try:
            modes = [os.fstat(fd).st_mode for fd in (0, 1, 2)]
        except OSError:
            return None  # a closed standard stream: cold, where the guest sees it closed
        if stat.S_ISSOCK(modes[0]):
            return None  # the host opens stdin by /proc/self/fd, which a socket refuses
        message = {
            "op": "run",
            "argv": args,
            "cwd": os.getcwd(),
            "env": protocol.host_env(os.environ),
            "build": protocol.build_id(),
        }
        try:
            protocol.send(sock, message, [0, 1, 2])
        except OSError:
            return None
        signals = _Signals(sock)
        try:
            started = _answer(sock)
            answer = _answer(sock) if started is not None and started.get("started") else started
        finally:
            signals.restore()
    finally:
        sock.close()
    if started is None or "cold" in started or "refused" in started:
        # The host did not take the run (another version, other settings, it went away
        # first): the guest never started, so it runs here, unless the person interrupted it.
        if signals.received is None:
            return None
        answer = {"exit": INTERRUPTED_EXIT, "error": "wasinn: error: interrupted"}
    elif answer is None:
        sys.stderr.write("wasinn: error: the warm host stopped during the run\n")
        return HOST_DIED_EXIT
    received = signals.received
    if received is not None and received in (_signal.SIGTERM, _signal.SIGHUP):
        # As a cold `wasinn run` dies of them: the shell sees the signal, not an exit code.
        os.kill(os.getpid(), received)
    if answer.get("error"):
        sys.stderr.write(f"{answer['error']}\n")
    return int(answer.get("exit", HOST_DIED_EXIT))


def _answer(sock: socket) -> dict[str, Any] | None:
    try:
        return protocol.receive(sock)[0]
    except (OSError, protocol.ProtocolError):
        return None


def main() -> None:
    argv = sys.argv[1:]
    autostart = warm_wanted(argv, os.environ)
    if autostart is not None:
        code = run_warm(argv[1:], autostart)
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from wasinn.cli import main as cold

    cold(prog_name="wasinn")


if __name__ == "__main__":
    main()
