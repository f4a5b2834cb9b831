"""Broken models, broken inputs, leaks and concurrency: a guest must never crash, hang or leak the host.

* Broken models and inputs (OpenVINO, ONNX, PyTorch, TFLite; a framework that is not installed
  is conftest's ``missing``, a backend that fails to load a failure): the guest gets the
  spec's errno, the log has one readable ``wasinn: `` line naming the problem, and the next
  call in the same instance works. The same through the real C guest (``nn-run``) and
  ``python -m wasinn run``.
* Leaks: thousands of load → … → unload cycles keep RSS flat; closing an instance frees every
  graph and context (the backend objects are garbage-collected).
* Concurrency: instances in several threads sharing one Runtime get their own, correct results.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import struct
import subprocess
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import Probe, guest_wasm, make_probe, require_backend, run_guest, shared_file
from wasinn import Errno, GuestExit, GuestTrap, Runtime
from wasinn.core import GraphEncoding
from wat_guests import compile_wat

# torch.jit is deprecated upstream but is what WasmEdge's PyTorch backend loads.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

F16, F32, F64, U8, I32, I64 = 0, 1, 2, 3, 4, 5
CPU = 0
OUT = 64  # graph handle out-pointer
CTX = 68  # context handle out-pointer
WRITTEN = 72  # bytes_written out-pointer
W = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
B = np.array([0.5, 0.5, -0.5, 1.0], dtype=np.float32)
GOOD = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def tiny_reference(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.maximum(x.astype(np.float32) * W + B, np.float32(0))


# --------------------------------------------------------------------------- log capture


class LogLines(logging.Handler):
    """Every record of the ``wasinn`` loggers, formatted as the CLI prints it (``wasinn: …``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("wasinn: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("wasinn")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def one_line(log: LogLines, *fragments: str) -> str:
    """Exactly one readable line (no newline, no traceback) that names every fragment."""
    lines = log.take()
    assert len(lines) == 1, lines
    (line,) = lines
    assert "\n" not in line and "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# --------------------------------------------------------------------------- tiny models per backend


@dataclass
class Kit:
    """A backend with a tiny model (``relu(x * w + b)`` on f32[1, 4] where the framework allows)."""

    name: str
    encoding: int
    builders: list[bytes]
    dims: list[int] = field(default_factory=lambda: [1, 4])
    type_word: int = F32
    good_input: bytes = GOOD.tobytes()
    reference: Callable[[np.ndarray], np.ndarray] | None = tiny_reference
    unreadable_errno: int = Errno.INVALID_ARGUMENT  # spec §8 cases 12/13: garbage → 1
    static_shapes: bool = True  # the model declares its input dims, so wrong dims fail in set_input


def onnx_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [1, 4], W),
            helper.make_tensor("b", TensorProto.FLOAT, [1, 4], B),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torchscript_model() -> bytes:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.tensor(W)
            self.b = torch.tensor(B)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x * self.w + self.b)

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buffer)  # type: ignore[no-untyped-call]
    return buffer.getvalue()


KITS = ("openvino", "onnx", "pytorch", "tflite")
# Known before the fixture builds a kit, so that cases that cannot apply to a kit are never
# generated: the birds classifier takes u8, and only OpenVINO IR comes in two builders.
F32_KITS = ("openvino", "onnx", "pytorch")
TWO_BUILDER_KITS = ("openvino",)
# The tflite kit is the shared birds classifier; the others are made here (tests/markers.py).
KIT_MARKS = {"tflite": pytest.mark.shared_data}


def kit_cases(changes: Sequence[str], excluded: Callable[[str, str], bool]) -> list[object]:
    """``(kit, change)`` for ``parametrize(..., indirect=["kit"])``, less the excluded pairs."""
    return [
        pytest.param(name, change, id=f"{name}-{change}", marks=KIT_MARKS.get(name, ()))
        for name in KITS
        for change in changes
        if not excluded(name, change)
    ]


@pytest.fixture(scope="module", params=[pytest.param(name, marks=KIT_MARKS.get(name, ())) for name in KITS])
def kit(request: pytest.FixtureRequest, tiny_ir: tuple[Path, Path]) -> Kit:
    made = make_kit(request.param, tiny_ir)
    assert (made.type_word == F32) == (made.name in F32_KITS)
    assert (len(made.builders) == 2) == (made.name in TWO_BUILDER_KITS)
    return made


def make_kit(name: str, tiny_ir: tuple[Path, Path]) -> Kit:
    if name == "openvino":
        xml, weights = tiny_ir
        return Kit(name, 0, [xml.read_bytes(), weights.read_bytes()], unreadable_errno=Errno.RUNTIME_ERROR)
    if name == "onnx":
        require_backend(GraphEncoding.ONNX, "onnxruntime", "onnx")
        return Kit(name, 1, [onnx_model()])
    if name == "pytorch":
        require_backend(GraphEncoding.PYTORCH, "torch")
        return Kit(name, 3, [torchscript_model()], static_shapes=False)
    require_backend(GraphEncoding.TENSORFLOWLITE, "ai_edge_litert")
    model = shared_file("birds-v1", "lite-model_aiy_vision_classifier_birds_V1_3.tflite")
    # The birds classifier: u8 [1, 224, 224, 3] → u8 [1, 965] (spec §8 case 27).
    image = np.random.default_rng(3).integers(0, 256, (1, 224, 224, 3), np.uint8).tobytes()
    return Kit(name, 4, [model.read_bytes()], [1, 224, 224, 3], U8, image, None)


class Session:
    """A probe instance driving one kit. The model's builders, a correct tensor record and an
    output buffer are laid out once, so thousands of cycles reuse the same guest memory."""

    def __init__(self, kit: Kit, runtime: Runtime | None = None) -> None:
        self.kit = kit
        # Room for the model twice more (damaged copies) and a few inputs, four bytes per element.
        pages = 4 + (3 * sum(len(b) for b in kit.builders) + 8 * len(kit.good_input)) // 65536
        self.probe: Probe = make_probe(runtime or Runtime(cache=False), pages=pages)
        self.builders = self.probe.builders(kit.builders)
        self.record = self.probe.tensor(kit.dims, kit.type_word, kit.good_input)
        self.data_ptr = struct.unpack("<5I", self.probe.read(self.record, 20))[3]
        self.buffer_ptr, self.buffer_size = 0, 0

    def load(self, builders: list[bytes], encoding: int | None = None) -> int:
        array, count = self.probe.builders(builders)
        return self.probe.call(
            "load", array, count, self.kit.encoding if encoding is None else encoding, CPU, OUT
        )

    def good_graph(self) -> int:
        array, count = self.builders
        assert self.probe.call("load", array, count, self.kit.encoding, CPU, OUT) == Errno.SUCCESS
        return self.probe.u32(OUT)

    def context(self, graph: int) -> int:
        assert self.probe.call("init_execution_context", graph, CTX) == Errno.SUCCESS
        return self.probe.u32(CTX)

    def set_input(self, context: int, dims: list[int], type_word: int, data: bytes, index: int = 0) -> int:
        return self.probe.call("set_input", context, index, self.probe.tensor(dims, type_word, data))

    def output(self, context: int, index: int = 0) -> tuple[int, bytes]:
        """The too-small protocol: size probe with max 0, then an exact buffer (reused)."""
        errno = self.probe.call("get_output", context, index, 0, 0, WRITTEN)
        if errno not in (Errno.TOO_LARGE, Errno.SUCCESS):
            return errno, b""
        size = self.probe.u32(WRITTEN)
        if size > self.buffer_size:
            self.buffer_ptr, self.buffer_size = self.probe.put(b"\0" * size), size
        errno = self.probe.call("get_output", context, index, self.buffer_ptr, size, WRITTEN)
        assert self.probe.u32(WRITTEN) == size
        return errno, self.probe.read(self.buffer_ptr, size)

    def good_run(self, context: int, data: bytes | None = None) -> bytes:
        """set_input + compute + get_output with a correct input; checks against the reference."""
        data = self.kit.good_input if data is None else data
        self.probe.write(self.data_ptr, data)
        assert self.probe.call("set_input", context, 0, self.record) == Errno.SUCCESS
        assert self.probe.call("compute", context) == Errno.SUCCESS
        errno, payload = self.output(context)
        assert errno == Errno.SUCCESS
        if self.kit.reference is not None:
            expected = self.kit.reference(np.frombuffer(data, "<f4").reshape(self.kit.dims))
            np.testing.assert_allclose(
                np.frombuffer(payload, "<f4").reshape(expected.shape), expected, rtol=1e-6
            )
        return payload

    def close(self) -> None:
        self.probe.instance.close()


@pytest.fixture
def session(kit: Kit) -> Iterator[Session]:
    state = Session(kit)
    yield state
    state.close()


# --------------------------------------------------------------------------- broken models


def truncate(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def garbage(blob: bytes) -> bytes:
    return np.random.default_rng(5).integers(0, 256, max(len(blob), 64), np.uint8).tobytes()


def flip_header(blob: bytes) -> bytes:
    """Bytes 8..71 inverted: past a file identifier (TFL3 sits at 4..7), inside the structure.

    (Inverting bytes in the middle of a large model may only change weights, which is a
    valid model.)
    """
    return blob[:8] + bytes(b ^ 0xFF for b in blob[8:72]) + blob[72:]


MODEL_DAMAGE = {
    "truncated": truncate,
    "garbage": garbage,
    "header-flipped": flip_header,
    "empty": lambda _: b"",
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
def test_broken_model_then_the_good_one_loads(
    session: Session, log_lines: LogLines, kit: Kit, damage: str
) -> None:
    array, count = session.probe.builders([MODEL_DAMAGE[damage](kit.builders[0]), *kit.builders[1:]])
    before = session.probe.snapshot()
    assert session.probe.call("load", array, count, kit.encoding, CPU, OUT) == kit.unreadable_errno
    one_line(log_lines, f"wasinn: load: {kit.name}")
    changed = [i for i, (x, y) in enumerate(zip(before, session.probe.snapshot(), strict=True)) if x != y]
    assert changed == [], "a failed load wrote guest memory"
    assert session.probe.instance.nn.live_graphs == 0
    session.good_run(session.context(session.good_graph()))


@pytest.mark.parametrize(
    ("kit", "change"),
    kit_cases(
        ["none", "one-less", "one-more", "two-more"],
        # One builder less than one is no builder: "none" covers it.
        lambda name, change: change == "one-less" and name not in TWO_BUILDER_KITS,
    ),
    indirect=["kit"],
    scope="module",
)
def test_wrong_builder_count(session: Session, log_lines: LogLines, kit: Kit, change: str) -> None:
    builders = {
        "none": [],
        "one-less": kit.builders[:-1],
        "one-more": [*kit.builders, b"extra"],
        "two-more": [*kit.builders, b"x", b"y"],
    }[change]
    assert session.load(builders) == Errno.INVALID_ARGUMENT
    one_line(log_lines, f"wasinn: load: {kit.name}: load needs exactly {len(kit.builders)} builder(s)")
    session.good_run(session.context(session.good_graph()))


def ir_variants(xml: bytes, weights: bytes) -> dict[str, tuple[bytes, bytes]]:
    """Damaged OpenVINO IR: each makes OpenVINO refuse the model (probed one by one)."""
    second_const = b'offset="16" size="16"'
    return {
        "xml-truncated-mid-attribute": (xml[:1000], weights),
        "xml-last-bytes-missing": (xml[:-10], weights),
        "xml-nul-byte": (xml.replace(b"<layers>", b"<layers>\0"), weights),
        "unknown-element-type": (
            xml.replace(
                b'element_type="f32" shape="1, 4" offset="0"', b'element_type="f33" shape="1, 4" offset="0"'
            ),
            weights,
        ),
        "const-past-weights": (xml.replace(second_const, b'offset="4096" size="16"'), weights),
        "const-size-u32-max": (xml.replace(second_const, b'offset="16" size="4294967295"'), weights),
        "const-offset-u64-max": (
            xml.replace(second_const, b'offset="18446744073709551615" size="16"'),
            weights,
        ),
        "const-shape-vs-size": (
            xml.replace(b'shape="1, 4" offset="16"', b'shape="1, 5" offset="16"'),
            weights,
        ),
        "huge-const-shape": (
            xml.replace(b'shape="1, 4" offset="16"', b'shape="100000, 100000" offset="16"'),
            weights,
        ),
        "negative-input-dim": (xml.replace(b'<data shape="1,4"', b'<data shape="1,-4"'), weights),
        "edge-from-missing-layer": (
            xml.replace(b'from-layer="4" from-port="2"', b'from-layer="42" from-port="2"'),
            weights,
        ),
        "unknown-operation": (xml.replace(b'type="ReLU"', b'type="Frobnicate"'), weights),
        "cycle": (
            xml.replace(
                b'<edge from-layer="0" from-port="0" to-layer="2"',
                b'<edge from-layer="5" from-port="1" to-layer="2"',
            ),
            weights,
        ),
        "ir-version-99": (xml.replace(b'version="11"', b'version="99"'), weights),
        "weights-truncated": (xml, weights[:20]),
        "weights-empty": (xml, b""),
        "both-empty": (b"", b""),
    }


def test_damaged_openvino_ir_is_errno_5_and_the_instance_recovers(
    tiny_ir: tuple[Path, Path], log_lines: LogLines
) -> None:
    xml, weights = tiny_ir[0].read_bytes(), tiny_ir[1].read_bytes()
    state = Session(Kit("openvino", 0, [xml, weights], unreadable_errno=Errno.RUNTIME_ERROR))
    try:
        for name, (bad_xml, bad_weights) in ir_variants(xml, weights).items():
            assert bad_xml != xml or bad_weights != weights, f"{name}: the damage did not apply"
            assert state.load([bad_xml, bad_weights]) == Errno.RUNTIME_ERROR, name
            one_line(log_lines, "wasinn: load: openvino: cannot read the IR model")
        assert state.probe.instance.nn.live_graphs == 0
        state.good_run(state.context(state.good_graph()))
    finally:
        state.close()


# --------------------------------------------------------------------------- broken inputs


def input_cases(kit: Kit) -> dict[str, tuple[list[int], int, bytes, int, tuple[str, ...]]]:
    """name → (dims, type, data, index, fragments the message must contain)."""
    dims, kind, good = kit.dims, kit.type_word, kit.good_input
    other = I32 if kind == F32 else F32
    other_label, label = ("i32", "f32") if kind == F32 else ("f32", "u8")
    size = len(good)
    return {
        "wrong-type": (dims, other, good if other != F32 else good * 4, 0, (label, other_label)),
        "short-data": (dims, kind, good[:-4], 0, (str(size), str(size - 4))),
        "long-data": (dims, kind, good + b"\0" * 4, 0, (str(size), str(size + 4))),
        "index-out-of-range": (dims, kind, good, 5000, ("5000",)),
        "no-dims": ([], kind, good, 0, ()),
        "nine-dims": ([1] * 7 + dims[-2:], kind, good, 0, ())
        if len(dims) == 2
        else ([1] * 9, kind, good, 0, ()),
        "legacy-u8-code-on-f32": (dims, F64, good, 0, ()),
        "unknown-type-code": (dims, 9, good, 0, ("9",)),
    }


INPUT_CASES = [
    "wrong-type",
    "short-data",
    "long-data",
    "index-out-of-range",
    "no-dims",
    "nine-dims",
    "legacy-u8-code-on-f32",
    "unknown-type-code",
]


@pytest.mark.parametrize(
    ("kit", "case"),
    kit_cases(INPUT_CASES, lambda name, case: case == "legacy-u8-code-on-f32" and name not in F32_KITS),
    indirect=["kit"],
    scope="module",
)
def test_bad_set_input_then_a_good_one_works(
    session: Session, log_lines: LogLines, kit: Kit, case: str
) -> None:
    dims, kind, data, index, fragments = input_cases(kit)[case]
    context = session.context(session.good_graph())
    errno = session.set_input(context, dims, kind, data, index)
    if not kit.static_shapes and case in ("no-dims", "nine-dims") and errno == Errno.SUCCESS:
        # No declared input shape (TorchScript): the reshaped tensor reaches forward() unchanged.
        log_lines.take()
    else:
        assert errno == Errno.INVALID_ARGUMENT
        if case == "unknown-type-code":
            one_line(log_lines, "wasinn: set_input:", *fragments)
        else:
            one_line(log_lines, f"wasinn: set_input: {kit.name}: input", *fragments)
    session.good_run(context)  # the same context still works


def test_wrong_dims_then_good_dims(session: Session, log_lines: LogLines, kit: Kit) -> None:
    context = session.context(session.good_graph())
    dims = [*kit.dims[:-1], kit.dims[-1] + 1]
    itemsize = 1 if kit.type_word == U8 else 4
    data = b"\0" * (int(np.prod(dims)) * itemsize)
    errno = session.set_input(context, dims, kit.type_word, data)
    shown, wanted = "x".join(map(str, dims)), "x".join(map(str, kit.dims))
    if kit.static_shapes:
        assert errno == Errno.INVALID_ARGUMENT
        one_line(log_lines, f"wasinn: set_input: {kit.name}: input 0", shown, wanted)
    else:  # the mismatch shows in forward(): runtime_error, with the framework's reason
        assert errno == Errno.SUCCESS
        assert session.probe.call("compute", context) == Errno.RUNTIME_ERROR
        one_line(log_lines, f"wasinn: compute: {kit.name}")
    session.good_run(context)


def test_bad_output_index_then_a_good_one(session: Session, log_lines: LogLines, kit: Kit) -> None:
    context = session.context(session.good_graph())
    session.good_run(context)
    buffer = session.probe.put(b"\0" * 16)
    assert session.probe.call("get_output", context, 7, buffer, 16, WRITTEN) == Errno.INVALID_ARGUMENT
    one_line(log_lines, f"wasinn: get_output: {kit.name}", "7")
    errno, _ = session.output(context)
    assert errno == Errno.SUCCESS


# Spec §4.6: compute before any set_input is backend-defined. OpenVINO and ONNX Runtime have
# no input to run on (runtime_error); PyTorch refuses (invalid_argument); TFLite invokes on
# the input tensors the context zeroed when it was made.
COMPUTE_BEFORE_INPUT = {
    "openvino": (Errno.RUNTIME_ERROR, "wasinn: compute: openvino: compute before set_input"),
    "onnx": (Errno.RUNTIME_ERROR, "wasinn: compute: onnx: compute before set_input"),
    "pytorch": (Errno.INVALID_ARGUMENT, "wasinn: compute: pytorch: compute before any set_input"),
    "tflite": (Errno.SUCCESS, ""),
}


def test_compute_before_input_then_normal(session: Session, log_lines: LogLines, kit: Kit) -> None:
    errno, message = COMPUTE_BEFORE_INPUT[kit.name]
    context = session.context(session.good_graph())
    assert session.probe.call("compute", context) == errno
    if errno != Errno.SUCCESS:
        one_line(log_lines, message)
        session.good_run(context)
        return
    # It ran on zeros: no log line, and the same output as computing on a zero input.
    assert log_lines.take() == []
    errno, before_input = session.output(context)
    assert errno == Errno.SUCCESS
    assert before_input == session.good_run(context, bytes(len(kit.good_input)))
    assert session.good_run(context) != before_input  # the model does not ignore its input


@pytest.mark.parametrize("kit", F32_KITS, indirect=True, scope="module")
def test_nan_and_inf_inputs_compute_and_the_next_call_is_normal(session: Session, kit: Kit) -> None:
    context = session.context(session.good_graph())
    special = np.array([[np.nan, np.inf, -np.inf, -np.nan]], dtype=np.float32)
    assert session.set_input(context, kit.dims, F32, special.tobytes()) == Errno.SUCCESS
    assert session.probe.call("compute", context) == Errno.SUCCESS
    errno, payload = session.output(context)
    assert errno == Errno.SUCCESS
    got = np.frombuffer(payload, "<f4")
    expected = tiny_reference(special).reshape(-1)
    # x*w+b is NaN for 0 and 3, +inf*-2 = -inf → relu 0 for 1, -inf*3 → 0 for 2. ReLU(NaN) is
    # NaN in numpy and PyTorch, 0 in OpenVINO's CPU plugin: either is accepted, nothing else.
    for value, want in zip(got, expected, strict=True):
        assert (np.isnan(value) or value == 0) if np.isnan(want) else value == want, (got, expected)
    session.good_run(context)  # NaN left no state behind


# --------------------------------------------------------------------------- through nn-run


def nn_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_guest(guest_wasm("nn-run"), *args, cwd=cwd, timeout=120)


def wasinn_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("wasinn: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def staged(tiny_ir: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nn-run")
    xml, weights = tiny_ir[0].read_bytes(), tiny_ir[1].read_bytes()
    (folder / "tiny.xml").write_bytes(xml)
    (folder / "tiny.bin").write_bytes(weights)
    (folder / "truncated.xml").write_bytes(xml[:1000])
    (folder / "truncated.bin").write_bytes(weights[:20])
    (folder / "in.bin").write_bytes(GOOD.tobytes())
    (folder / "in20.bin").write_bytes(np.zeros(5, np.float32).tobytes())
    (folder / "in12.bin").write_bytes(GOOD.tobytes()[:12])
    (folder / "nan.bin").write_bytes(np.array([np.nan, 1, np.nan, 2], np.float32).tobytes())
    return folder


MODEL = ("--model", "tiny.xml", "--model", "tiny.bin")
NN_RUN_CASES = {
    # name: (args, exit code, fragments of the one "wasinn: " line)
    "truncated-xml": (
        ("--model", "truncated.xml", "--model", "tiny.bin", "--input", "0:f32:1x4:in.bin"),
        Errno.RUNTIME_ERROR,
        ("wasinn: load: openvino: cannot read the IR model",),
    ),
    "truncated-weights": (
        ("--model", "tiny.xml", "--model", "truncated.bin", "--input", "0:f32:1x4:in.bin"),
        Errno.RUNTIME_ERROR,
        ("wasinn: load: openvino: cannot read the IR model",),
    ),
    "one-builder": (
        ("--model", "tiny.xml", "--input", "0:f32:1x4:in.bin"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: load: openvino: load needs exactly 2 builder(s)", "got 1"),
    ),
    "wrong-dims": (
        (*MODEL, "--input", "0:f32:1x5:in20.bin"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: set_input: openvino: input 0 (x)", "1x4", "1x5"),
    ),
    "wrong-type": (
        (*MODEL, "--input", "0:i32:1x4:in.bin"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: set_input: openvino: input 0 (x)", "f32", "i32"),
    ),
    "short-data": (
        (*MODEL, "--input", "0:f32:1x4:in12.bin"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: set_input: openvino: input 0 (x)", "16 bytes", "12"),
    ),
    "input-index": (
        (*MODEL, "--input", "3:f32:1x4:in.bin"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: set_input: openvino: input index 3 out of range", "1"),
    ),
    "output-index": (
        (*MODEL, "--input", "0:f32:1x4:in.bin", "--output", "2"),
        Errno.INVALID_ARGUMENT,
        ("wasinn: get_output: openvino: output index 2 out of range", "1"),
    ),
    "compute-without-input": (
        MODEL,
        Errno.RUNTIME_ERROR,
        ("wasinn: compute: openvino: compute before set_input",),
    ),
}


@pytest.mark.usefixtures("openvino_available")
@pytest.mark.parametrize("case", NN_RUN_CASES)
def test_nn_run_gets_the_errno_and_one_readable_line(staged: Path, case: str) -> None:
    args, code, fragments = NN_RUN_CASES[case]
    result = nn_run(staged, *args)
    assert result.returncode == code, result.stderr
    line = wasinn_line(result.stderr)
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.mark.usefixtures("openvino_available")
def test_nn_run_ir_errors_name_the_reason(staged: Path) -> None:
    xml = wasinn_line(nn_run(staged, "--model", "truncated.xml", "--model", "tiny.bin").stderr)
    weights = wasinn_line(nn_run(staged, "--model", "tiny.xml", "--model", "truncated.bin").stderr)
    for line in (xml, weights):
        assert "failed at src/" not in line, line
    assert "Error parsing" in xml, xml
    assert "Incorrect weights" in weights, weights


@pytest.mark.usefixtures("openvino_available")
def test_nn_run_nan_input_computes(staged: Path) -> None:
    result = nn_run(staged, *MODEL, "--input", "0:f32:1x4:nan.bin", "--output", "0:out.bin", "--repeat", "2")
    assert result.returncode == 0, result.stderr
    got = np.fromfile(staged / "out.bin", np.float32)
    assert got[1] == 0 and got[3] == 0  # 1*-2+0.5 < 0 and 2*-4+1 < 0: relu → 0
    assert all(np.isnan(v) or v == 0 for v in got[[0, 2]])


# --------------------------------------------------------------------------- leaks


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def full_cycle(state: Session, data: bytes) -> None:
    graph = state.good_graph()
    context = state.context(graph)
    state.good_run(context, data)
    assert state.probe.call("finalize_execution_context", context) == Errno.SUCCESS
    assert state.probe.call("unload", graph) == Errno.SUCCESS


LEAK_WARMUP = 100
# Each cycle compiles the model (~30 ms): the 10,000 under CI, fewer on a laptop.
LEAK_CYCLES = 10_000 if os.environ.get("CI") else 2000
RSS_BUDGET = 20 * 1024 * 1024


@pytest.mark.slow
def test_load_to_unload_cycles_keep_rss_flat(tiny_ir: tuple[Path, Path]) -> None:
    """Full cycles (each compiles the model) in one instance: RSS grows < 20 MB after warm-up."""
    state = Session(Kit("openvino", 0, [tiny_ir[0].read_bytes(), tiny_ir[1].read_bytes()]))
    inputs = np.random.default_rng(11).standard_normal((64, 1, 4)).astype(np.float32)
    try:
        for i in range(LEAK_WARMUP):
            full_cycle(state, inputs[i % 64].tobytes())
        gc.collect()
        start, began = rss_bytes(), time.perf_counter()
        for i in range(LEAK_CYCLES):
            full_cycle(state, inputs[i % 64].tobytes())
        gc.collect()
        growth, seconds = rss_bytes() - start, time.perf_counter() - began
        nn = state.probe.instance.nn
        assert (nn.live_graphs, nn.live_contexts) == (0, 0)
    finally:
        state.close()
    print(f"\nleak: {LEAK_CYCLES} load→unload cycles in {seconds:.1f} s, RSS growth {growth / 2**20:.2f} MiB")
    assert growth < RSS_BUDGET, f"RSS grew {growth / 2**20:.1f} MiB over {LEAK_CYCLES} cycles"


CONTEXT_CYCLES = 10_000


def test_context_cycles_keep_rss_flat(tiny_ir: tuple[Path, Path]) -> None:
    """10,000 init → set_input → compute → get_output → finalize cycles on one graph."""
    state = Session(Kit("openvino", 0, [tiny_ir[0].read_bytes(), tiny_ir[1].read_bytes()]))
    inputs = np.random.default_rng(12).standard_normal((64, 1, 4)).astype(np.float32)
    try:
        graph = state.good_graph()

        def cycle(i: int) -> None:
            context = state.context(graph)
            state.good_run(context, inputs[i % 64].tobytes())
            assert state.probe.call("finalize_execution_context", context) == Errno.SUCCESS

        for i in range(LEAK_WARMUP):
            cycle(i)
        gc.collect()
        start, began = rss_bytes(), time.perf_counter()
        for i in range(CONTEXT_CYCLES):
            cycle(i)
        gc.collect()
        growth, seconds = rss_bytes() - start, time.perf_counter() - began
        assert state.probe.instance.nn.live_contexts == 0
    finally:
        state.close()
    print(f"\nleak: {CONTEXT_CYCLES} context cycles in {seconds:.1f} s, RSS growth {growth / 2**20:.2f} MiB")
    assert growth < RSS_BUDGET


@pytest.fixture
def tracked_backend_objects(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[object]]:
    """Weak references to every OpenVINO graph and context wasinn creates during the test."""
    from wasinn.backends.openvino import OpenVINOBackend, OpenVINOGraph

    refs: list[weakref.ref[object]] = []
    load, init = OpenVINOBackend.load, OpenVINOGraph.init_execution_context

    def tracked_load(self: OpenVINOBackend, *args: object) -> OpenVINOGraph:
        graph = load(self, *args)  # type: ignore[arg-type]
        refs.append(weakref.ref(graph))
        return graph

    def tracked_init(self: OpenVINOGraph) -> object:
        context = init(self)
        refs.append(weakref.ref(context))
        return context

    monkeypatch.setattr(OpenVINOBackend, "load", tracked_load)
    monkeypatch.setattr(OpenVINOGraph, "init_execution_context", tracked_init)
    return refs


def alive(refs: list[weakref.ref[object]]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in refs)


def test_close_frees_every_graph_and_context(
    tiny_ir: tuple[Path, Path], tracked_backend_objects: list[weakref.ref[object]]
) -> None:
    xml, weights = tiny_ir
    runtime = Runtime(cache=False, preload=[f"m:openvino:cpu:{xml}:{weights}"])
    state = Session(Kit("openvino", 0, [xml.read_bytes(), weights.read_bytes()]), runtime)
    graphs = [state.good_graph() for _ in range(3)]
    name, length = state.probe.string("m")
    assert state.probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    graphs.append(state.probe.u32(OUT))
    contexts = [state.context(graph) for graph in graphs for _ in range(2)]
    state.good_run(contexts[0])
    state.good_run(contexts[-1])
    assert state.probe.call("unload", graphs[0]) == Errno.SUCCESS  # its contexts keep it alive
    nn = state.probe.instance.nn
    assert (nn.live_graphs, nn.live_contexts) == (3, 8)
    assert alive(tracked_backend_objects) == 12
    state.close()
    assert (nn.live_graphs, nn.live_contexts) == (0, 0)
    # The preloaded model belongs to the runtime and is shared by its instances until runtime.close().
    assert alive(tracked_backend_objects) == 1, "backend graphs or contexts outlive instance.close()"
    runtime.close()
    assert alive(tracked_backend_objects) == 0, "the preloaded graph outlives runtime.close()"


PRELOAD_WAT = """(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "m")
  (func (export "_start")
    (drop (call $load_by_name (i32.const 16) (i32.const 1) (i32.const 32)))
    (drop (call $init (i32.load (i32.const 32)) (i32.const 36)))
    (drop (call $init (i32.load (i32.const 32)) (i32.const 40)))
    ENDING))"""


@pytest.mark.parametrize("ending", ["return", "trap", "exit"])
def test_runtime_run_frees_what_the_guest_left(
    tiny_ir: tuple[Path, Path],
    tracked_backend_objects: list[weakref.ref[object]],
    tmp_path: Path,
    ending: str,
) -> None:
    """A guest that never unloads (and returns, traps or exits) leaves nothing behind after run()."""
    body = {"return": "", "trap": "unreachable", "exit": "(call $exit (i32.const 3))"}[ending]
    source = PRELOAD_WAT.replace("ENDING", body)
    if ending == "exit":
        source = source.replace(
            "(memory",
            '(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))\n  (memory',
        )
    wasm = tmp_path / "leaver.wasm"
    import wasmtime

    wasm.write_bytes(wasmtime.wat2wasm(source))
    xml, weights = tiny_ir
    runtime = Runtime(cache=False, preload=[f"m:openvino:cpu:{xml}:{weights}"])
    if ending == "trap":
        with pytest.raises(GuestTrap):
            runtime.run(wasm)
    else:
        assert runtime.run(wasm) == (3 if ending == "exit" else 0)
    assert len(tracked_backend_objects) == 3  # one graph, two contexts
    # The contexts die with the instance; the preloaded graph is the runtime's, shared by its instances.
    assert alive(tracked_backend_objects) == 1
    runtime.close()
    assert alive(tracked_backend_objects) == 0


# --------------------------------------------------------------------------- hostile guests, host memory


@pytest.mark.usefixtures("openvino_available")
def test_overlapping_builders_do_not_amplify_host_memory() -> None:
    probe = make_probe(Runtime(cache=False), pages=1)
    count = 1024
    array = probe.put(struct.pack("<II", 0, 65536) * count)
    tracemalloc.start()
    try:
        errno = probe.call("load", array, count, 0, CPU, OUT)  # OpenVINO: count is wrong → 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        probe.instance.close()
    assert errno == Errno.INVALID_ARGUMENT
    assert peak < 8 * 2**20, f"the host allocated {peak / 2**20:.0f} MiB for one load call"


# --------------------------------------------------------------------------- concurrency

THREADS = 4
ROUNDS = 50


def test_threads_sharing_a_runtime_get_their_own_results(tiny_ir: tuple[Path, Path]) -> None:
    """4 instances in 4 threads, one Runtime with a preloaded model; 50 rounds each, distinct inputs."""
    xml, weights = tiny_ir
    runtime = Runtime(cache=False, preload=[f"m:openvino:cpu:{xml}:{weights}"])
    kit = Kit("openvino", 0, [])
    errors: list[BaseException] = []
    checked = [0] * THREADS
    start = threading.Barrier(THREADS)

    def worker(number: int) -> None:
        state = Session(kit, runtime)
        try:
            rng = np.random.default_rng(100 + number)
            name, length = state.probe.string("m")
            start.wait(timeout=60)
            for _ in range(ROUNDS):
                assert state.probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
                context = state.context(state.probe.u32(OUT))
                data = (rng.standard_normal((1, 4)) + number * 10).astype(np.float32)
                state.good_run(context, data.tobytes())  # compares with numpy
                assert state.probe.call("finalize_execution_context", context) == Errno.SUCCESS
                checked[number] += 1
        except BaseException as err:  # reported by the main thread
            errors.append(err)
        finally:
            state.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a worker hung"
    assert not errors, errors
    assert checked == [ROUNDS] * THREADS


EXIT_WAT = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "exit_with") (param i32) (call $exit (local.get 0)))
  (func (export "_start")))"""


def test_concurrent_guest_exits_keep_their_own_codes() -> None:
    module = compile_wat(EXIT_WAT)
    runtime = Runtime(cache=False)
    outcomes: dict[int, list[str]] = {}
    start = threading.Barrier(THREADS)

    def worker(code: int) -> None:
        instance = runtime.instantiate(module)
        seen = outcomes.setdefault(code, [])
        start.wait(timeout=60)
        for _ in range(300):
            try:
                instance.call("exit_with", code)
                seen.append("returned")
            except GuestExit as exit_:
                seen.append("ok" if exit_.code == code else f"exit {exit_.code}")
            except GuestTrap as trap:
                seen.append(f"trap: {trap}")

    threads = [threading.Thread(target=worker, args=(code,)) for code in (3, 5, 7, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    wrong = {code: sorted(set(seen) - {"ok"}) for code, seen in outcomes.items() if set(seen) != {"ok"}}
    assert not wrong, wrong
