"""What the server measures and bounds about itself: request counters and latency histograms
in the Prometheus text format (no client library), the process's resident memory, and
glibc's malloc arenas bounded and trimmed between requests."""

from __future__ import annotations

import bisect
import ctypes
import functools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from wasinn.abi._errors import unexpected_counts

# Upper bounds in seconds: from a tiny guest's few milliseconds to a slow model's seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._bucket_counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = defaultdict(float)
        self.in_flight = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self._requests[(route, status)] += 1
            counts = self._bucket_counts.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sums[route] += seconds

    def requests(self, route: str, status: int) -> int:
        with self._lock:
            return self._requests[(route, status)]

    def render(self, pools: Sequence[tuple[str, int, int, int]] = ()) -> str:
        """The text format; ``pools`` are (name, guests running, requests waiting, workers
        stuck) per guest pool."""
        lines = [
            "# HELP wasinn_requests_total Requests answered, by route and HTTP status.",
            "# TYPE wasinn_requests_total counter",
        ]
        with self._lock:
            for (route, status), count in sorted(self._requests.items()):
                lines.append(f'wasinn_requests_total{{route="{route}",status="{status}"}} {count}')
            lines += [
                "# HELP wasinn_request_seconds Request latency, from the body received to the response.",
                "# TYPE wasinn_request_seconds histogram",
            ]
            for route, counts in sorted(self._bucket_counts.items()):
                running = 0
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                    running += count
                    label = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'wasinn_request_seconds_bucket{{route="{route}",le="{label}"}} {running}')
                lines.append(f'wasinn_request_seconds_sum{{route="{route}"}} {self._sums[route]:.6f}')
                lines.append(f'wasinn_request_seconds_count{{route="{route}"}} {running}')
            lines += [
                "# HELP wasinn_requests_in_flight Requests being handled now.",
                "# TYPE wasinn_requests_in_flight gauge",
                f"wasinn_requests_in_flight {self.in_flight}",
            ]
        lines += [
            "# HELP wasinn_guests_running Guests running now, by pool (a route; an OpenAI model: two).",
            "# TYPE wasinn_guests_running gauge",
            *(f'wasinn_guests_running{{pool="{name}"}} {running}' for name, running, _, _ in pools),
            "# HELP wasinn_requests_waiting Requests waiting for a worker slot, by pool.",
            "# TYPE wasinn_requests_waiting gauge",
            *(f'wasinn_requests_waiting{{pool="{name}"}} {waiting}' for name, _, waiting, _ in pools),
            "# HELP wasinn_workers_stuck Workers busy for longer than the time limit, by pool.",
            "# TYPE wasinn_workers_stuck gauge",
            *(f'wasinn_workers_stuck{{pool="{name}"}} {stuck}' for name, _, _, stuck in pools),
        ]
        lines += [
            "# HELP wasinn_host_call_errors_total Unexpected exceptions in host calls, answered with "
            "the front-end's failure code (docs/architecture.md), by front-end.",
            "# TYPE wasinn_host_call_errors_total counter",
            *(
                f'wasinn_host_call_errors_total{{front_end="{front_end}"}} {count}'
                for front_end, count in sorted(unexpected_counts().items())
            ),
        ]
        lines += [
            "# HELP process_resident_memory_bytes Resident memory of the server process.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {resident_bytes()}",
        ]
        return "\n".join(lines) + "\n"


def bound_malloc(threshold: int = 32 << 20) -> bool:
    """Keep the server's resident memory from creeping, at little cost per request.

    glibc raises its mmap threshold each time a large mmapped block is freed; after that,
    multi-MB request bodies and guest outputs come from the heap arenas of the worker
    threads, and resident memory climbs by hundreds of MB and stays there. So: few arenas,
    a fixed threshold, and :func:`release_freed_memory` before requests (at most once in
    10 s), which hands the free pages of the arenas back. The threshold is high (32 MiB,
    glibc's own ceiling): at 1 MiB every multi-MB temporary of a request (the demo's photo
    decode and resize) was a fresh mmap whose pages fault in one by one, 110 ms of a 450 ms
    photo request.
    Returns False where there is no glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        # Few arenas: each thread's arena otherwise keeps its own high-water mark.
        libc.mallopt(M_ARENA_MAX, 2)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except AttributeError:
        return False


TRIM_EVERY_SECONDS = 10.0
_last_trim = float("-inf")


def release_freed_memory(every_seconds: float = TRIM_EVERY_SECONDS) -> None:
    """Give the arenas' free pages back to the system (glibc's malloc_trim; a no-op elsewhere),
    at most once every ``every_seconds``: pages given back fault in again when the next
    request uses them (the demo's photo pipeline: 2-7 % of its time when trimmed every
    second), so not before every request. The echo soak in tests/test_serve.py ends its
    rounds at 95-100 MiB with 10 s, 97-194 MiB with no trim at all."""
    global _last_trim
    libc = _glibc()
    now = time.monotonic()
    if libc is None or not hasattr(libc, "malloc_trim") or now - _last_trim < every_seconds:
        return
    _last_trim = now
    libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    # dlopen(NULL): the symbols this process has loaded, the C library's among them (where
    # mallopt or malloc_trim is missing, as on macOS, the callers do nothing). Not
    # ctypes.util.find_library("c"), which runs `/sbin/ldconfig -p` in a child process.
    if os.name != "posix":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameter numbers


def resident_bytes(pid: int | None = None) -> int:
    """Resident set size from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
