"""What every ``wasinn bench`` case stands on: where guests and data are, timing loops, records."""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.bench.types import Record, alternate
from wasinn.host import Runtime

REPO = Path(__file__).resolve().parents[3]
ROAD_XML = "road-segmentation-adas-0001/road-segmentation-adas-0001.xml"
ROAD_BIN = "road-segmentation-adas-0001/road-segmentation-adas-0001.bin"
BIRDS = "birds-v1/lite-model_aiy_vision_classifier_birds_V1_3.tflite"
INFERENCE_UNIT = (
    "ms per inference round (set_input + compute + get_output); wasinn timed inside the guest "
    "with WASI CLOCK_MONOTONIC, native with perf_counter around copy-in + infer + copy-out"
)
PROCESS_UNIT = "ms wall-clock per process, timed from the parent"


class Unavailable(Exception):
    """A prerequisite is missing: the case is recorded as skipped with this reason."""


def wasm_dir() -> Path:
    explicit = os.environ.get("WASINN_BENCH_WASM")
    for candidate in (Path(explicit) if explicit else None, Path("build/wasm"), REPO / "build" / "wasm"):
        if candidate is not None and (candidate / "nn-run.wasm").is_file():
            return candidate.resolve()
    raise Unavailable("build/wasm/nn-run.wasm is not built; run `make examples`")


def guest(name: str) -> Path:
    path = wasm_dir() / f"{name}.wasm"
    if not path.is_file():
        raise Unavailable(f"{path} is not built; run `make examples`")
    return path


def data_dir() -> Path:
    for variable in ("WASINN_SHARED_DATA", "WASINN_MODELS"):
        if value := os.environ.get(variable):
            return Path(value).resolve()
    return (REPO.parent / "shared" / "data").resolve()


def data_file(relative: str) -> Path:
    path = data_dir() / relative
    if not path.is_file():
        raise Unavailable(f"{path} not found (set WASINN_SHARED_DATA)")
    return path


def require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as err:
        raise Unavailable(f"cannot import {module}: {type(err).__name__}: {err}") from None


# -- running the guest in this process


class GuestLoop:
    """``nn-run --repeat N --time`` run in this process through :class:`wasinn.Runtime`."""

    def __init__(
        self,
        dirs: Sequence[str],
        args: Sequence[str],
        module: Path | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self.dirs = list(dirs)
        self.module = module or guest("nn-run")
        self.args = list(args)
        self.preload = list(preload)

    def times_ms(self, repeat: int, discard: int = 1) -> list[float]:
        """Per-round times, dropping the first ``discard`` (the model was just compiled)."""
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            runtime = Runtime(dirs=self.dirs, preload=self.preload, stdout=out, stderr=err)
            code = runtime.run(self.module, [*self.args, "--repeat", str(repeat + discard), "--time"])
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if code != 0:
            last = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
            raise Unavailable(f"guest failed (exit {code}): {last[0]}")
        times = [int(line.split()[1]) / 1e6 for line in stdout.splitlines() if line.startswith("time_ns ")]
        if len(times) != repeat + discard:
            raise Unavailable(f"guest printed {len(times)} time_ns lines, expected {repeat + discard}")
        return times[discard:]


def native_loop(step: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


class OpenVINONative:
    """The native side: the model compiled on wasinn's own backend Core (same defaults)."""

    def __init__(self, xml: Path, weights: Path, data: npt.NDArray[np.float32]) -> None:
        from wasinn.backends import get_backend
        from wasinn.core import GraphEncoding

        core = get_backend(GraphEncoding.OPENVINO).core  # type: ignore[attr-defined]
        self.compiled = core.compile_model(core.read_model(str(xml), str(weights)), "CPU")
        self.request = self.compiled.create_infer_request()
        self.data = data
        shape = tuple(self.compiled.outputs[0].get_shape())
        self.out = np.empty(shape, dtype=np.float32)
        self.step()  # the first inference is slower; so is the guest's, which is discarded

    def step(self) -> None:
        np.copyto(self.request.get_input_tensor(0).data, self.data)
        self.request.infer()
        np.copyto(self.out, self.request.get_output_tensor(0).data)

    def threads(self) -> int:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))


def inference_record(
    name: str, plan_blocks: int, reps: int, native: Callable[[], None], loop: GuestLoop
) -> Record:
    native_ms, wasinn_ms = alternate(
        plan_blocks, lambda: native_loop(native, reps), lambda: loop.times_ms(reps)
    )
    return Record.measured(name, native_ms, wasinn_ms, INFERENCE_UNIT)


# -- cases


def tiny_openvino_model(directory: Path) -> tuple[Path, Path]:
    ov = require("openvino")
    ops = require("openvino.opset13")
    parameter = ops.parameter([1, 4], ov.Type.f32, name="x")
    result = ops.add(parameter, ops.constant(np.ones((1, 4), np.float32)))
    xml = directory / "tiny.xml"
    ov.save_model(ov.Model([ops.result(result)], [parameter], "tiny"), str(xml), compress_to_fp16=False)
    return xml, directory / "tiny.bin"
