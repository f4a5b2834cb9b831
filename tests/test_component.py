"""ComponentInstance through the instance contract, on the fake backend (no framework).

The guest is tests/guests/wit_conformance.py (a componentize-py wasi:cli command importing
wasi:nn; built once and cached by content, as in tests/test_wit.py); its model is
wasinn.testing.fake_backend's ``y = x * 2 + c``, preloaded as ``m`` for OpenVINO, which the
fake stands in for. The contract is the module's (tests/test_host.py): run() gives the exit
code or raises what stopped the guest, restart_clock() starts the time limit, close()
releases the guest's handles and its store, once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, python_guest
from wasinn import Limits, Runtime
from wasinn.abi._errors import unexpected_counts
from wasinn.core import GuestCancelled, Interruption, TimeLimitExceeded
from wasinn.host import ComponentInstance, epoch_ticker
from wasinn.testing.fake_backend import FakeBackend, expected, fake_model
from wasinn.tools.build import NN_VERSIONS

X = (1.0, -2.0, 3.5, 0.25)
COMPUTE = ["compute", "m", "x:1x4:" + ",".join(str(v) for v in X)]


@pytest.fixture(scope="session")
def conformance_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    guests = REPO / "tests" / "guests"
    return python_guest(guests / "wit_conformance.py", tmp_path_factory.mktemp("guest"), versions=NN_VERSIONS)


def runtime_for(directory: Path, model: bytes, limits: Limits | None = None) -> Runtime:
    (directory / "m.fake").write_bytes(model)
    return Runtime(
        dirs=[f".:{directory}"],
        preload=[f"m:openvino:cpu:{directory / 'm.fake'}"],
        stdout=directory / "stdout.txt",
        limits=limits or Limits(),
    )


def result(directory: Path) -> Any:
    return json.loads((directory / "stdout.txt").read_text().strip().splitlines()[-1])


def computed(outcome: Any) -> np.ndarray:
    """The one output of a compute scenario, checked for its name, shape and type."""
    [[name, dims, kind, data]] = outcome["ok"]
    assert (name, dims, kind) == ("y", [1, 4], "FP32")
    return np.frombuffer(bytes.fromhex(data), dtype=np.float32)


def test_a_component_runs_through_the_core(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    with runtime_for(tmp_path, fake_model(0.5)) as runtime:
        instance = runtime.instantiate_guest(conformance_wasm, COMPUTE)
        assert isinstance(instance, ComponentInstance)
        with instance:
            assert instance.run() == 0
        np.testing.assert_array_equal(computed(result(tmp_path)), expected(X, 0.5))
        assert runtime.run_guest(runtime.compile_guest(conformance_wasm), COMPUTE, stdin=b"") == 0
    assert (fake_backend.stats.loads, fake_backend.stats.computes) == (1, 2)  # one preload, shared


@pytest.mark.parametrize(("code", "status"), [(0, 0), (3, 1)])
def test_exit_status(conformance_wasm: Path, tmp_path: Path, code: int, status: int) -> None:
    """wasi:cli/exit 0.2.0 carries only ok or err: any non-zero status arrives as 1."""
    assert runtime_for(tmp_path, fake_model()).run(conformance_wasm, ["exit", str(code)]) == status


def test_unexpected_exception_in_compute_is_runtime_error(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The policy (abi/_errors.py): a RuntimeError escaping a backend's compute is an error
    resource with code runtime-error, as wasmtime answers every backend failure; not a trap.
    Logged with its traceback and counted; the guest runs on, and so does the host."""
    before = unexpected_counts().get("wasi:nn", 0)
    with (
        runtime_for(tmp_path, fake_model(raises="RuntimeError")) as runtime,
        caplog.at_level(logging.ERROR, logger="wasinn"),
    ):
        assert runtime.run(conformance_wasm, COMPUTE) == 0
    assert result(tmp_path) == {
        "error": [
            "runtime-error",
            "internal error in wasi:nn compute: RuntimeError: fake: compute raised RuntimeError on purpose",
        ]
    }
    assert unexpected_counts()["wasi:nn"] == before + 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "wasi:nn compute: unexpected RuntimeError, answered with runtime_error"
    assert record.exc_info is not None
    assert fake_backend.stats.open_contexts == 0
    with runtime_for(tmp_path, fake_model()) as runtime:
        assert runtime.run(conformance_wasm, COMPUTE) == 0
    np.testing.assert_array_equal(computed(result(tmp_path)), expected(X))


def test_a_stop_inside_a_host_call_stops_the_component(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    with pytest.raises(GuestCancelled, match="compute raised GuestCancelled on purpose"):
        runtime_for(tmp_path, fake_model(raises="GuestCancelled")).run(conformance_wasm, COMPUTE)
    assert fake_backend.stats.open_contexts == 0


def test_time_limit_stops_a_native_compute(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    runtime = runtime_for(tmp_path, fake_model(seconds=30), Limits(time_limit_ms=1500))
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match="^time limit of 1500 ms exceeded during compute$"):
        runtime.run(conformance_wasm, COMPUTE)
    assert time.monotonic() - started < 10
    assert fake_backend.stats.running == 0


def test_interruption_from_another_thread(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    runtime = runtime_for(tmp_path, fake_model(seconds=30))
    compiled = runtime.compile_guest(conformance_wasm)
    interruption = Interruption()
    timer = threading.Timer(0.5, interruption.interrupt, ["the client left"])
    timer.start()
    try:
        with pytest.raises(GuestCancelled, match="the client left"):
            runtime.run_guest(compiled, COMPUTE, stdin=b"", interruption=interruption)
    finally:
        timer.cancel()
        runtime.close()
    assert fake_backend.stats.running == 0 and fake_backend.stats.open_contexts == 0


def test_restart_clock_counts_the_limit_from_the_run(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    runtime = runtime_for(tmp_path, fake_model(), Limits(time_limit_ms=1000))
    compiled = runtime.compile_guest(conformance_wasm)
    with epoch_ticker(runtime.engine):
        stale = runtime.instantiate_guest(compiled, COMPUTE, interruption=Interruption())
        fresh = runtime.instantiate_guest(compiled, COMPUTE, interruption=Interruption())
        time.sleep(1.1)
        with stale, pytest.raises(TimeLimitExceeded):
            stale.run()
        with fresh:
            fresh.restart_clock()
            assert fresh.run() == 0
    np.testing.assert_array_equal(computed(result(tmp_path)), expected(X))


def test_close_frees_what_the_guest_kept_then_the_store_once(
    conformance_wasm: Path, tmp_path: Path, fake_backend: FakeBackend
) -> None:
    """The "leak" scenario leaves a graph, a context, a tensor and an error undropped."""
    runtime = runtime_for(tmp_path, fake_model())
    instance = runtime.instantiate_guest(conformance_wasm, ["leak", "m"])
    assert instance.run() == 0
    assert result(tmp_path) == "kept"
    assert fake_backend.stats.open_contexts == 1
    instance.close()
    assert fake_backend.stats.open_contexts == 0
    with pytest.raises(ValueError, match="already closed"):
        instance.store.gc()
    instance.close()  # idempotent
