"""The unexpected-exception policy (abi/_errors.py) in WasmEdge's plug-in modules.

Their work runs in a framework (LiteRT, Pillow) that a test stands in for, raising
RuntimeError where the framework would work: the guest gets the errno WasmEdge's plug-in
answers a failed call (wasmedge-tensorflow.md §1: ``wasmedge_tensorflowlite`` 4,
``wasmedge_image`` 1; 5 never), not a trap; the traceback is logged and counted, and the
host goes on. The legacy ABI's case is in tests/test_host.py, WIT's in tests/test_component.py.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime

from wasinn import Errno, Runtime
from wasinn.abi import wasmedge_image, wasmedge_tensorflow
from wasinn.abi._errors import unexpected_counts
from wasinn.serve.metrics import Metrics

LITE_GUEST = """
(module
  (import "wasmedge_tensorflowlite" "create_session" (func $create (param i32 i32 i32) (result i32)))
  (import "wasmedge_tensorflowlite" "run_session" (func $run (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "a model")
  (func (export "_start") (local $errno i32)
    (local.set $errno (call $create (i32.const 1024) (i32.const 7) (i32.const 64)))
    (if (local.get $errno) (then (call $exit (i32.add (i32.const 10) (local.get $errno)))))
    (call $exit (call $run (i32.load (i32.const 64))))))
"""

# load_image(img_ptr, img_len, width, height, out_type (0: RGB8), out_ptr, out_len): 2x2 RGB8.
IMAGE_GUEST = """
(module
  (import "wasmedge_image" "load_image" (func $load (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "an image")
  (func (export "_start")
    (call $exit (call $load (i32.const 1024) (i32.const 8) (i32.const 2) (i32.const 2)
                            (i32.const 0) (i32.const 2048) (i32.const 12)))))
"""


class FailingLiteSession:
    """LiteRT as the plug-in uses it, whose invoke fails the way no wasinn code expects."""

    def __init__(self, model: bytes) -> None:
        self.model = model

    def invoke(self) -> None:
        raise RuntimeError("interpreter exploded")

    def close(self) -> None:
        pass


class WorkingLiteSession(FailingLiteSession):
    def invoke(self) -> None:
        pass


def run(directory: Path, source: str) -> int:
    path = directory / "guest.wasm"
    path.write_bytes(wasmtime.wat2wasm(source))
    return Runtime(cache=False).run(path)


def test_tflite_plugin_answers_an_unexpected_exception_with_its_failure_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    framework = types.SimpleNamespace(LiteSession=FailingLiteSession)
    monkeypatch.setattr(wasmedge_tensorflow, "_tflite", lambda: framework)
    before = unexpected_counts().get("wasmedge_tensorflowlite", 0)
    with caplog.at_level(logging.ERROR, logger="wasinn"):
        assert run(tmp_path, LITE_GUEST) == Errno.BUSY  # 4: WasmEdge's answer to a failed invoke
    assert unexpected_counts()["wasmedge_tensorflowlite"] == before + 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (
        record.getMessage()
        == "wasmedge_tensorflowlite run_session: unexpected RuntimeError, answered with busy"
    )
    assert record.exc_info is not None
    # The host goes on: the next guest's session works.
    framework.LiteSession = WorkingLiteSession
    assert run(tmp_path, LITE_GUEST) == Errno.SUCCESS


def test_image_plugin_answers_an_unexpected_exception_with_its_failure_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decoder exploded")

    def working(data: bytes, width: int, height: int, **kwargs: Any) -> Any:
        return np.zeros((height, width, 3), dtype=np.uint8)

    class DecodeError(Exception):
        pass

    pipeline = types.SimpleNamespace(load=broken, DecodeError=DecodeError)
    monkeypatch.setattr(wasmedge_image, "_pipeline", lambda: pipeline)
    before = unexpected_counts().get("wasmedge_image", 0)
    with caplog.at_level(logging.ERROR, logger="wasinn"):
        assert run(tmp_path, IMAGE_GUEST) == Errno.INVALID_ARGUMENT  # 1: the image plug-in's FAIL
    assert unexpected_counts()["wasmedge_image"] == before + 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "wasmedge_image load_image: unexpected RuntimeError, answered with invalid_argument"
    ]
    pipeline.load = working
    assert run(tmp_path, IMAGE_GUEST) == Errno.SUCCESS
    # A server's /metrics shows the count.
    count = unexpected_counts()["wasmedge_image"]
    assert f'wasinn_host_call_errors_total{{front_end="wasmedge_image"}} {count}\n' in Metrics().render()


def test_a_stop_in_a_plugin_call_stops_the_guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyboardInterrupt (and a limit, an interruption) is no answer: it comes out of the run."""

    class Interrupted(FailingLiteSession):
        def invoke(self) -> None:
            raise KeyboardInterrupt("stop")

    monkeypatch.setattr(
        wasmedge_tensorflow, "_tflite", lambda: types.SimpleNamespace(LiteSession=Interrupted)
    )
    with pytest.raises(KeyboardInterrupt, match="stop"):
        run(tmp_path, LITE_GUEST)
