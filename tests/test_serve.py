"""``wasinn serve``: guests as HTTP routes, their failures as statuses, and the server's care."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import guest_wasm, require_module

require_module("starlette")
require_module("uvicorn")
require_module("httpx")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402
from wasinn.bench.loadtest import hammer  # noqa: E402
from wasinn.host import Limits  # noqa: E402
from wasinn.serve.config import ServeConfig, parse_route  # noqa: E402
from wasinn.serve.server import build_app  # noqa: E402


def echo_client(**options: object) -> TestClient:
    config = ServeConfig(routes={"echo": guest_wasm("serve-echo")}, cache=False, **options)  # type: ignore[arg-type]
    return TestClient(build_app(config))


def test_body_is_stdin_query_is_args_stdout_is_the_response() -> None:
    with echo_client() as client:
        response = client.post("/echo?arg=one&arg=two", content=b"\x00hello\xff")
    assert response.status_code == 200
    assert response.content == b"args: one two\n\x00hello\xff"
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("size", [0, 5_505_024])
def test_a_guest_reads_stdin_given_as_bytes(size: int, tmp_path: Path) -> None:
    from wasinn.host import Runtime

    body = os.urandom(size)
    stdout = tmp_path / "stdout"
    with Runtime(cache=False).instantiate(guest_wasm("serve-echo"), stdin=body, stdout=stdout) as instance:
        assert instance.run() == 0
    assert stdout.read_bytes() == b"args:\n" + body


def test_a_short_answer_after_a_long_one_is_only_its_own() -> None:
    """The response is the mapped stdout file of its own run, never what a slot held before."""
    big = os.urandom(5_505_024)
    with echo_client(workers=1, mapped_responses=True) as client:
        assert client.post("/echo", content=big).content == b"args:\n" + big
        assert client.post("/echo?arg=short", content=b"tail").content == b"args: short\ntail"
        assert client.post("/echo", content=b"").content == b"args:\n"


def test_named_query_parameters_become_options() -> None:
    with echo_client() as client:
        assert client.get("/echo?color=red&verbose").content == b"args: --color red --verbose\n"


@pytest.mark.parametrize(
    ("exit_code", "status"),
    [(64, 400), (65, 400), (66, 400), (1, 500), (8, 500), (71, 500)],
)
def test_exit_code_becomes_the_status_with_a_one_line_json_error(exit_code: int, status: int) -> None:
    with echo_client() as client:
        response = client.post(f"/echo?exit={exit_code}&stderr=bad+thing+happened", content=b"x")
    assert response.status_code == status
    assert "\n" not in response.text
    assert response.json() == {"error": "bad thing happened", "exit_code": exit_code}


def test_a_trap_is_500_and_the_server_keeps_serving() -> None:
    with echo_client() as client:
        trapped = client.post("/echo?trap", content=b"")
        assert trapped.status_code == 500
        assert trapped.json()["error"].startswith("guest trapped: wasm `unreachable` instruction executed")
        assert client.post("/echo", content=b"after").content == b"args:\nafter"


def test_the_time_limit_is_per_request_504_and_the_server_keeps_serving() -> None:
    with echo_client(limits=Limits(time_limit_ms=300)) as client:
        started = time.perf_counter()
        slow = client.post("/echo?spin=5000", content=b"")
        assert time.perf_counter() - started < 3
        assert slow.status_code == 504
        assert slow.json() == {"error": "time limit of 300 ms exceeded"}
        # Each request gets the whole limit: two 200 ms runs in a row both finish.
        for _ in range(2):
            assert client.post("/echo?spin=200", content=b"").status_code == 200


def test_the_gas_limit_is_a_guest_fault_500_and_the_server_keeps_serving() -> None:
    """Running out of fuel is deterministic, the guest's own doing: 500, not the time limit's 504."""
    with echo_client(limits=Limits(gas=20_000_000)) as client:
        spent = client.post("/echo?spin=5000", content=b"")
        assert spent.status_code == 500
        assert spent.json() == {"error": "gas limit of 20000000 exceeded"}
        # Each request gets the whole allowance.
        for _ in range(2):
            assert client.post("/echo", content=b"fuelled").content == b"args:\nfuelled"


def test_the_memory_limit_is_per_request() -> None:
    with echo_client(limits=Limits(memory_pages=64 * 16)) as client:  # 64 MiB
        refused = client.post("/echo?alloc=100", content=b"")
        assert refused.status_code == 500
        assert refused.json() == {"error": "serve-echo: cannot allocate 100 MB", "exit_code": 71}
        assert client.post("/echo?alloc=16", content=b"").status_code == 200


def test_a_body_over_the_limit_is_413() -> None:
    with echo_client(max_body_bytes=1000) as client:
        assert client.post("/echo", content=b"x" * 1001).status_code == 413
        assert client.post("/echo", content=b"x" * 1000).status_code == 200


def gauge(text: str, name: str, pool: str) -> int:
    """One per-pool gauge of /metrics."""
    prefix = f'{name}{{pool="{pool}"}} '
    values = [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, f"/metrics has no {prefix}line"
    return int(values[0])


@contextmanager
def posting(client: TestClient, urls: list[str]) -> Iterator[tuple[list[threading.Thread], list[int]]]:
    """One thread per POST; the statuses land in the list as they answer. The threads are
    joined on the way out, even when an assertion failed, before the client is closed."""
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda url=url: statuses.append(client.post(url, content=b"").status_code), daemon=True
        )
        for url in urls
    ]
    for thread in threads:
        thread.start()
    try:
        yield threads, statuses
    finally:
        for thread in threads:
            thread.join(timeout=60)


def wait_for_gauge(client: TestClient, name: str, value: int) -> None:
    for _ in range(500):
        if gauge(client.get("/metrics").text, name, "echo") == value:
            return
        time.sleep(0.01)
    raise AssertionError(f"{name} never reached {value}")


def test_requests_beyond_the_waiting_bound_are_503_at_once() -> None:
    with (
        echo_client(workers=1, max_waiting=1) as client,
        posting(client, ["/echo?spin=1500"]) as (_, first),
    ):
        wait_for_gauge(client, "wasinn_guests_running", 1)
        with posting(client, ["/echo?spin=10"]) as (_, second):  # the one allowed to wait
            wait_for_gauge(client, "wasinn_requests_waiting", 1)
            started = time.perf_counter()
            refused = client.post("/echo", content=b"")
            assert time.perf_counter() - started < 0.5
    assert first == second == [200]
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "1 requests are already waiting for a worker of this route; retry later"
    }


def test_requests_running_on_a_worker_do_not_count_as_waiting() -> None:
    """--max-waiting 0: as many requests as workers are served, none waits, none is refused."""
    with (
        echo_client(workers=3, max_waiting=0) as client,
        posting(client, ["/echo?spin=300"] * 3) as (_, statuses),
    ):
        pass
    assert statuses == [200, 200, 200]


def test_the_waiting_bound_is_per_route() -> None:
    echo = guest_wasm("serve-echo")
    config = ServeConfig(routes={"echo": echo, "other": echo}, workers=1, max_waiting=0, cache=False)
    with TestClient(build_app(config)) as client, posting(client, ["/echo?spin=1000"]) as (_, statuses):
        wait_for_gauge(client, "wasinn_guests_running", 1)
        assert client.post("/echo", content=b"").status_code == 503  # its one worker is busy
        assert client.post("/other", content=b"").status_code == 200  # another route's is not
    assert statuses == [200]


def test_no_more_guests_run_at_once_than_workers() -> None:
    spin_ms, count = 400, 6
    running, waiting = [], []
    with echo_client(workers=2) as client:
        started = time.perf_counter()
        with posting(client, [f"/echo?spin={spin_ms}"] * count) as (threads, statuses):
            while any(thread.is_alive() for thread in threads):
                text = client.get("/metrics").text
                running.append(gauge(text, "wasinn_guests_running", "echo"))
                waiting.append(gauge(text, "wasinn_requests_waiting", "echo"))
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        after = client.get("/metrics").text
    assert statuses == [200] * count
    assert max(running) == 2 and max(waiting) >= 1, (running, waiting)
    # The guest spins on the wall clock, so even 2 cores run 6 at once in one round: 3 rounds
    # mean the bound held.
    assert seconds >= count / 2 * spin_ms / 1000
    assert gauge(after, "wasinn_guests_running", "echo") == 0
    assert gauge(after, "wasinn_requests_waiting", "echo") == 0


def test_healthz_and_prometheus_metrics_count_every_answer() -> None:
    with echo_client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "routes": ["/echo"]}
        client.post("/echo", content=b"")
        client.post("/echo?exit=65", content=b"")
        client.post("/echo?trap", content=b"")
        text = client.get("/metrics").text
    assert 'wasinn_requests_total{route="echo",status="200"} 1' in text
    assert 'wasinn_requests_total{route="echo",status="400"} 1' in text
    assert 'wasinn_requests_total{route="echo",status="500"} 1' in text
    assert 'wasinn_request_seconds_count{route="echo"} 3' in text
    assert "wasinn_requests_in_flight 0" in text
    assert "process_resident_memory_bytes " in text


def test_concurrent_requests_each_get_their_own_stdio() -> None:
    with echo_client(workers=4) as client:
        results: dict[int, bytes] = {}

        def post(index: int) -> None:
            results[index] = client.post(f"/echo?arg={index}", content=str(index).encode() * 1000).content

        threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {i: f"args: {i}\n".encode() + str(i).encode() * 1000 for i in range(16)}


def test_bad_routes_are_refused_at_start(tmp_path: Path) -> None:
    from wasinn.core import ConfigError

    with pytest.raises(ConfigError, match="expected ROUTE=MODULE.wasm"):
        parse_route("echo")
    with pytest.raises(ConfigError, match="reserved"):
        parse_route(f"metrics={guest_wasm('serve-echo')}")
    with pytest.raises(ConfigError, match="no such file"):
        parse_route(f"echo={tmp_path / 'missing.wasm'}")


# --------------------------------------------------------------------- the real command


@pytest.fixture
def echo_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process, base = start_server(f"echo={guest_wasm('serve-echo')}", "--workers", "2")
    yield process, base
    stop_server(process)


def test_sigterm_lets_the_request_in_flight_finish(echo_server: tuple[subprocess.Popen[str], str]) -> None:
    process, base = echo_server
    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{base}/echo?spin=1500", content=b"in flight", timeout=30))
    )
    slow.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    slow.join()
    assert answers[0].status_code == 200
    assert answers[0].content == b"args:\nin flight"
    # uvicorn re-raises the signal once it has drained, so the exit reads as a clean SIGTERM.
    assert process.wait(timeout=30) == -signal.SIGTERM
    assert "Traceback" not in process.stderr.read()  # type: ignore[union-attr]


@pytest.mark.slow  # 22-33 s on the 2-core machine
def test_megabyte_bodies_leave_no_memory_behind(echo_server: tuple[subprocess.Popen[str], str]) -> None:
    """5.5 MB in and out per request, 16 at a time: resident memory must not creep."""
    _, base = echo_server
    body = bytes(range(256)) * (5505024 // 256)
    rounds = [asyncio.run(hammer(f"{base}/echo", body, total=48, concurrency=16)) for _ in range(4)]
    assert [r.unexpected for r in rounds] == [0, 0, 0, 0], rounds[0].failures
    ends = [r.rss_at_end for r in rounds]
    # One leaked body per request would add 260 MB a round (780 MB by the last). Each
    # request's wasm memory is unmapped as it ends, so the rounds end within a few MB of each
    # other (92 MiB each here); the margin is for the allocator's cache between its trims.
    assert max(ends[1:]) <= ends[0] + 64 * 2**20, [end // 2**20 for end in ends]


def test_a_load_test_cut_short_by_its_deadline_fails(
    echo_server: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    from wasinn.bench.loadtest import main

    _, base = echo_server
    body = tmp_path / "body"
    body.write_bytes(b"x" * 1000)
    report = tmp_path / "report.json"
    whole = [f"{base}/echo", "--body", str(body), "--total", "8", "--concurrency", "2", "--json", str(report)]
    assert main(whole) == 0
    assert json.loads(report.read_text())["complete"] is True
    # 40 requests of 200 ms on 2 workers need 4 s; the deadline stops them after 1.
    slow = [f"{base}/echo?spin=200", "--body", str(body), "--total", "40", "--concurrency", "2"]
    assert main([*slow, "--deadline", "1", "--json", str(report)]) == 1
    cut = json.loads(report.read_text())
    assert cut["complete"] is False and cut["unexpected"] == 0 and cut["requests"] < 40


def test_a_load_test_without_the_servers_memory_is_an_error(tmp_path: Path) -> None:
    """A /metrics without process_resident_memory_bytes must not pass the memory checks."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from wasinn.bench.loadtest import LoadTestError

    class NoMemory(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            text = b"wasinn_requests_in_flight 0\n"
            self.send_response(200)
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), NoMemory) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/route"
        with pytest.raises(LoadTestError, match="has no process_resident_memory_bytes line"):
            asyncio.run(hammer(url, b"x", total=4, concurrency=2))
        server.shutdown()


def test_the_command_refuses_a_bad_route_in_one_line() -> None:
    from conftest import wasinn_cli

    result = wasinn_cli("serve", "echo=/nonexistent.wasm")
    assert result.returncode == 2
    assert result.stderr == "wasinn: error: route echo: /nonexistent.wasm: no such file\n"


@pytest.mark.usefixtures("openvino_available")
def test_a_model_that_cannot_load_stops_the_start(tmp_path: Path) -> None:
    from conftest import wasinn_cli

    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    preload = f"broken:openvino:cpu:{xml}"
    result = wasinn_cli("serve", "--nn-preload", preload, f"echo={guest_wasm('serve-echo')}")
    assert result.returncode == 2
    assert (
        result.stderr == "wasinn: error: openvino: load needs exactly 2 builder(s) (IR xml, weights), got 1\n"
    )


def test_help_names_the_options() -> None:
    from conftest import wasinn_cli

    result = wasinn_cli("serve", "--help")
    assert result.returncode == 0
    for option in ("--workers", "--nn-preload", "--time-limit", "--memory-page-limit", "--demo", "--ray"):
        assert option in result.stdout
    assert "--replicas" in result.stdout and "--workers" in wasinn_cli("batch", "--help").stdout
    alone = wasinn_cli("serve", "--replicas", "2", f"echo={guest_wasm('serve-echo')}")
    assert (alone.returncode, alone.stderr) == (
        2,
        "wasinn: error: --replicas and --address are options of --ray\n",
    )


def test_serve_is_not_imported_by_wasinn() -> None:
    code = (
        "import sys, wasinn, wasinn.cli\n"
        "print(any(m.split('.')[0] in ('starlette', 'uvicorn') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.stdout.strip() == "False"
