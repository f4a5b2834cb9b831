"""The soak of ``wasinn serve`` (``make soak``: 10 minutes) as a 60-second run, and what it found.

The same assertions as ``make soak`` (``python -m wasinn.bench.soak``): mixed traffic at
concurrency 32 (road tensors and photos, birds, chat streams and completions, embeddings,
malformed bodies, clients that leave), no hang, every answer right, no 5xx counted by the
server, no traceback in its log, everything drained after the load, RSS drift under 5 %.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import guest_wasm, require_module, shared_file

require_module("starlette")
require_module("httpx")

import httpx  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.slow

SOAK_SECONDS = 60.0


async def leave_mid_body(base: str, path: str) -> None:
    """Headers that promise 1,000 bytes, 10 of them, and the connection closed."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n"
    writer.write(head.encode() + b"x" * 10)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_a_client_that_leaves_mid_body_is_499_not_a_500(tmp_path: Path) -> None:
    """Starlette raises ClientDisconnect from the body stream: it was an 'internal error', a
    500 in /metrics and a traceback in the log for each such client (found by the soak)."""
    log = tmp_path / "server.log"
    process, base = start_server(f"echo={guest_wasm('serve-echo')}", "--workers", "1", log=log)
    try:
        asyncio.run(leave_mid_body(base, "/echo"))
        counted = 'wasinn_requests_total{route="echo",status="499"} 1'
        for _ in range(100):
            metrics = httpx.get(f"{base}/metrics").text
            if counted in metrics:
                break
            time.sleep(0.05)
        assert counted in metrics
        assert 'status="500"' not in metrics
        assert httpx.post(f"{base}/echo", content=b"next").content == b"args:\nnext"
    finally:
        stop_server(process)
    assert "Traceback" not in log.read_text()


@pytest.mark.usefixtures("openvino_available")
def test_a_minute_of_mixed_traffic_at_concurrency_32(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make soak` for 60 s instead of 600: the same server, mix and assertions."""
    require_module("ai_edge_litert")
    from wasinn.bench.soak import DRIFT_BOUND, run_soak, summary
    from wasinn.bench.soak_traffic import MIX

    shared_file("road-segmentation-adas-0001", "empty_road_mapillary.jpg")
    shared_file("birds-v1", "bird.jpg")
    guest_wasm("nn-pipe")
    guest_wasm("llm-serve")
    monkeypatch.setenv("WASINN_MODELS", str(shared_file()))
    report = run_soak(seconds=SOAK_SECONDS, concurrency=32, tiny_model=tiny_model)
    print(summary(report))
    assert report["failures"] == []
    assert report["hangs"] == 0 and report["unexpected"] == 0
    # every kind of request ran, and got only the status it must
    for name, (_, _, expect) in MIX.items():
        route = report["routes"][name]
        assert route["requests"] > 0 and route["statuses"] == {expect: route["requests"]}, (name, route)
    # the server's own count: 400s for the malformed bodies, 499s for clients that left mid-body
    assert report["server_5xx"] == 0, report["server_statuses"]
    assert report["server_tracebacks"] == 0
    assert report["drained"] and report["healthy_after"]
    assert report["rss"]["drift"] < DRIFT_BOUND, report["rss"]
    assert report["passed"]
