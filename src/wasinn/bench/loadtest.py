"""A bounded, self-stopping load test for ``wasinn serve`` on loopback.

``total`` requests, ``concurrency`` at a time, each with a timeout and the whole run with a
deadline, so it always ends; a run the deadline cut short fails. The server's resident
memory is read from its ``/metrics`` after a warm-up share of the requests and at the end:
a leak shows as growth between them.

    python -m wasinn.bench.loadtest URL --body FILE [--total 2000] [--concurrency 16]
    python -m wasinn.bench.loadtest --demo [--total 2000] [--malformed 200] --json FILE

``--demo`` starts ``wasinn serve --demo`` on a free loopback port, posts random
road-segmentation tensors, then malformed bodies (each must be a 400), and stops it
(``make loadtest``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from wasinn.core import WasinnError

WARM_UP_SHARE = 0.1
RSS_SAMPLES = 20  # the server's RSS is read this many times over a run, evenly
RSS_METRIC = "process_resident_memory_bytes"


class LoadTestError(WasinnError):
    """The load test could not measure what it is for (the server's memory, the server)."""


@dataclass
class LoadReport:
    total: int  # asked for
    requests: int  # made before the deadline
    seconds: float
    statuses: dict[int, int]
    unexpected: int
    p50_ms: float
    p99_ms: float
    rss_after_warm_up: int
    rss_at_end: int
    failures: list[str] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)  # over the run, in order

    @property
    def complete(self) -> bool:
        """Every request asked for was made (the deadline did not cut the run short)."""
        return self.requests == self.total

    @property
    def passed(self) -> bool:
        return self.complete and self.unexpected == 0

    @property
    def rss_growth(self) -> float:
        """End RSS over post-warm-up RSS (1.0: no growth)."""
        return self.rss_at_end / self.rss_after_warm_up if self.rss_after_warm_up else 0.0

    def summary(self) -> str:
        cut = "" if self.complete else f" (CUT SHORT by the deadline: {self.total} asked)"
        return (
            f"{self.requests} requests{cut} in {self.seconds:.1f} s ({self.requests / self.seconds:.1f}/s), "
            f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, statuses {self.statuses}, "
            f"unexpected {self.unexpected}, RSS {self.rss_after_warm_up / 2**20:.0f} → "
            f"{self.rss_at_end / 2**20:.0f} MiB"
        )


async def server_rss(client: httpx.AsyncClient, base: str) -> int:
    """The server's resident memory from its /metrics; without it a leak would pass unseen."""
    text = (await client.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{RSS_METRIC} "):
            rss = int(float(line.split()[1]))
            if rss <= 0:
                raise LoadTestError(f"{base}/metrics reports {RSS_METRIC} {rss}: no memory to check")
            return rss
    raise LoadTestError(f"{base}/metrics has no {RSS_METRIC} line: no memory to check")


async def hammer(
    url: str,
    body: bytes,
    *,
    total: int,
    concurrency: int,
    expect: int = 200,
    timeout: float = 120.0,
    deadline: float = 3600.0,
) -> LoadReport:
    """POST ``body`` to ``url`` ``total`` times, ``concurrency`` at once; stop at ``deadline`` s."""
    base = str(httpx.URL(url).copy_with(path="/", query=None)).rstrip("/")
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    issued = 0
    rss_warm = 0
    rss_samples: list[int] = []
    warm_up = max(1, int(total * WARM_UP_SHARE))
    sample_every = max(1, total // RSS_SAMPLES)
    stop_at = time.monotonic() + deadline
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal issued, rss_warm
            while issued < total and time.monotonic() < stop_at:
                issued += 1
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body)
                    status = response.status_code
                    if status != expect and len(failures) < 10:
                        failures.append(f"{status}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    status = 0
                    if len(failures) < 10:
                        failures.append(f"{type(err).__name__}: {err}")
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
                done = sum(statuses.values())
                if done == warm_up:
                    rss_warm = await server_rss(client, base)
                if done % sample_every == 0:
                    rss_samples.append(await server_rss(client, base))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
        rss_end = await server_rss(client, base)
    ordered = sorted(latencies) or [0.0]
    return LoadReport(
        total=total,
        requests=len(latencies),
        seconds=seconds,
        statuses=dict(statuses),
        unexpected=sum(count for status, count in statuses.items() if status != expect),
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        rss_after_warm_up=rss_warm,
        rss_at_end=rss_end,
        failures=failures,
        rss_samples=rss_samples,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(
    *args: str, env: dict[str, str] | None = None, wait: float = 300.0, log: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``wasinn serve ARGS`` in a subprocess on a free loopback port, once /healthz answers.

    Its output goes to pipes, or to the file ``log`` for a long run (a pipe nobody reads
    fills up and then blocks the server's next log line).
    """
    port = free_port()
    output = open(log, "w") if log is not None else None  # noqa: SIM115  (the child holds it)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "wasinn", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=output or subprocess.PIPE,
            stderr=output or subprocess.PIPE,
            text=True,
            env=env,
        )
    finally:
        if output is not None:
            output.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = log.read_text() if log is not None else process.stderr.read() if process.stderr else ""
            raise LoadTestError(f"wasinn serve exited {process.returncode}: {stderr.strip()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(process)
    raise LoadTestError(f"wasinn serve did not answer /healthz within {wait:.0f} s")


def stop_server(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the server drains its requests), then SIGKILL after 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


DEMO_QUERY = "name=road-segmentation&dims=1x512x896x3"
MALFORMED_BODY = b"\x01" * 999  # not 1x512x896x3 f32: nn-pipe exits 65, a 400


def demo_load(
    *, total: int, concurrency: int, malformed: int, workers: int, deadline: float
) -> dict[str, object]:
    """``wasinn serve --demo``: ``total`` random tensors, then ``malformed`` bad bodies."""
    import numpy as np

    tensor = np.random.default_rng(9).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32).tobytes()
    process, base = start_server("--demo", "--workers", str(workers))
    try:
        url = f"{base}/road-segmentation?{DEMO_QUERY}"
        load = asyncio.run(hammer(url, tensor, total=total, concurrency=concurrency, deadline=deadline))
        print("load:", load.summary())
        bad = asyncio.run(
            hammer(
                url, MALFORMED_BODY, total=malformed, concurrency=concurrency, expect=400, deadline=deadline
            )
        )
        print("malformed:", bad.summary())
    finally:
        stop_server(process)
    return {
        "server": f"wasinn serve --demo --workers {workers}",
        "concurrency": concurrency,
        "load": _report_json(load),
        "malformed": _report_json(bad),
        "passed": load.passed and bad.passed,
    }


def _report_json(report: LoadReport) -> dict[str, object]:
    return {**asdict(report), "complete": report.complete, "rss_growth": report.rss_growth}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wasinn.bench.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", nargs="?", help="the route to POST to (not with --demo)")
    parser.add_argument("--body", type=Path, help="the body to POST (not with --demo)")
    parser.add_argument("--demo", action="store_true", help="start wasinn serve --demo and load it")
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--malformed", type=int, default=200, help="--demo: bad bodies after the load")
    parser.add_argument("--workers", type=int, default=2, help="--demo: the server's --workers")
    parser.add_argument("--deadline", type=float, default=3600.0, help="stop after this many seconds")
    parser.add_argument("--expect", type=int, default=200, help="the status every answer should have")
    parser.add_argument("--json", type=Path, help="write the report here")
    options = parser.parse_args(argv)
    if options.demo == (options.url is not None) or (options.url is not None) != (options.body is not None):
        parser.error("give either URL --body FILE, or --demo")
    try:
        if options.demo:
            result = demo_load(
                total=options.total,
                concurrency=options.concurrency,
                malformed=options.malformed,
                workers=options.workers,
                deadline=options.deadline,
            )
            passed = bool(result["passed"])
        else:
            report = asyncio.run(
                hammer(
                    options.url,
                    options.body.read_bytes(),
                    total=options.total,
                    concurrency=options.concurrency,
                    deadline=options.deadline,
                    expect=options.expect,
                )
            )
            print(report.summary())
            for failure in report.failures:
                print("  ", failure)
            result, passed = _report_json(report), report.passed
    except LoadTestError as err:
        print(f"loadtest: error: {err}", file=sys.stderr)
        return 2
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
