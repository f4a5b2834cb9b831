"""The host (wasinn.host): Runtime and Instance on the fake backend, no framework needed.

WAT guests (tests/wat_guests.py) call ``wasi_ephemeral_nn`` as a C guest would; the model is
wasinn.testing.fake_backend's ``y = x * 2 + c`` standing in for OpenVINO (encoding 0), so
every answer is checked against numpy. Each test takes milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import wasmtime
from wasmtime import component

from conftest import REPO
from wasinn import Errno, Limits, Runtime
from wasinn.abi._errors import unexpected_counts
from wasinn.core import GuestCancelled, GuestTrap, Interruption, TimeLimitExceeded
from wasinn.host import epoch_ticker
from wasinn.testing.fake_backend import FakeBackend, expected, fake_model
from wat_guests import nn_guest_wat, spinner_wat, trap_wat

X = (1.0, -2.0, 3.5, 0.25)


def write_wat(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(source))
    return path


def runtime_for(directory: Path, **options: object) -> Runtime:
    """A runtime whose guests read an empty stdin and write stdout.bin in ``directory``."""
    (directory / "stdin.bin").write_bytes(b"")
    return Runtime(
        stdin=directory / "stdin.bin",
        stdout=directory / "stdout.bin",
        cache_dir=directory / "cache",
        **options,  # type: ignore[arg-type]
    )


def output(directory: Path) -> np.ndarray:
    return np.frombuffer((directory / "stdout.bin").read_bytes(), dtype=np.float32)


def test_run_computes_through_the_core(tmp_path: Path, fake_backend: FakeBackend) -> None:
    guest = write_wat(tmp_path, "nn", nn_guest_wat(fake_model(0.5), x=X))
    with runtime_for(tmp_path) as runtime:
        assert runtime.run(guest) == 0
    np.testing.assert_array_equal(output(tmp_path), expected(X, 0.5))
    assert (fake_backend.stats.loads, fake_backend.stats.computes) == (1, 1)
    assert fake_backend.stats.open_contexts == 0  # the guest never finalized it: close() did


@pytest.mark.parametrize("code", [0, 3, 126, 255])
def test_exit_codes_are_the_guests(tmp_path: Path, fake_backend: FakeBackend, code: int) -> None:
    """Every u8 code comes back, including those wasmtime's own proc_exit refuses (≥ 126)."""
    guest = write_wat(tmp_path, "nn", nn_guest_wat(fake_model(), exit_code=code))
    assert runtime_for(tmp_path).run(guest) == code
    np.testing.assert_array_equal(output(tmp_path), expected((1, 2, 3, 4)))


def test_a_failed_call_is_its_errno(tmp_path: Path, fake_backend: FakeBackend) -> None:
    """A corrupt model is errno 1 (invalid_argument), the guest's exit code here."""
    guest = write_wat(tmp_path, "nn", nn_guest_wat(b"not a model"))
    assert runtime_for(tmp_path).run(guest) == Errno.INVALID_ARGUMENT


def test_preloaded_models_load_once_for_every_instance(tmp_path: Path, fake_backend: FakeBackend) -> None:
    (tmp_path / "m.fake").write_bytes(fake_model(3.0))
    guest = write_wat(tmp_path, "named", nn_guest_wat(name="m", x=X))
    with runtime_for(tmp_path, preload=[f"m:openvino:cpu:{tmp_path / 'm.fake'}"]) as runtime:
        for _ in range(3):
            assert runtime.run(guest) == 0
            np.testing.assert_array_equal(output(tmp_path), expected(X, 3.0))
    assert (fake_backend.stats.loads, fake_backend.stats.computes) == (1, 3)


def test_unexpected_exception_in_compute_is_runtime_error(
    tmp_path: Path, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The policy (abi/_errors.py): a RuntimeError escaping a backend's compute reaches the
    guest as errno 5, never a trap; logged with its traceback, counted; the host goes on."""
    failing = write_wat(tmp_path, "failing", nn_guest_wat(fake_model(raises="RuntimeError")))
    working = write_wat(tmp_path, "working", nn_guest_wat(fake_model(), x=X))
    before = unexpected_counts().get("wasi_ephemeral_nn", 0)
    with runtime_for(tmp_path) as runtime, caplog.at_level(logging.ERROR, logger="wasinn"):
        assert runtime.run(failing) == Errno.RUNTIME_ERROR
        assert runtime.run(working) == 0
    np.testing.assert_array_equal(output(tmp_path), expected(X))
    assert unexpected_counts()["wasi_ephemeral_nn"] == before + 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "wasi_ephemeral_nn compute: unexpected RuntimeError, answered with runtime_error"
    )
    assert record.exc_info is not None and "compute raised RuntimeError on purpose" in str(record.exc_info[1])
    assert fake_backend.stats.open_contexts == 0


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "GuestCancelled"])
def test_a_stop_inside_a_host_call_stops_the_guest(
    tmp_path: Path, fake_backend: FakeBackend, stop: str
) -> None:
    """What is no answer is not turned into an errno: it ends the run and comes out of it."""
    guest = write_wat(tmp_path, "stop", nn_guest_wat(fake_model(raises=stop)))
    raised = KeyboardInterrupt if stop == "KeyboardInterrupt" else GuestCancelled
    with runtime_for(tmp_path) as runtime:
        with pytest.raises(raised, match=f"compute raised {stop} on purpose"):
            runtime.run(guest)
        assert runtime.run(write_wat(tmp_path, "ok", nn_guest_wat(fake_model()))) == 0


def test_a_trap_names_its_function(tmp_path: Path) -> None:
    guest = write_wat(tmp_path, "trap", trap_wat())
    with pytest.raises(
        GuestTrap, match="^guest trapped: wasm `unreachable` instruction executed in function boom$"
    ):
        runtime_for(tmp_path).run(guest)


def test_time_limit_stops_wasm_code(tmp_path: Path) -> None:
    guest = write_wat(tmp_path, "spin", spinner_wat())
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match="time limit of 100 ms exceeded"):
        runtime_for(tmp_path, limits=Limits(time_limit_ms=100)).run(guest)
    assert time.monotonic() - started < 5


def test_time_limit_stops_a_native_compute(tmp_path: Path, fake_backend: FakeBackend) -> None:
    guest = write_wat(tmp_path, "slow", nn_guest_wat(fake_model(seconds=30)))
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match="^time limit of 150 ms exceeded during compute$"):
        runtime_for(tmp_path, limits=Limits(time_limit_ms=150)).run(guest)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("where", ["wasm", "compute"])
def test_interruption_from_another_thread(tmp_path: Path, fake_backend: FakeBackend, where: str) -> None:
    """A server's stop (its client left): the guest ends with GuestCancelled and its reason,
    whether it spins in wasm code or waits in a native compute."""
    source = spinner_wat() if where == "wasm" else nn_guest_wat(fake_model(seconds=30))
    guest = write_wat(tmp_path, where, source)
    runtime = runtime_for(tmp_path)
    interruption = Interruption()
    timer = threading.Timer(0.1, interruption.interrupt, ["the client left"])
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(GuestCancelled, match="the client left"):
            runtime.run_guest(runtime.compile_guest(guest), stdin=b"", interruption=interruption)
    finally:
        timer.cancel()
        runtime.close()
    assert time.monotonic() - started < 5
    assert fake_backend.stats.running == 0  # the compute was cancelled, not left running


@pytest.mark.parametrize("watched", [False, True])
def test_restart_clock_counts_the_limit_from_the_run(
    tmp_path: Path, fake_backend: FakeBackend, watched: bool
) -> None:
    """A pre-instantiated guest's time limit counts from restart_clock(), not from when it was made."""
    guest = write_wat(tmp_path, "nn", nn_guest_wat(fake_model(), computes=20))
    runtime = runtime_for(tmp_path, limits=Limits(time_limit_ms=100))
    interruption = Interruption() if watched else None
    with epoch_ticker(runtime.engine):
        stale = runtime.instantiate(guest, interruption=interruption)
        fresh = runtime.instantiate(guest, interruption=interruption)
        time.sleep(0.25)
        with stale, pytest.raises(TimeLimitExceeded):
            stale.run()
        with fresh:
            fresh.restart_clock()
            assert fresh.run() == 0
    np.testing.assert_array_equal(output(tmp_path), expected((1, 2, 3, 4)))


def test_close_releases_handles_then_the_store_once(tmp_path: Path, fake_backend: FakeBackend) -> None:
    guest = write_wat(tmp_path, "nn", nn_guest_wat(fake_model()))
    runtime = runtime_for(tmp_path)
    instance = runtime.instantiate(guest)
    assert instance.run() == 0
    assert fake_backend.stats.open_contexts == 1  # the guest keeps its context until close
    assert instance.memory is not None
    instance.close()
    assert fake_backend.stats.open_contexts == 0
    with pytest.raises(ValueError, match="already closed"):
        instance.memory.data_len(instance.store)  # the store (and its linear memory) is gone
    instance.close()  # idempotent
    assert fake_backend.stats.open_contexts == 0


def test_compile_guest_caches_modules_and_components(tmp_path: Path) -> None:
    module_path = write_wat(tmp_path, "spin", spinner_wat())
    component_path = tmp_path / "component.wasm"
    component_path.write_bytes(wasmtime.wat2wasm((REPO / "tests/guests/wit_stale_handles.wat").read_text()))
    cache = tmp_path / "cache"
    runtime = Runtime(cache_dir=cache)
    assert isinstance(runtime.compile_guest(module_path), wasmtime.Module)
    assert isinstance(runtime.compile_guest(component_path), component.Component)
    entries = sorted(cache.glob("*.cwasm"))
    assert len(entries) == 2
    stamps = [entry.stat().st_mtime_ns for entry in entries]
    # A second runtime (another process, in effect) deserializes instead of compiling again.
    again = Runtime(cache_dir=cache)
    assert isinstance(again.compile_guest(module_path), wasmtime.Module)
    assert isinstance(again.compile_guest(component_path), component.Component)
    assert [entry.stat().st_mtime_ns for entry in sorted(cache.glob("*.cwasm"))] == stamps
    uncached = Runtime(cache=False, cache_dir=tmp_path / "unused")
    assert isinstance(uncached.compile_guest(module_path), wasmtime.Module)
    assert not (tmp_path / "unused").exists()
