"""Running one WASI command guest per request, under a bound on how many run at once.

wasmtime's WASI fixes a guest's argv and stdin when the instance is made, so an instance
cannot be made before its request has arrived. What is kept warm instead: the compiled
module, the server's :class:`~wasinn.host.Runtime` with its preloaded models (and its epoch
ticker), and one spool directory per slot (in /dev/shm where there is one)
holding the request's stdout and stderr files. The request body is handed to the guest as
its stdin from memory (no file: wasmtime reads a stdin file ahead in small pieces, 10 ms
more for 5.5 MB); stdout stays a file, since a Python callback per 4 KiB chunk costs 40 ms
for 5.5 MB, except for a streamed response, whose stdout is a named pipe (each write as made).
Making the instance itself costs about a millisecond (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wasinn.core import ConfigError, Interruption
from wasinn.host import Runtime
from wasinn.serve.metrics import release_freed_memory

# Standard error is for people and logs: only its end is kept for the error message.
STDERR_KEEP_BYTES = 64 * 1024


@dataclass(frozen=True)
class GuestResult:
    """What one run of a guest produced."""

    exit_code: int
    stdout: bytes | memoryview  # a memoryview: the mapped stdout file (``run(mapped=True)``)
    stderr: bytes
    seconds: float

    @property
    def last_error_line(self) -> str:
        """The guest's last non-empty stderr line: usually its own one-line reason."""
        lines = [line for line in self.stderr.decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


class GuestPool:
    """``slots`` guest runs at a time of one compiled module; callers beyond that wait."""

    def __init__(self, runtime: Runtime, module_path: Path, slots: int, *, name: str = "") -> None:
        if slots < 1:
            raise ConfigError(f"a route needs at least one worker slot, got {slots}")
        self.runtime = runtime
        self.module_path = module_path
        self.name = name or module_path.stem
        # A core module or a component (wasi:nn over WIT), compiled once for every request.
        self.module = runtime.compile_guest(module_path)
        self.slots = slots
        self._spool = Path(tempfile.mkdtemp(prefix=f"wasinn-serve-{self.name}-", dir=_spool_root()))
        # Removed on close(), or when the pool is collected or the process exits without one.
        self._remove_spool = weakref.finalize(self, shutil.rmtree, self._spool, True)
        self._free: queue.SimpleQueue[Path] = queue.SimpleQueue()
        for index in range(slots):
            slot = self._spool / str(index)
            slot.mkdir()
            self._free.put(slot)
        self._closed = False
        self._count_lock = threading.Lock()
        # The slots in use: since when, and how to stop the guest that holds each.
        self._busy: dict[Path, tuple[float, Interruption]] = {}

    @property
    def running(self) -> int:
        """Guests of this pool running now (never more than ``slots``)."""
        return len(self._busy)

    @property
    def stuck(self) -> int:
        """Slots busy for longer than the time limit (0 without one): its guest is in a host
        call that ignores the limit, a native inference that does not heed ``cancel()``."""
        limit = self.runtime.limits.time_limit_ms
        if limit is None:
            return 0
        since = time.monotonic() - limit / 1000
        with self._count_lock:
            return sum(1 for started, _ in self._busy.values() if started < since)

    def interrupt_all(self, reason: str) -> None:
        """Stop every guest running now (each at its next epoch tick or WASI-NN call)."""
        with self._count_lock:
            running = [interruption for _, interruption in self._busy.values()]
        for interruption in running:
            interruption.interrupt(reason)

    def run(
        self,
        body: bytes,
        args: list[str],
        on_stdout: Callable[[bytes], object] | None = None,
        *,
        mapped: bool = False,
        interruption: Interruption | None = None,
    ) -> GuestResult:
        """Run the guest with ``body`` as stdin and ``args`` as arguments; blocks for a free slot.

        With ``on_stdout``, what the guest writes goes to it as it comes (its stdout is a named
        pipe read by a thread; the result's ``stdout`` is then empty).
        With ``mapped``, the result's ``stdout`` is a read-only memoryview of the stdout file,
        mapped, not read: no copy, and its pages go back when the view is collected.
        ``interruption`` stops the run from another thread (:class:`~wasinn.core.GuestCancelled`;
        set before a slot was free, the guest does not start).
        Raises :class:`~wasinn.core.LimitExceeded` or :class:`~wasinn.core.GuestTrap` when the
        guest was stopped; the pool stays usable either way.
        """
        interruption = interruption or Interruption()
        slot = self._free.get()
        with self._count_lock:
            self._busy[slot] = (time.monotonic(), interruption)
        try:
            interruption.check()  # its client left while it waited for the slot
            release_freed_memory()  # earlier requests' buffers, before this one's are made
            stdout, stderr = slot / "stdout", slot / "stderr"
            started = time.perf_counter()
            # Every run is interruptible (its client may leave): the runtime keeps epochs ticking.
            follow: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if on_stdout and hasattr(os, "mkfifo"):
                stdout = slot / "stream"
                follow = _Pipe(stdout, on_stdout)
            elif on_stdout:
                follow = _Tail(stdout, on_stdout)
            with follow:
                code = self.runtime.run_guest(
                    self.module, args, stdin=body, stdout=stdout, stderr=stderr, interruption=interruption
                )
            seconds = time.perf_counter() - started
            if on_stdout:
                output: bytes | memoryview = b""
            elif mapped:
                output = _map(stdout)
            else:
                output = stdout.read_bytes()
            return GuestResult(code, output, _tail(stderr, STDERR_KEEP_BYTES), seconds)
        finally:
            with contextlib.suppress(OSError):  # an idle slot holds no request's bytes (in RAM)
                os.truncate(slot / "stdout", 0)
            with self._count_lock:
                del self._busy[slot]
            self._free.put(slot)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remove_spool()


class _Pipe:
    """The guest's stdout as a named pipe: each write reaches ``deliver`` as it is made.

    wasmtime's custom stdout callable would deliver each write at once too, but it calls
    Python from tokio threads, never releases the callable, and can abort the process at exit;
    polling a file (:class:`_Tail`) costs half a poll of latency a write (a streamed token's
    first byte came 4-9 ms late). This end holds a writer of its own, so the reader sees the end
    of the stream only once the guest's store has closed its end and the run is over. The reader
    never stops draining, so the guest never blocks on a full pipe.
    """

    def __init__(self, path: Path, deliver: Callable[[bytes], object]) -> None:
        if not path.is_fifo():
            path.unlink(missing_ok=True)
            os.mkfifo(path, 0o600)
        self._read = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens for reading at once
        self._hold = os.open(path, os.O_WRONLY)  # a reader exists: no wait
        os.set_blocking(self._read, True)
        self._deliver = deliver
        self._thread = threading.Thread(target=self._follow, name="wasinn-serve-pipe", daemon=True)

    def __enter__(self) -> _Pipe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._hold)  # the guest's end is closed with its store: the reader sees the end
        self._thread.join()
        os.close(self._read)

    def _follow(self) -> None:
        while chunk := os.read(self._read, 1 << 16):
            self._deliver(chunk)


class _Tail:
    """Hands what is appended to a file to ``deliver`` while the guest writes it, then the
    rest: where there are no named pipes."""

    POLL_SECONDS = 0.004

    def __init__(self, path: Path, deliver: Callable[[bytes], object]) -> None:
        # Opened before the guest's WASI opens it (create + truncate: the same file, if it is there).
        path.touch()
        self._file = open(path, "rb")  # noqa: SIM115  (closed in __exit__)
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="wasinn-serve-tail", daemon=True)

    def __enter__(self) -> _Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()  # what the guest wrote after the last poll
        self._file.close()

    def _drain(self) -> None:
        while chunk := self._file.read(1 << 16):
            self._deliver(chunk)

    def _follow(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self._drain()


def _map(path: Path) -> memoryview | bytes:
    """The file's bytes as a read-only mapping, and the file unlinked (its pages then live as
    long as the mapping, and the slot's next guest writes a new file). 7.3 MB of road scores
    reach the response 4-5 ms sooner than read into a bytes object first."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        view = memoryview(mmap.mmap(file.fileno(), size, prot=mmap.PROT_READ)) if size else b""
    path.unlink()
    return view


def _tail(path: Path, limit: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - limit))
        return file.read()


def _spool_root() -> str | None:
    """Request bodies go to memory-backed storage when the machine has it."""
    shm = "/dev/shm"
    with contextlib.suppress(OSError):
        if os.path.isdir(shm) and os.access(shm, os.W_OK):
            return shm
    return None
