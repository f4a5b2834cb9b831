"""--memory-page-limit, --time-limit and --gas-limit: a guest cannot outgrow or outrun them;
nor run on once another thread interrupts it (a server whose client left)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import wasmtime

from conftest import guest_wasm, wasinn_run
from wasinn import Errno, LimitExceeded, Limits, Runtime
from wasinn.core import GuestCancelled, Interruption, TimeLimitExceeded, run_within
from wasinn.host import epoch_ticker

SPIN = '(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))'
# Grows memory by the page count in its first argument's length… kept simpler: grow by 3
# pages and exit with 0 when memory.grow failed (-1), 1 when it succeeded.
GROW = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.ne (memory.grow (i32.const 3)) (i32.const -1)))))
"""


def write_wat(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(source))
    return path


def test_memory_grow_past_the_page_limit_returns_minus_one(tmp_path: Path) -> None:
    module = write_wat(tmp_path, "grow", GROW)
    assert Runtime(cache=False).run(module) == 1  # unlimited: the grow succeeds
    assert Runtime(cache=False, limits=Limits(memory_pages=2)).run(module) == 0
    assert Runtime(cache=False, limits=Limits(memory_pages=4)).run(module) == 1
    assert wasinn_run("--memory-page-limit", "2", str(module)).returncode == 0


def test_time_limit_stops_a_spinning_guest(tmp_path: Path) -> None:
    module = write_wat(tmp_path, "spin", SPIN)
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="time limit of 200 ms exceeded"):
        Runtime(cache=False, limits=Limits(time_limit_ms=200)).run(module)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 2.0
    result = wasinn_run("--time-limit", "200", str(module))
    assert result.returncode == 124
    assert result.stderr == "wasinn: error: time limit of 200 ms exceeded\n"


def test_gas_limit_stops_a_spinning_guest(tmp_path: Path) -> None:
    module = write_wat(tmp_path, "spin", SPIN)
    with pytest.raises(LimitExceeded, match="gas limit of 100000 exceeded"):
        Runtime(cache=False, limits=Limits(gas=100_000)).run(module)
    result = wasinn_run("--gas-limit", "100000", str(module))
    assert (result.returncode, result.stderr) == (124, "wasinn: error: gas limit of 100000 exceeded\n")


def test_an_interruption_stops_wasm_code_within_a_tick(tmp_path: Path) -> None:
    runtime = Runtime(cache=False)
    interruption = Interruption()
    module = write_wat(tmp_path, "spin", SPIN)
    timer = threading.Timer(0.2, interruption.interrupt, args=("the client left",))
    with epoch_ticker(runtime.engine), runtime.instantiate(module, interruption=interruption) as instance:
        timer.start()
        started = time.perf_counter()
        with pytest.raises(GuestCancelled, match="^the client left$"):
            instance.run()
        stopped = time.perf_counter() - started
    timer.join()
    assert 0.15 <= stopped < 1.0, stopped


def test_an_interruptible_guest_keeps_its_time_limit(tmp_path: Path) -> None:
    runtime = Runtime(cache=False, limits=Limits(time_limit_ms=200))
    module = write_wat(tmp_path, "spin", SPIN)
    with (
        epoch_ticker(runtime.engine),
        runtime.instantiate(module, interruption=Interruption()) as instance,
        pytest.raises(TimeLimitExceeded, match="^time limit of 200 ms exceeded$"),
    ):
        instance.run()


def test_an_interruption_wakes_a_native_compute_and_asks_it_to_cancel() -> None:
    class SlowCompute:
        def __init__(self) -> None:
            self.cancelled = threading.Event()

        def compute(self) -> None:
            self.cancelled.wait(30)  # a framework that stops when cancelled

        def cancel(self) -> None:
            self.cancelled.set()

    context, interruption = SlowCompute(), Interruption()
    timer = threading.Timer(0.1, interruption.interrupt, args=("the client left",))
    timer.start()
    started = time.perf_counter()
    with pytest.raises(GuestCancelled, match="^the client left$"):
        run_within(context, None, interruption)  # type: ignore[arg-type]
    timer.join()
    assert context.cancelled.is_set()
    assert time.perf_counter() - started < 5


def test_gas_limit_lets_a_small_guest_finish() -> None:
    assert (
        Runtime(cache=False, limits=Limits(gas=10_000_000)).run(guest_wasm("wasi-probe"), ["exit", "3"]) == 3
    )


@pytest.mark.usefixtures("openvino_available")
def test_time_limit_reaches_into_native_inference(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "road-segmentation-adas-0001"
    for name in ("road-segmentation-adas-0001.xml", "road-segmentation-adas-0001.bin"):
        shutil.copy(folder / name, tmp_path / name)
    np.zeros((1, 3, 512, 896), np.float32).tofile(tmp_path / "in.tensor")
    args = [
        "--model",
        "road-segmentation-adas-0001.xml",
        "--model",
        "road-segmentation-adas-0001.bin",
        "--input",
        "0:f32:1x3x512x896:in.tensor",
        "--repeat",
        "1000",
    ]
    started = time.monotonic()
    result = wasinn_run(
        "--time-limit", "3000", "--dir", ".:.", str(guest_wasm("nn-run")), *args, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 124, result.stderr
    assert result.stderr.startswith("wasinn: error: time limit of 3000 ms exceeded")
    assert elapsed < 15


def test_host_caps_answer_with_errno(tiny_ir: tuple[Path, Path]) -> None:
    from conftest import make_probe

    xml, weights = tiny_ir
    probe = make_probe(Runtime(cache=False, limits=Limits(max_model_bytes=100, max_graphs=1)), pages=2)
    array, count = probe.builders([xml.read_bytes(), weights.read_bytes()])
    assert probe.call("load", array, count, 0, 0, 64) == Errno.RUNTIME_ERROR
    probe = make_probe(Runtime(cache=False, limits=Limits(max_graphs=1, max_contexts=1)), pages=2)
    array, count = probe.builders([xml.read_bytes(), weights.read_bytes()])
    assert probe.call("load", array, count, 0, 0, 64) == Errno.SUCCESS
    assert probe.call("load", array, count, 0, 0, 64) == Errno.RUNTIME_ERROR
    assert probe.call("init_execution_context", 0, 68) == Errno.SUCCESS
    assert probe.call("init_execution_context", 0, 68) == Errno.RUNTIME_ERROR
    # The tiny model declares 16-byte tensors: refused at load under an 8-byte cap.
    probe = make_probe(Runtime(cache=False, limits=Limits(max_tensor_bytes=8)), pages=2)
    array, count = probe.builders([xml.read_bytes(), weights.read_bytes()])
    assert probe.call("load", array, count, 0, 0, 64) == Errno.RUNTIME_ERROR


def test_tensor_cap_applies_to_inputs_of_dynamic_models(tmp_path: Path) -> None:
    import openvino as ov
    import openvino.opset13 as ops

    from conftest import make_probe, require_module

    require_module("openvino")
    x = ops.parameter(ov.PartialShape([-1, 4]), ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "dynamic"), tmp_path / "dynamic.xml")
    blobs = [(tmp_path / "dynamic.xml").read_bytes(), (tmp_path / "dynamic.bin").read_bytes()]
    probe = make_probe(Runtime(cache=False, limits=Limits(max_tensor_bytes=32)), pages=2)
    array, count = probe.builders(blobs)
    assert probe.call("load", array, count, 0, 0, 64) == Errno.SUCCESS
    assert probe.call("init_execution_context", 0, 68) == Errno.SUCCESS
    assert probe.call("set_input", 0, 0, probe.tensor([2, 4], 1, b"\0" * 32)) == Errno.SUCCESS
    assert probe.call("set_input", 0, 0, probe.tensor([3, 4], 1, b"\0" * 48)) == Errno.RUNTIME_ERROR


def test_negative_limits_are_refused() -> None:
    from wasinn import ConfigError

    with pytest.raises(ConfigError, match="must not be negative"):
        Limits(gas=-1)


def test_a_model_declaring_huge_tensors_is_refused_before_allocating(tmp_path: Path) -> None:
    """A 2 KB IR with a static [65536, 65536] f32 input would make OpenVINO allocate 16 GiB."""
    import openvino as ov
    import openvino.opset13 as ops

    from conftest import make_probe, require_module

    require_module("openvino")
    x = ops.parameter([65536, 65536], ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "huge"), tmp_path / "huge.xml")
    blobs = [(tmp_path / "huge.xml").read_bytes(), (tmp_path / "huge.bin").read_bytes()]
    probe = make_probe(Runtime(cache=False, limits=Limits(max_tensor_bytes=64 << 20)), pages=2)
    array, count = probe.builders(blobs)
    assert probe.call("load", array, count, 0, 0, 64) == Errno.RUNTIME_ERROR
    assert probe.instance.nn.live_graphs == 0
