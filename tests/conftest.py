from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from markers import apply as apply_markers
from wasinn import Errno, Runtime
from wasinn.backends import get_backend
from wasinn.core import Backend, ExecutionContext, ExecutionTarget, Graph, GraphEncoding, NNSession
from wasinn.host import Instance
from wasinn.testing.fake_backend import FakeBackend, serving
from wat_guests import compile_wat, probe_wat

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "wasm"
IN_CI = bool(os.environ.get("CI"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items)  # openvino, shared_data, gpu, serve from what each test reaches (markers.py)


def missing(reason: str) -> None:
    """Skip locally; under CI a missing prerequisite is a failure (it must be installed).

    Every environment skip goes through here (``require_module``, ``require_backend``,
    ``guest_wasm``, ``shared_file``), except the GPU: see :func:`requires_gpu`.
    """
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def shared_data_dir() -> Path:
    explicit = os.environ.get("WASINN_SHARED_DATA")
    return Path(explicit) if explicit else REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under the shared data; skipped when missing, failed under CI."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        missing(f"shared data missing: {path} (set WASINN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        missing(f"shared models and images not found at {path}; set WASINN_SHARED_DATA")
    return path


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        missing(f"python package {name!r} is not installed (pip install 'wasinn[all]')")


@pytest.fixture(scope="session")
def openvino_available() -> None:
    require_module("openvino")
    from wasinn.backends._offline import openvino_telemetry_off

    with openvino_telemetry_off():  # the tests' own import of openvino stays quiet too
        import openvino  # noqa: F401


def require_backend(encoding: GraphEncoding, *modules: str) -> Backend:
    """wasinn's backend for ``encoding`` once ``modules`` (its framework, and whatever the test
    builds models with) are installed. A backend whose framework is there but that fails to
    load is a test failure, never a skip."""
    for module in modules:
        require_module(module)
    return get_backend(encoding)


def requires_gpu(has_gpu: bool, what: str) -> None:
    """The one environment skip that stays a skip under CI: CI machines never have a GPU, so
    a test that needs ``what`` (a CUDA device, an OpenVINO GPU) can only run where one is."""
    if not has_gpu:
        pytest.skip(f"needs {what}, which this machine does not have (never present in CI)")


def requires_no_gpu(has_gpu: bool, what: str) -> None:
    """The other side of :func:`requires_gpu`: a test of the answer *without* ``what`` cannot
    run where it is present (and in CI it never is)."""
    if has_gpu:
        pytest.skip(f"{what} is present here; this test checks the answer without it")


def wasinn_cli(
    *args: str,
    cwd: Path | None = None,
    stdin: str = "",
    env: dict[str, str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m wasinn ARGS`` in a subprocess, as a person runs it: real exit code and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "wasinn", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_guest(
    wasm: Path,
    *args: str,
    cwd: Path,
    preload: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    """``wasinn run --dir .:. [--nn-preload …] WASM ARGS`` with ``cwd`` as the guest's directory."""
    options = [f"--nn-preload={spec}" for spec in preload]
    return wasinn_cli("run", "--dir", ".:.", *options, str(wasm), *args, cwd=cwd, env=env, timeout=timeout)


def wasinn_run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """``wasinn run ARGS`` in a subprocess; the caller maps directories itself."""
    return wasinn_cli("run", *args, cwd=cwd, env=env, timeout=timeout)


def stage(directory: Path, *files: Path) -> list[str]:
    """Copy files into a guest's directory (WASI will not follow links out of it); their names."""
    for file in files:
        shutil.copy(file, directory / file.name)
    return [file.name for file in files]


def graph_for(encoding: GraphEncoding, *files: Path, target: ExecutionTarget = ExecutionTarget.CPU) -> Graph:
    """A core graph of the model ``files`` (the builders, in order), with no wasm in between."""
    return NNSession(get_backend).load([file.read_bytes() for file in files], encoding, target)


def context_for(
    encoding: GraphEncoding, *files: Path, target: ExecutionTarget = ExecutionTarget.CPU
) -> ExecutionContext:
    """A core execution context on a new graph of the model ``files``."""
    return graph_for(encoding, *files, target=target).init_execution_context()


def nn_run(
    cwd: Path, *args: str, preload: Sequence[str] = (), env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """The generic C guest (examples/c/nn-run.c) through ``wasinn run``."""
    return run_guest(guest_wasm("nn-run"), *args, cwd=cwd, preload=preload, env=env, timeout=timeout)


def guest_wasm(name: str) -> Path:
    path = BUILD / f"{name}.wasm"
    if not path.is_file():
        missing(f"{path} is not built; run `make examples`")
    return path


class Probe:
    """Drives the wasi_ephemeral_nn imports through a WAT guest that re-exports them."""

    SCRATCH = 1024  # where helpers lay out builders, tensors and strings

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        assert instance.memory is not None
        self.memory = instance.memory
        self._cursor = self.SCRATCH

    @property
    def size(self) -> int:
        return int(self.memory.data_len(self.instance.store))

    def call(self, name: str, *params: int) -> int:
        # Pointers above 2**31 go to wasm as negative i32, as a guest would pass them.
        signed = [p - (1 << 32) if p >= (1 << 31) else p for p in params]
        result: int = self.instance.call("nn_" + name, *signed)
        return result

    def write(self, ptr: int, data: bytes) -> None:
        self.memory.write(self.instance.store, data, ptr)

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self.memory.read(self.instance.store, ptr, ptr + length))

    def snapshot(self) -> bytes:
        return self.read(0, self.size)

    def u32(self, ptr: int) -> int:
        value: int = struct.unpack("<I", self.read(ptr, 4))[0]
        return value

    def put(self, data: bytes, align: int = 8) -> int:
        ptr = self._cursor
        self.write(ptr, data)
        self._cursor = (ptr + len(data) + align - 1) // align * align
        return ptr

    def builders(self, blobs: Sequence[bytes]) -> tuple[int, int]:
        entries = b"".join(struct.pack("<II", self.put(blob), len(blob)) for blob in blobs)
        return self.put(entries or b"\0" * 8), len(blobs)

    def tensor(self, dims: Sequence[int], type_word: int, data: bytes) -> int:
        dims_ptr = self.put(struct.pack(f"<{len(dims)}I", *dims))
        data_ptr = self.put(data)
        return self.put(struct.pack("<IIIII", dims_ptr, len(dims), type_word, data_ptr, len(data)))

    def string(self, text: str) -> tuple[int, int]:
        raw = text.encode()
        return self.put(raw), len(raw)

    HANDLE = 64  # where load and init_execution_context write their handles (in bounds, below SCRATCH)

    def load(self, encoding: int, blobs: Sequence[bytes], target: int = 0) -> int:
        """``load`` of ``blobs`` (WasmEdge encoding and target codes); the graph lands at HANDLE."""
        array, count = self.builders(blobs)
        return self.call("load", array, count, encoding, target, self.HANDLE)

    def context(self, encoding: int, model: Path) -> int:
        """The handle of a new context on a graph of one model file; both calls must succeed."""
        assert self.load(encoding, [model.read_bytes()]) == Errno.SUCCESS
        assert self.call("init_execution_context", self.u32(self.HANDLE), self.HANDLE + 4) == Errno.SUCCESS
        return self.u32(self.HANDLE + 4)


def make_probe(runtime: Runtime, pages: int = 1) -> Probe:
    return Probe(runtime.instantiate(compile_wat(probe_wat(memory_pages=pages))))


@pytest.fixture
def fake_backend() -> Iterator[FakeBackend]:
    """wasinn.testing.fake_backend standing in for OpenVINO (encoding 0) during the test:
    ``y = x * 2 + c`` with no framework, through the real core, gate and registry."""
    with serving(GraphEncoding.OPENVINO) as fake:
        yield fake


@pytest.fixture
def probe() -> Iterator[Probe]:
    instance_probe = make_probe(Runtime(cache=False))
    yield instance_probe
    instance_probe.instance.close()


# ---------------------------------------------------------------- small OpenVINO models


def save_ir(model: object, directory: Path, name: str) -> tuple[Path, Path]:
    import openvino as ov

    xml = directory / f"{name}.xml"
    ov.save_model(model, xml, compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


@pytest.fixture(scope="session")
def tiny_ir(tmp_path_factory: pytest.TempPathFactory, openvino_available: None) -> tuple[Path, Path]:
    """``y = relu(x * w + b)`` on f32 [1, 4]; a few hundred bytes of weights."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    w = ops.constant(np.array([[1.0, -2.0, 3.0, -4.0]], dtype=np.float32))
    b = ops.constant(np.array([[0.5, 0.5, -0.5, 1.0]], dtype=np.float32))
    y = ops.relu(ops.add(ops.multiply(x, w), b))
    model = ov.Model([y], [x], "tiny")
    return save_ir(model, tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="session")
def conv_ir(tmp_path_factory: pytest.TempPathFactory, openvino_available: None) -> tuple[Path, Path]:
    """A small NCHW CNN: f32 [1, 3, 8, 12] → conv 3x3 (4 filters) → relu → softmax over channels."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(7)
    x = ops.parameter([1, 3, 8, 12], ov.Type.f32, name="image")
    weights = ops.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    conv = ops.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    y = ops.softmax(ops.relu(conv), 1)
    model = ov.Model([y], [x], "conv")
    return save_ir(model, tmp_path_factory.mktemp("conv"), "conv")


@pytest.fixture(scope="session")
def two_input_ir(tmp_path_factory: pytest.TempPathFactory, openvino_available: None) -> tuple[Path, Path]:
    """Two inputs of different types and two outputs: (a f32[2,3], b i32[2,3]) → (a + b, a * 2)."""
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([2, 3], ov.Type.f32, name="a")
    b = ops.parameter([2, 3], ov.Type.i32, name="b")
    total = ops.add(a, ops.convert(b, ov.Type.f32))
    double = ops.multiply(a, ops.constant(np.float32(2.0)))
    model = ov.Model([total, double], [a, b], "two")
    return save_ir(model, tmp_path_factory.mktemp("two"), "two")


def native_infer(xml: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The reference: OpenVINO called directly on the same model and input."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU")
    result = compiled.create_infer_request().infer(list(inputs))
    return [np.array(result[output]) for output in compiled.outputs]


def python_guest(source: Path, directory: Path, *, versions: Sequence[str] = ()) -> Path:
    """``wasinn build`` of a Python guest into ``directory`` (cached by content across runs)."""
    require_module("componentize_py")
    from wasinn.tools.build import NN_VERSIONS, build

    target = directory / source.with_suffix(".wasm").name
    build(source, target, versions=versions or NN_VERSIONS[:1])
    return target


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight llama GGUF (wasinn.testing.tiny_gguf), written once per machine."""
    require_module("llama_cpp")
    require_module("gguf")
    from wasinn.testing.tiny_gguf import VocabUnavailable, tiny_llama

    try:
        return tiny_llama()
    except VocabUnavailable as err:
        missing(str(err))
        raise
