"""Scale-out on a local Ray cluster (node address 127.0.0.1): Ray Serve routes and ``wasinn batch --ray``.

Ray is a 600 MB install (``wasinn[ray]``, part of ``all``); the gate below skips these
tests where it is missing and fails them under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import guest_wasm, require_module, shared_file
from serve_helpers import free_port
from wasinn.faults import keep_fault_handlers
from wasinn.serve.server import ServeConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def local_cluster() -> Iterator[None]:
    require_module("ray")
    with keep_fault_handlers():  # as wasinn.serve.ray does: Ray's handlers would eat guest traps
        import ray

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
            log_to_driver=False,
        )
    yield
    with keep_fault_handlers():
        ray.shutdown()


TRAP_WAT = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'


def test_guest_traps_stay_traps_after_ray_starts_and_stops(tmp_path: Path) -> None:
    """Ray installs its own SIGILL/SIGSEGV handlers (and shutdown resets them): without
    keep_fault_handlers the next trap of any guest killed the host with SIGILL."""
    require_module("ray")
    import wasmtime

    from wasinn import GuestTrap, Runtime
    from wasinn.faults import fault_handler
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
    from wasinn.serve.ray import serve_on_ray

    port = free_port()
    config = ServeConfig(routes={"echo": guest_wasm("serve-echo")}, cache=False)
    stop = threading.Event()
    server = threading.Thread(target=serve_on_ray, args=(config,), kwargs={"port": port, "until": stop})
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            stop.wait(0.5)
        answer = httpx.post(f"{base}/echo?arg=ray", content=b"through Ray Serve", timeout=60)
        assert answer.status_code == 200
        assert answer.content == b"args: ray\nthrough Ray Serve"
        failure = httpx.post(f"{base}/echo?exit=65&stderr=bad", content=b"", timeout=60)
        assert (failure.status_code, failure.json()) == (400, {"error": "bad", "exit_code": 65})
    finally:
        stop.set()
        server.join(timeout=120)


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
    result = wasinn_cli("batch", "--ray", str(pictures), "--out", str(tmp_path / "out"), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
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
