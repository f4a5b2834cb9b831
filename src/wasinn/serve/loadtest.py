"""A bounded, self-stopping load test for ``wasinn serve`` on loopback.

``total`` requests, ``concurrency`` at a time, each with a timeout and the whole run with a
deadline, so it always ends. The server's resident memory is read from its ``/metrics``
after a warm-up share of the requests and at the end: a leak shows as growth between them.

    python -m wasinn.serve.loadtest URL --body FILE [--total 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

WARM_UP_SHARE = 0.1


@dataclass
class LoadReport:
    requests: int
    seconds: float
    statuses: dict[int, int]
    unexpected: int
    p50_ms: float
    p99_ms: float
    rss_after_warm_up: int
    rss_at_end: int
    failures: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        """End RSS over post-warm-up RSS (1.0: no growth)."""
        return self.rss_at_end / self.rss_after_warm_up if self.rss_after_warm_up else 0.0

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / self.seconds:.1f}/s), "
            f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, statuses {self.statuses}, "
            f"unexpected {self.unexpected}, RSS {self.rss_after_warm_up / 2**20:.0f} → "
            f"{self.rss_at_end / 2**20:.0f} MiB"
        )


async def server_rss(client: httpx.AsyncClient, base: str) -> int:
    text = (await client.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return int(float(line.split()[1]))
    return 0


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
    warm_up = max(1, int(total * WARM_UP_SHARE))
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
                if sum(statuses.values()) == warm_up:
                    rss_warm = await server_rss(client, base)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
        rss_end = await server_rss(client, base)
    ordered = sorted(latencies) or [0.0]
    return LoadReport(
        requests=len(latencies),
        seconds=seconds,
        statuses=dict(statuses),
        unexpected=sum(count for status, count in statuses.items() if status != expect),
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        rss_after_warm_up=rss_warm,
        rss_at_end=rss_end,
        failures=failures,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasinn.serve.loadtest", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=3600.0, help="stop after this many seconds")
    parser.add_argument("--expect", type=int, default=200, help="the status every answer should have")
    parser.add_argument("--json", type=Path, help="write the report here")
    options = parser.parse_args(argv)
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
    if options.json:
        options.json.write_text(json.dumps({**asdict(report), "rss_growth": report.rss_growth}, indent=2))
    return 0 if report.unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
