"""A bounded, self-stopping soak of ``wasinn serve`` on loopback: minutes of mixed traffic.

One server (``--demo --workers 2``, the birds TFLite model behind nn-pipe at ``/birds``, the
tiny GGUF at the OpenAI routes) takes ``concurrency`` clients for ``seconds``: road tensors
and photos, birds, chat streams and completions, embeddings, malformed bodies (each a 400),
and clients that leave mid-body, after the body and mid-stream (:mod:`.soak_traffic`). It
checks every answer (the deterministic routes must repeat their first answer), that no
request hangs (a timeout per request; everything in flight drains after the load), that the
server counted no 5xx and logged no traceback, and the drift of its resident memory: its
RSS at rest after the run over its RSS at rest after the warm-up (the first 10 %, at least
15 s; :func:`idle_rss` says why at rest). p50/p99 per route go to ``--json``.

    python -m wasinn.bench.soak [--seconds 600] [--concurrency 32] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wasinn.bench.loadtest import LoadTestError, server_rss, start_server, stop_server
from wasinn.bench.soak_traffic import BIRDS, MIX, Client, Inputs
from wasinn.serve.metrics import TRIM_EVERY_SECONDS

REQUEST_SECONDS = 120.0  # one request, however loaded the machine: beyond it, a hang
DRAIN_SECONDS = 60.0  # for the guests of clients that left to end after the load
DRIFT_BOUND = 0.05


class SoakError(LoadTestError):
    """The soak could not run (its models, guests or server are missing)."""


@dataclass
class Route:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    unexpected: int = 0
    hangs: int = 0

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return {
            "requests": len(self.latencies),
            "statuses": dict(sorted(self.statuses.items())),
            "unexpected": self.unexpected,
            "hangs": self.hangs,
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1),
        }


@dataclass
class Soak:
    client: Client
    routes: dict[str, Route] = field(default_factory=lambda: {name: Route() for name in MIX})
    failures: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, bytes)

    async def one(self, name: str) -> None:
        _, check, expect = MIX[name]
        route = self.routes[name]
        started = time.perf_counter()
        try:
            status, problem = await asyncio.wait_for(check(self.client), REQUEST_SECONDS)
        except TimeoutError:
            route.hangs += 1
            status, problem = -1, f"no answer within {REQUEST_SECONDS:.0f} s"
        except httpx.HTTPError as err:
            status, problem = 0, None if expect == 0 else f"{type(err).__name__}: {err}"
        except OSError as err:  # a client that leaves may find the server already gone from it
            status, problem = 0, None if expect == 0 else f"{type(err).__name__}: {err}"
        route.latencies.append(time.perf_counter() - started)
        route.statuses[status] += 1
        if status != expect or problem is not None:
            route.unexpected += 1
            if len(self.failures) < 20:
                self.failures.append(f"{name}: {status}: {problem}")

    async def worker(self, rng: random.Random, until: float) -> None:
        names, weights = list(MIX), [weight for weight, _, _ in MIX.values()]
        while time.monotonic() < until:
            await self.one(rng.choices(names, weights)[0])

    async def sample(self, began: float, until: float, every: float) -> None:
        async with httpx.AsyncClient(timeout=30) as scraper:
            while (now := time.monotonic()) < until:
                self.rss.append((now - began, await server_rss(scraper, self.client.base)))
                await asyncio.sleep(every)


async def _metrics(http: httpx.AsyncClient, base: str) -> str:
    return (await http.get(f"{base}/metrics")).text


def _drained(metrics: str) -> bool:
    gauges = [line for line in metrics.splitlines() if line.startswith("wasinn_guests_running{")]
    return "wasinn_requests_in_flight 0" in metrics.splitlines() and all(g.endswith(" 0") for g in gauges)


async def drain(http: httpx.AsyncClient, base: str) -> str:
    """/metrics once nothing is in flight (the guests of clients that left too), or at the bound."""
    until = time.monotonic() + DRAIN_SECONDS
    while not _drained(metrics := await _metrics(http, base)) and time.monotonic() < until:
        await asyncio.sleep(0.5)
    return metrics


async def idle_rss(client: Client) -> tuple[int, bool]:
    """The server's RSS at rest (and whether it drained): nothing in flight, free pages given back.

    Under load the RSS is a sawtooth: it climbs by a few hundred MB between the pool's
    malloc_trim calls (before a guest runs, at most once in 10 s) and falls back at each, so
    a sample says more about where it sat on the tooth than about a leak. At rest, 10 s after
    the last trim, one small guest run (birds) trims first: what is left is what is held.
    """
    drained = _drained(await drain(client.http, client.base))
    await asyncio.sleep(TRIM_EVERY_SECONDS + 1)
    await client.post(BIRDS, content=client.inputs.bird)
    return await server_rss(client.http, client.base), drained


def under_load(samples: list[tuple[float, int]]) -> dict[str, float]:
    """Medians of the first and last tenth of the RSS samples under load (for the record)."""
    values = [rss / 2**20 for _, rss in samples]
    tenth = max(1, len(values) // 10)
    first, last = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
    return {
        "first_tenth_median_mib": round(first, 1),
        "last_tenth_median_mib": round(last, 1),
        "min_mib": round(min(values), 1),
        "max_mib": round(max(values), 1),
    }


def server_statuses(metrics: str) -> dict[str, dict[int, int]]:
    """``wasinn_requests_total`` per route and status, as the server counted them."""
    counted: dict[str, dict[int, int]] = {}
    for line in metrics.splitlines():
        if line.startswith("wasinn_requests_total{"):
            labels, count = line[len("wasinn_requests_total{") :].split("} ")
            route, status = (part.split("=")[1].strip('"') for part in labels.split(","))
            counted.setdefault(route, {})[int(status)] = int(count)
    return counted


async def soak(
    base: str, inputs: Inputs, *, seconds: float, concurrency: int, seed: int = 0
) -> dict[str, Any]:
    """The soak against a running server; its report (``passed`` and the numbers).

    The load runs in two phases, the warm-up (a tenth, at least 15 s) and the rest; the RSS
    drift is the server's RSS at rest after the rest over that after the warm-up.
    """
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    warm_up = max(15.0, seconds / 10)
    every = max(0.5, seconds / 300)
    rngs = [random.Random(seed * 1000 + index) for index in range(concurrency)]
    async with httpx.AsyncClient(timeout=REQUEST_SECONDS, limits=limits) as http:
        run = Soak(Client(http, base, inputs))
        for name in MIX:  # one of each first: every lazy path taken, the reference answers kept
            await run.one(name)
        began, rss = time.monotonic(), []
        for phase in (warm_up, seconds - warm_up):
            until = time.monotonic() + phase
            await asyncio.gather(run.sample(began, until, every), *(run.worker(rng, until) for rng in rngs))
            rss.append(await idle_rss(run.client))
        metrics = await drain(http, base)
        healthy = (await http.get(f"{base}/healthz")).status_code == 200
    counted = server_statuses(metrics)
    server_5xx = sum(n for statuses in counted.values() for status, n in statuses.items() if status >= 500)
    (rss_warm, drained_warm), (rss_end, drained) = rss
    drift = rss_end / rss_warm - 1
    routes = {name: route.report() for name, route in run.routes.items()}
    hangs = sum(route.hangs for route in run.routes.values())
    unexpected = sum(route.unexpected for route in run.routes.values())
    drained = drained and drained_warm and _drained(metrics)
    passed = hangs == unexpected == server_5xx == 0 and drained and healthy and drift < DRIFT_BOUND
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "warm_up_seconds": warm_up,
        "requests": sum(route["requests"] for route in routes.values()),
        "routes": routes,
        "hangs": hangs,
        "unexpected": unexpected,
        "server_statuses": counted,
        "server_5xx": server_5xx,
        "drained": drained,
        "healthy_after": healthy,
        "rss": {
            "at_rest_after_warm_up_mib": round(rss_warm / 2**20, 1),
            "at_rest_at_end_mib": round(rss_end / 2**20, 1),
            "drift": round(drift, 4),
            "under_load": under_load([sample for sample in run.rss if sample[0] >= warm_up]),
        },
        "rss_samples": [[round(at, 1), rss] for at, rss in run.rss],
        "failures": run.failures,
        "passed": passed,
    }


def soak_server(tiny_model: Path | None = None) -> tuple[list[str], Inputs]:
    """``wasinn serve`` arguments (the demo, birds, the tiny GGUF) and the bodies to send."""
    import numpy as np

    from wasinn.core import WasinnError
    from wasinn.tools.demo import MODEL_ID, find_guest
    from wasinn.tools.im2tensor import im2tensor
    from wasinn.tools.models import ensure_model

    try:
        road_dir = ensure_model(MODEL_ID, download_missing=False)
        birds_dir = ensure_model("birds-v1", download_missing=False)
        nn_pipe = find_guest("nn-pipe.wasm")
        if tiny_model is None:
            from wasinn.testing.tiny_gguf import VocabUnavailable, tiny_llama

            try:
                tiny_model = tiny_llama()
            except VocabUnavailable as err:
                raise SoakError(str(err)) from None
    except (WasinnError, ImportError) as err:
        raise SoakError(f"the soak's models or guests are missing: {err}") from None
    photo, bird = road_dir / "empty_road_mapillary.jpg", birds_dir / "bird.jpg"
    for picture in (photo, bird):
        if not picture.is_file():
            raise SoakError(f"{picture} is missing (the shared data's photos: WASINN_MODELS)")
    preload = [f"birds:tensorflowlite:cpu:{next(birds_dir.glob('*.tflite'))}", f"tiny:GGML:AUTO:{tiny_model}"]
    args = ["--demo", "--workers", "2", "--time-limit", "60000", "--openai", "tiny", f"birds={nn_pipe}"]
    args += [option for spec in preload for option in ("--nn-preload", spec)]
    road = np.random.default_rng(9).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32).tobytes()
    bird_tensor = im2tensor(bird, "224x224x3xu8", color="rgb").tobytes()
    return args, Inputs(road=road, photo=photo.read_bytes(), bird=bird_tensor)


def run_soak(
    *, seconds: float, concurrency: int, seed: int = 0, tiny_model: Path | None = None
) -> dict[str, Any]:
    """Start the server, soak it, stop it; the report, with the server's log checked for tracebacks."""
    args, inputs = soak_server(tiny_model)
    with tempfile.TemporaryDirectory(prefix="wasinn-soak-") as scratch:
        log = Path(scratch) / "server.log"
        process, base = start_server(*args, log=log)
        try:
            report = asyncio.run(soak(base, inputs, seconds=seconds, concurrency=concurrency, seed=seed))
        finally:
            stop_server(process)
        text = log.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    report["server"] = re.sub(r"[^ =:]*/", "", "wasinn serve " + " ".join(args))  # file names only
    report["server_tracebacks"] = tracebacks
    if tracebacks:
        report["failures"].append(f"the server logged {tracebacks} traceback(s): {text[-2000:]}")
        report["passed"] = False
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [f"{'route':<18} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses"]
    for name, r in report["routes"].items():
        lines.append(
            f"{name:<18} {r['requests']:>8} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f}  {r['statuses']}"
        )
    rss, verdict = report["rss"], "PASSED" if report["passed"] else "FAILED"
    lines.append(
        f"{report['requests']} requests in {report['seconds']:.0f} s at concurrency {report['concurrency']}; "
        f"hangs {report['hangs']}, unexpected {report['unexpected']}, server 5xx {report['server_5xx']}, "
        f"drained {report['drained']}; RSS at rest {rss['at_rest_after_warm_up_mib']} → "
        f"{rss['at_rest_at_end_mib']} MiB (drift {rss['drift']:+.2%}; under load "
        f"{rss['under_load']['min_mib']}–{rss['under_load']['max_mib']} MiB): {verdict}"
    )
    return "\n".join([*lines, *report["failures"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wasinn.bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the load runs")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the clients' choice of requests")
    parser.add_argument("--json", type=Path, help="write the report here")
    options = parser.parse_args(argv)
    try:
        report = run_soak(seconds=options.seconds, concurrency=options.concurrency, seed=options.seed)
    except LoadTestError as err:
        print(f"soak: error: {err}", file=sys.stderr)
        return 2
    print(summary(report))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
