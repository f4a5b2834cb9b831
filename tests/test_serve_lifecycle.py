"""``wasinn serve`` never hangs: stuck workers show.

"Stuck in native code" is simulated by a WAT guest that sleeps in WASI's ``poll_oneoff``
(``wat_guests.sleeper_wat``): a host call in wasmtime's native code that neither the epoch
deadline nor an interruption reaches, as a native inference whose framework ignores
``cancel()``. Timings are asserted with generous bounds (a busy 2-core machine); the
measured values are printed (``pytest -s``) and quoted in docs/serving.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from conftest import guest_wasm, require_module
from wat_guests import sleeper_wat

require_module("starlette")
require_module("uvicorn")
require_module("httpx")

from starlette.testclient import TestClient  # noqa: E402

from wasinn.runtime import Limits  # noqa: E402
from wasinn.serve.server import ServeConfig, build_app  # noqa: E402


def gauge(text: str, name: str, pool: str) -> int:
    prefix = f'{name}{{pool="{pool}"}} '
    values = [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, f"/metrics has no {prefix}line"
    return int(values[0])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` held (checked back to back); fails after ``timeout``."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.002)
    return time.perf_counter() - started


def write_wasm(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(source))
    return path


# --------------------------------------------------------------------- 1. stuck workers


def test_a_worker_stuck_past_the_time_limit_shows_in_metrics_and_healthz(tmp_path: Path) -> None:
    sleeper = write_wasm(tmp_path, "sleeper", sleeper_wat(4.0))
    routes = {"stuck": sleeper, "echo": guest_wasm("serve-echo")}
    config = ServeConfig(routes=routes, workers=2, limits=Limits(time_limit_ms=300), cache=False)
    statuses: list[int] = []
    answers: list[dict[str, object]] = []

    with TestClient(build_app(config)) as client:

        def post() -> None:
            response = client.post("/stuck", content=b"")
            statuses.append(response.status_code)
            answers.append(response.json())

        def stuck() -> int:
            return gauge(client.get("/metrics").text, "wasinn_workers_stuck", "stuck")

        posts = [threading.Thread(target=post) for _ in range(2)]
        try:
            posts[0].start()
            wait_until(lambda: stuck() == 1, "one worker stuck")
            # One of the two workers is stuck: the route still serves, the server is healthy.
            assert client.get("/healthz").status_code == 200
            posts[1].start()
            wait_until(lambda: stuck() == 2, "both workers stuck")
            health = client.get("/healthz")
            assert health.status_code == 503
            assert "\n" not in health.text
            assert health.json() == {
                "status": "stuck",
                "route": "stuck",
                "error": "all 2 workers of stuck are busy past the 300 ms time limit",
            }
            assert gauge(client.get("/metrics").text, "wasinn_workers_stuck", "echo") == 0
            assert client.post("/echo", content=b"other routes").status_code == 200
        finally:
            for thread in posts:  # each ends when its 4 s sleep does
                if thread.ident is not None:  # started
                    thread.join(timeout=60)
        # Back from the host call, the guests' wasm code meets the limit at its next tick.
        assert statuses == [504, 504]
        assert answers == [{"error": "time limit of 300 ms exceeded"}] * 2
        assert stuck() == 0
        assert client.get("/healthz").json() == {"status": "ok", "routes": ["/stuck", "/echo"]}


def test_serving_has_a_time_limit_by_default_and_0_means_none() -> None:
    from conftest import wasinn_cli

    assert ServeConfig().limits == Limits(time_limit_ms=60_000)
    help_text = " ".join(wasinn_cli("serve", "--help").stdout.split())
    assert "--time-limit MS Per request: over it, 504; 0: none." in help_text
    assert "counts as stuck. [default: 60000; x>=0]" in help_text
    # `wasinn run` keeps no default limit.
    assert "--time-limit" in wasinn_cli("run", "--help").stdout
    assert "60000" not in wasinn_cli("run", "--help").stdout
