"""Scale-out on a local Ray cluster (node address 127.0.0.1): Ray Serve routes and ``wasinn batch --ray``.

Ray is a 600 MB install (``wasinn[ray]``, part of ``all``); the gate below skips these
tests where it is missing and fails them under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import guest_wasm, require_module, shared_file
from serve_helpers import serving_on_ray
from wasinn.serve.config import ServeConfig
from wasinn.serve.faults import keep_fault_handlers

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def local_cluster() -> Iterator[None]:
    """A 2-CPU local cluster started as wasinn starts one: on loopback only."""
    require_module("ray")
    from wasinn.serve.ray import _ray, connect

    address = connect(None, num_cpus=2, configure_logging=False, log_to_driver=False)
    ray = _ray()
    # Ray would otherwise put its node (and GCS) on the machine's network address.
    assert address.startswith("127.0.0.1:")
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    yield
    with keep_fault_handlers():  # as wasinn.serve.ray does: Ray's handlers would eat guest traps
        ray.shutdown()


TRAP_WAT = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'


def test_guest_traps_stay_traps_after_ray_starts_and_stops(tmp_path: Path) -> None:
    """Ray installs its own SIGILL/SIGSEGV handlers (and shutdown resets them): without
    keep_fault_handlers the next trap of any guest killed the host with SIGILL."""
    require_module("ray")
    import wasmtime

    from wasinn import GuestTrap, Runtime
    from wasinn.serve.faults import fault_handler
    from wasinn.serve.ray import _ray, connect

    trapper = tmp_path / "trap.wasm"
    trapper.write_bytes(wasmtime.wat2wasm(TRAP_WAT))
    runtime = Runtime(cache=False)
    with pytest.raises(GuestTrap):
        runtime.run(trapper)  # wasmtime's handlers are in place from here on
    handlers = [fault_handler(signum) for signum in (4, 11)]
    connect(None)
    with keep_fault_handlers():
        _ray().shutdown()
    assert [fault_handler(signum) for signum in (4, 11)] == handlers
    with pytest.raises(GuestTrap, match="unreachable"):
        runtime.run(trapper)


def test_ray_serve_runs_the_same_routes(local_cluster: None) -> None:
    from ray import serve

    # mapped_responses as `wasinn serve` sets it: the deployment must turn it off (Ray Serve
    # pickles response bodies; a memoryview of a mapped file cannot be).
    config = ServeConfig(routes={"echo": guest_wasm("serve-echo")}, cache=False, mapped_responses=True)
    # Ready only once both replicas run: Serve answered before the second was up, and a
    # busy machine saw {'RUNNING': 1, 'STARTING': 1} here. serve_on_ray bounds the wait.
    with serving_on_ray(config, replicas=2) as base:
        deployments = serve.status().applications["wasinn"].deployments
        assert [d.replica_states for d in deployments.values()] == [{"RUNNING": 2}]
        assert httpx.get(f"{base}/healthz", timeout=60).status_code == 200
        answer = httpx.post(f"{base}/echo?arg=ray", content=b"through Ray Serve", timeout=60)
        assert answer.status_code == 200
        assert answer.content == b"args: ray\nthrough Ray Serve"
        failure = httpx.post(f"{base}/echo?exit=65&stderr=bad", content=b"", timeout=60)
        assert (failure.status_code, failure.json()) == (400, {"error": "bad", "exit_code": 65})
        # A trap inside a replica is the guest's 500 (wasmtime's fault handlers survived Ray).
        trapped = httpx.post(f"{base}/echo?trap", content=b"", timeout=60)
        assert trapped.status_code == 500
        assert trapped.json()["error"].startswith("guest trapped: wasm `unreachable` instruction executed")
        assert httpx.post(f"{base}/echo", content=b"after", timeout=60).content == b"args:\nafter"
        # /metrics answers for the replica that takes the scrape, which with two replicas may
        # have served none of the requests above: scrape until one that did answers.
        counted = 'wasinn_requests_total{route="echo",status="'
        scrapes = [httpx.get(f"{base}/metrics", timeout=60).text for _ in range(3)]
        while counted not in scrapes[-1] and len(scrapes) < 40:
            scrapes.append(httpx.get(f"{base}/metrics", timeout=60).text)
        metrics = scrapes[-1]
        assert all('wasinn_guests_running{pool="echo"} 0' in scrape for scrape in scrapes)
        assert counted in metrics
        rss = [line for line in metrics.splitlines() if line.startswith("process_resident_memory_bytes ")]
        assert len(rss) == 1 and int(rss[0].split()[1]) > 0
        # --replicas reached Ray Serve: two replica processes run the app.
        deployments = serve.status().applications["wasinn"].deployments
        assert [d.replica_states for d in deployments.values()] == [{"RUNNING": 2}]


class FakeServe:
    """Ray Serve's status as the replicas of a 2-replica app start, one poll at a time."""

    def __init__(self, *states: tuple[str, dict[str, int], str]) -> None:
        self.states = list(states)  # (the app's status, its replicas' states, the proxy's)
        self.polls = 0

    def status(self) -> object:
        from types import SimpleNamespace

        status, replicas, proxy = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        deployment = SimpleNamespace(replica_states=replicas)
        app = SimpleNamespace(status=status, message="boom", deployments={"WasinnServe": deployment})
        return SimpleNamespace(applications={"wasinn": app}, proxies={"node": proxy})


def test_ready_waits_for_every_replica_and_gives_up_in_one_line() -> None:
    from wasinn.serve.ray import ServeNotReady, wait_for_replicas

    half = {"RUNNING": 1, "STARTING": 1}
    starting = FakeServe(
        ("RUNNING", half, "HEALTHY"),
        ("RUNNING", {"RUNNING": 2}, "STARTING"),
        ("RUNNING", {"RUNNING": 2}, "HEALTHY"),
    )
    assert wait_for_replicas(starting, 2, poll=0.01) == {"RUNNING": 2}
    assert starting.polls == 3
    stuck = FakeServe(("RUNNING", half, "HEALTHY"))
    proxies = "HTTP proxies: ['HEALTHY']"
    message = f"2 replica(s) asked for, not all running after 0 s (replica states: {half}; {proxies})"
    with pytest.raises(ServeNotReady, match=re.escape(message)):
        wait_for_replicas(stuck, 2, timeout=0.2, poll=0.01)
    with pytest.raises(ServeNotReady, match="could not deploy the app: boom"):
        wait_for_replicas(FakeServe(("DEPLOY_FAILED", {}, "HEALTHY")), 2, timeout=5, poll=0.01)


@pytest.mark.usefixtures("openvino_available")
def test_wasinn_batch_ray_segments_a_folder(tmp_path: Path) -> None:
    """The command as a person runs it: it starts its own loopback cluster and stops it."""
    import numpy as np

    from conftest import native_infer, wasinn_cli
    from wasinn.tools import im2tensor
    from wasinn.tools.visualize import class_shares, segmentation_labels

    photo = shared_file("road-segmentation-adas-0001", "empty_road_mapillary.jpg")
    pictures = tmp_path / "in"
    pictures.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(photo, pictures / name)
    (pictures / "notes.txt").write_text("not a picture")
    env = {**os.environ, "WASINN_MODELS": str(shared_file())}
    out = str(tmp_path / "out")
    result = wasinn_cli("batch", "--ray", "--workers", "2", str(pictures), "--out", out, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # The cluster it started is addressed on loopback, not the machine's network address.
    assert "wasinn batch: Ray cluster at 127.0.0.1:" in result.stderr
    # --workers reached Ray Data: its progress log counts the Segmenter actor pool.
    assert "Map(Segmenter)" in result.stderr and "Actors: 2 (" in result.stderr
    assert f"3 pictures segmented into {tmp_path / 'out'}" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "shares.jsonl").read_text().splitlines()]
    assert [row["name"] for row in rows] == ["a.jpg", "b.jpg", "c.jpg"]
    tensor = im2tensor(photo, "512x896x3xfp32")[np.newaxis]
    model = shared_file("road-segmentation-adas-0001", "road-segmentation-adas-0001.xml")
    (scores,) = native_infer(model, [tensor.transpose(0, 3, 1, 2)])
    expected = class_shares(segmentation_labels(scores))
    for row in rows:
        assert {k: row[k] for k in expected} == pytest.approx(expected, abs=0.01)
        assert (tmp_path / "out" / f"{Path(row['name']).stem}.png").is_file()


class _FlakyRay:
    """Ray's surface that connect() uses; its first init fails as a raylet that never started."""

    def __init__(self, failures: int, message: str) -> None:
        self.failures, self.message = failures, message
        self.inits = self.shutdowns = 0

    def init(self, **_options: object) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception(self.message)  # noqa: TRY002 (what Ray itself raises)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def get_runtime_context(self) -> object:
        return type("Context", (), {"gcs_address": "127.0.0.1:1"})()


def test_a_local_node_that_did_not_start_is_started_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean-clone run saw Ray's raylet never start in one of many local clusters (Ray's
    fixed 30 s): connect() starts a local node once more; other failures, a second timeout,
    and a cluster it was asked to join still fail at once."""
    import wasinn.serve.ray as ray_module

    timeout = "The current node timed out during startup. This could happen because ..."
    monkeypatch.setattr(ray_module, "_ray_initialized", lambda: False)
    monkeypatch.setattr(ray_module, "_local_only", lambda: None)
    flaky = _FlakyRay(1, timeout)
    monkeypatch.setattr(ray_module, "_ray", lambda: flaky)
    assert ray_module.connect(None) == "127.0.0.1:1"
    assert (flaky.inits, flaky.shutdowns) == (2, 1)
    refused = [(_FlakyRay(2, timeout), None), (_FlakyRay(1, "other"), None), (_FlakyRay(1, timeout), "x:1")]
    for ray, address in refused:
        monkeypatch.setattr(ray_module, "_ray", lambda ray=ray: ray)
        with pytest.raises(Exception, match="timed out|other"):
            ray_module.connect(address)
