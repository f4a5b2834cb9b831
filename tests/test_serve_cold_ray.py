"""``wasinn serve --ray --replicas 2`` under concurrent first requests, deployed cold each time.

The same hang as tests/test_serve_cold.py, one level up: a cold replica hung on its first
concurrent requests, and Ray routed around it only later (5 of the first 16 requests timed
out after 60 s). Each start here deploys the app anew (two new replica processes, nothing
imported), waits until Serve shows both running, and sends 16 requests at once to each route.
A Ray deployment costs 10-20 s on two cores, so ``WASINN_COLD_RAY_STARTS`` defaults to 5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cold_stage import CONCURRENT, GUEST_DIR, ColdRoute, build_stage, expected_outputs, first_requests
from conftest import require_module
from serve_helpers import serving_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_STARTS = int(os.environ.get("WASINN_COLD_RAY_STARTS", "5"))
RAY_ROUTES = ("openvino", "onnx", "component")  # the reported hang, a second framework, WIT


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, list[ColdRoute]]:
    directory = tmp_path_factory.mktemp("cold-ray")
    routes = [route for route in build_stage(directory, tiny_model) if route.name in RAY_ROUTES]
    return directory, routes


@pytest.fixture(scope="module")
def expected(stage: tuple[Path, list[ColdRoute]]) -> dict[str, bytes]:
    return expected_outputs(*stage)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    require_module("ray")
    from wasinn.serve.faults import keep_fault_handlers
    from wasinn.serve.ray import _ray, connect

    connect(None, num_cpus=2, configure_logging=False, log_to_driver=False)
    yield
    with keep_fault_handlers():
        _ray().shutdown()


@pytest.mark.parametrize("start", range(RAY_STARTS))
def test_concurrent_first_requests_on_cold_ray_replicas(
    start: int, cluster: None, stage: tuple[Path, list[ColdRoute]], expected: dict[str, bytes]
) -> None:
    from wasinn.serve.config import ServeConfig

    directory, routes = stage
    config = ServeConfig(
        routes={route.name: route.module for route in routes}, workers=4, dirs=(f"{GUEST_DIR}:{directory}",)
    )
    with serving_on_ray(config, replicas=2) as base:
        answers = first_requests(base, routes)
    for route in routes:
        wrong = [a for a in answers[route.name] if a != (200, expected[route.name])]
        assert not wrong, f"start {start}, {route.name}: {len(wrong)} of {CONCURRENT} wrong: {wrong[:2]}"
