"""The warm host: a per-user daemon that runs ``wasinn run`` command lines for its clients.

Threads only (a server forks nothing): one thread per connection, at most ``workers``
guests at once (later clients wait their turn), and one reader per run that turns the
client's signals, or its disappearance, into an :class:`~wasinn.core.Interruption`.
Start it with ``wasinn host start`` (or the first ``wasinn run --warm``), not directly.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from wasinn.warm import protocol

log = logging.getLogger("wasinn.warm")
# Linear memory kept mapped per idle pool slot between runs (at most 2 × workers slots).
KEEP_RESIDENT_BYTES = 64 << 20


class Daemon:
    def __init__(self, directory: Path, workers: int) -> None:
        from wasinn.host import pool_instances  # the heavy imports: numpy, wasmtime, click
        from wasinn.warm.engine import WarmState

        # Runs are bounded by the workers; components hold several core instances each.
        pool_instances(max(64, 16 * workers), KEEP_RESIDENT_BYTES, 2 * workers)
        self.directory = Path(protocol.ensure_runtime_dir(str(directory)))
        self.path = self.directory / protocol.SOCKET_NAME
        self.workers = workers
        self.state = WarmState()
        self._slots = threading.BoundedSemaphore(workers)
        self._active = 0
        self._active_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._started = time.time()
        self._build = protocol.build_id()
        self._env = protocol.host_env(os.environ)

    def serve(self) -> int:
        """Bind, answer until stopped; 0, or 1 when another daemon already holds the lock."""
        lock = open(self.directory / protocol.LOCK_NAME, "a")  # noqa: SIM115 (held for the process)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another warm host holds %s", self.directory)
            return 1
        # Holding the lock, any socket here is a dead daemon's: replace it.
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_mask)
        listener.listen(64)
        self._listener = listener
        (self.directory / "host.pid").write_text(f"{os.getpid()}\n")
        threading.Thread(target=self.state.warm_up, daemon=True, name="wasinn-warm-up").start()
        log.info("warm host %d listening on %s with %d workers", os.getpid(), self.path, self.workers)
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        """Stop accepting; runs in progress finish (``serve`` waits for them)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept

    def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)  # ours: this process holds the lock
        (self.directory / "host.pid").unlink(missing_ok=True)
        deadline = time.monotonic() + 30
        while self._active and time.monotonic() < deadline:
            time.sleep(0.05)
        log.info("warm host %d stopped after %d runs", os.getpid(), self.state.runs)

    def _connection(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            with conn:
                if not protocol.peer_allowed(conn):
                    protocol.send(conn, {"refused": "the warm host serves only its own user"})
                    conn.settimeout(1.0)
                    conn.recv(1 << 16)  # read what it sent, so closing does not reset the answer
                    return
                message, fds = protocol.receive(conn, max_fds=3)
                if message is None:
                    return
                op = message.get("op")
                if op == "ping":
                    protocol.send(conn, {"pid": os.getpid()})
                elif op == "status":
                    protocol.send(conn, self.status())
                elif op == "stop":
                    protocol.send(conn, {"pid": os.getpid(), "stopping": True})
                    self.stop()
                elif op == "run":
                    self._run(conn, message, fds)
                else:
                    protocol.send(conn, {"error": f"unknown op {op!r}"})
        except (OSError, protocol.ProtocolError) as err:
            log.debug("connection failed: %s", err)
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, conn: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
        reason = self._cold_reason(message, fds)
        if reason is not None:
            protocol.send(conn, {"cold": reason})
            return
        from wasinn.core import Interruption

        protocol.send(conn, {"started": True})  # from here, a lost connection is a failed run
        interruption = Interruption()
        watcher = threading.Thread(target=_watch_client, args=(conn, interruption), daemon=True)
        watcher.start()
        with self._slots:
            with self._active_lock:
                self._active += 1
            try:
                code, error = self.state.run(message["argv"], message["cwd"], fds, interruption)
            finally:
                with self._active_lock:
                    self._active -= 1
        try:
            protocol.send(conn, {"exit": code, "error": error})
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # ends the watcher's read
            watcher.join()

    def _cold_reason(self, message: dict[str, Any], fds: list[int]) -> str | None:
        """Why this run must run in the client instead (another wasinn, other settings)."""
        if message.get("build") != self._build:
            return "the warm host runs another wasinn; restart it with `wasinn host stop`"
        if message.get("env") != self._env:
            return "the client's WASINN_*/framework variables differ from the warm host's"
        if any(str(arg).startswith("--nn-rpc") for arg in message.get("argv", [])):
            return "--nn-rpc-uri runs in the client"
        if (
            len(fds) != 3
            or not isinstance(message.get("argv"), list)
            or not isinstance(message.get("cwd"), str)
        ):
            return "a malformed run request"
        return None

    def status(self) -> dict[str, Any]:
        models = self.state.models
        return {
            "pid": os.getpid(),
            "socket": str(self.path),
            "uptime_s": round(time.time() - self._started, 1),
            "workers": self.workers,
            "active": self._active,
            "runs": self.state.runs,
            "models": len(models),
            "model_bytes": models.total_bytes,
            "model_budget": models.budget,
            "cache_hits": models.hits,
            "cache_misses": models.misses,
            "rss_kib": _rss_kib(),
        }


def _watch_client(conn: socket.socket, interruption: Any) -> None:
    """The client's signals stop the guest; so does the client going away (killed)."""
    while True:
        try:
            message, _ = protocol.receive(conn)
        except (OSError, protocol.ProtocolError):
            message = None
        if message is None:
            interruption.interrupt("the client went away")
            return
        if message.get("op") == "signal":
            interruption.interrupt(f"interrupted ({message.get('signal')})")


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasinn.warm.daemon")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    options = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s wasinn-host: %(message)s")
    daemon = Daemon(Path(options.dir or protocol.runtime_dir()), max(1, options.workers))

    def on_signal(_number: int, _frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal of its own to lose
    code = daemon.serve()
    logging.shutdown()
    # Without interpreter finalization: wasmtime's WASI threads (a tokio runtime) still
    # exist, and tearing the interpreter down under them aborts the process.
    os._exit(code)


if __name__ == "__main__":
    main()
