"""A cold server under concurrent first requests, on a route of every backend (issue 16).

A cold ``wasinn serve`` deadlocked in about one start in three when 16 clients came at once:
OpenVINO's binding builds C++ statics on first use, and two threads building one (one holding
the GIL, one the static's guard) waited for each other forever. Every framework's first use
now goes through its gate (:mod:`wasinn.core._first_use`). Before the gate, an OpenVINO route
alone hung in 3 of 20 cold starts on the 2-core development machine (every request timed out);
with it, all eight routes answered in 20 of 20.

``WASINN_COLD_STARTS`` sets how many cold servers: 10 in ``make test`` (about 25 s each, to
keep CI under 30 minutes; a hang as frequent as the old one, 3 starts in 20, shows within 10
starts 80 times in 100), 20 in ``make test-cold`` (96 in 100); ``WASINN_COLD_ROUTES`` (comma
separated) picks routes, e.g. to check one backend against an older build.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cold_stage import (
    CONCURRENT,
    GUEST_DIR,
    REQUEST_TIMEOUT,
    WORKERS,
    ColdRoute,
    build_stage,
    expected_outputs,
    first_requests,
)
from conftest import require_module

for _module in ("starlette", "uvicorn", "httpx", "openvino", "ai_edge_litert", "onnx", "onnxruntime"):
    require_module(_module)
for _module in ("torch", "tensorflow", "llama_cpp", "_pywhispercpp", "componentize_py"):
    require_module(_module)

import httpx  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402

STARTS = int(os.environ.get("WASINN_COLD_STARTS", "10"))


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, list[ColdRoute]]:
    directory = tmp_path_factory.mktemp("cold")
    return directory, build_stage(directory, tiny_model)


@pytest.fixture(scope="module")
def expected(stage: tuple[Path, list[ColdRoute]]) -> dict[str, bytes]:
    return expected_outputs(*stage)


@pytest.fixture
def cold_server(stage: tuple[Path, list[ColdRoute]]) -> Iterator[str]:
    directory, routes = stage
    specs = [f"{route.name}={route.module}" for route in routes]
    process, base = start_server("--workers", str(WORKERS), "--dir", f"{GUEST_DIR}:{directory}", *specs)
    try:
        yield base
    finally:
        stop_server(process)


@pytest.mark.slow  # ~20 s a start on the 2-core machine (a fresh server process each)
@pytest.mark.parametrize("start", range(STARTS))
def test_concurrent_first_requests_on_a_cold_server(
    start: int, stage: tuple[Path, list[ColdRoute]], expected: dict[str, bytes], cold_server: str
) -> None:
    _, routes = stage
    began = time.monotonic()
    answers = first_requests(cold_server, routes)
    for route in routes:
        wrong = [a for a in answers[route.name] if a != (200, expected[route.name])]
        assert not wrong, (
            f"start {start}, route {route.name}: {len(wrong)} of {CONCURRENT} wrong: {wrong[:2]}"
        )
    assert time.monotonic() - began < REQUEST_TIMEOUT
    health = httpx.get(f"{cold_server}/healthz", timeout=10)
    assert health.status_code == 200
