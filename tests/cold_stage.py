"""One directory with a small model and an input for every backend, and the route that runs each.

Each route is a guest that loads its model *by bytes* on every request (nn-run's ``--model``,
as WasmEdge's openvino-mobilenet-raw does), so a cold server's first requests all reach the
framework's first use at once: import, session creation, model read, compile, dtype queries.
The guests map the stage at ``/d``.
"""

from __future__ import annotations

import io
import os
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

from conftest import guest_wasm, python_guest, shared_file

GUEST_DIR = "/d"
CONCURRENT = 16  # first requests to each route at once
WORKERS = 4
# A cold start imports every framework and loads 128 models on 2 cores; a hung server never
# answers at all. Generous, so a busy machine does not fail it, finite, so a hang does.
REQUEST_TIMEOUT = 180.0
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "python"


@dataclass(frozen=True)
class ColdRoute:
    name: str
    module: Path
    args: tuple[str, ...]  # the guest's arguments; the query spells them

    @property
    def query(self) -> str:
        """nn-run's options as query parameters (``?model=a&model=b`` keeps their order)."""
        pairs: list[tuple[str, str]] = []
        args = list(self.args)
        while args:
            head = args.pop(0)
            if head.startswith("--") and args and not args[0].startswith("--"):
                pairs.append((head[2:], args.pop(0)))
            elif head.startswith("--"):
                pairs.append((head[2:], ""))
            else:
                pairs.append(("arg", head))
        return urlencode(pairs)


def _nn_run(name: str, encoding: str, models: list[str], inputs: list[str], output: str) -> ColdRoute:
    args = ["--encoding", encoding, "--target", "cpu"]
    for model in models:
        args += ["--model", f"{GUEST_DIR}/{model}"]
    for spec in inputs:
        index, kind, dims, file = spec.split(":")
        args += ["--input", f"{index}:{kind}:{dims}:{GUEST_DIR}/{file}"]
    args += ["--print", "--output-type", output]
    return ColdRoute(name, guest_wasm("nn-run"), tuple(args))


def _openvino(stage: Path, rng: np.random.Generator) -> ColdRoute:
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 224, 224], ov.Type.f32, name="input")
    hidden, channels = x, 3
    for width in (16, 32, 64):  # a mobilenet-sized input, a few convolutions
        weights = ops.constant(rng.standard_normal((width, channels, 3, 3)).astype(np.float32) * 0.1)
        hidden = ops.relu(ops.convolution(hidden, weights, [2, 2], [1, 1], [1, 1], [1, 1]))
        channels = width
    pooled = ops.reduce_mean(hidden, ops.constant(np.array([2, 3])), False)
    scores = ops.matmul(
        pooled, ops.constant(rng.standard_normal((64, 1001)).astype(np.float32)), False, False
    )
    ov.save_model(
        ov.Model([ops.softmax(scores, 1)], [x], "mobilish"), stage / "mob.xml", compress_to_fp16=False
    )
    rng.standard_normal((1, 3, 224, 224)).astype(np.float32).tofile(stage / "mob.f32")
    return _nn_run("openvino", "openvino", ["mob.xml", "mob.bin"], ["0:f32:1x3x224x224:mob.f32"], "f32")


def _tflite(stage: Path, rng: np.random.Generator) -> ColdRoute:
    (stage / "birds.tflite").write_bytes(
        shared_file("birds-v1", "lite-model_aiy_vision_classifier_birds_V1_3.tflite").read_bytes()
    )
    rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8).tofile(stage / "bird.u8")
    return _nn_run("tflite", "tensorflowlite", ["birds.tflite"], ["0:u8:1x224x224x3:bird.u8"], "u8")


def _onnx(stage: Path, rng: np.random.Generator) -> ColdRoute:
    from onnx import TensorProto, helper, numpy_helper, save

    weights = {
        "w": rng.standard_normal((8, 3)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, stage / "mlp.onnx")
    rng.standard_normal((1, 8)).astype(np.float32).tofile(stage / "mlp.f32")
    return _nn_run("onnx", "onnx", ["mlp.onnx"], ["0:f32:1x8:mlp.f32"], "f32")


def _pytorch(stage: Path, rng: np.random.Generator) -> ColdRoute:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), str(stage / "cnn.pt"))
    rng.standard_normal((1, 3, 8, 8)).astype(np.float32).tofile(stage / "cnn.f32")
    return _nn_run("pytorch", "pytorch", ["cnn.pt"], ["0:f32:1x3x8x8:cnn.f32"], "f32")


def _tensorflow(stage: Path, rng: np.random.Generator) -> ColdRoute:
    from tf_models import mobilenet_tiny

    (stage / "mobilenet_tiny.pb").write_bytes(mobilenet_tiny())
    rng.standard_normal((1, 224, 224, 3)).astype(np.float32).tofile(stage / "tf.f32")
    return _nn_run("tensorflow", "tensorflow", ["mobilenet_tiny.pb"], ["0:f32:1x224x224x3:tf.f32"], "f32")


def _ggml(stage: Path, model: Path) -> ColdRoute:
    (stage / "tiny.gguf").write_bytes(model.read_bytes())
    (stage / "prompt.txt").write_text("Once upon a time")
    (stage / "meta.json").write_text('{"n-predict": 8, "temp": 0}')
    return _nn_run("ggml", "ggml", ["tiny.gguf"], ["0:u8::prompt.txt", "1:u8::meta.json"], "text")


def _whisper(stage: Path) -> ColdRoute:
    from wasinn.testing.tiny_whisper import tiny_whisper

    (stage / "whisper.bin").write_bytes(tiny_whisper().read_bytes())
    samples = (np.sin(np.arange(16000) / 8) * 8000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.tobytes())
    audio = buffer.getvalue()
    (stage / "audio.wav").write_bytes(audio)
    return _nn_run("whisper", "whisper", ["whisper.bin"], [f"0:f32:1x{len(audio)}:audio.wav"], "text")


def _component(stage: Path) -> ColdRoute:
    """The Python guest (a WIT component) loads the birds model by bytes, in pieces."""
    module = python_guest(EXAMPLES / "classify_birds.py", stage)
    return ColdRoute("component", module, ("--model", f"{GUEST_DIR}/birds.tflite", f"{GUEST_DIR}/bird.u8"))


def build_stage(stage: Path, tiny_gguf: Path) -> list[ColdRoute]:
    """Write every model and input into ``stage``; the routes, one per backend (or those named
    in ``WASINN_COLD_ROUTES``, comma separated, e.g. to check one backend on an older build)."""
    rng = np.random.default_rng(16)
    routes = [_openvino(stage, rng), _tflite(stage, rng), _onnx(stage, rng), _pytorch(stage, rng)]
    routes += [_tensorflow(stage, rng), _ggml(stage, tiny_gguf), _whisper(stage), _component(stage)]
    wanted = os.environ.get("WASINN_COLD_ROUTES")
    return [route for route in routes if not wanted or route.name in wanted.split(",")]


def expected_outputs(stage: Path, routes: list[ColdRoute]) -> dict[str, bytes]:
    """What each route's guest prints when run once, alone, through ``wasinn.Runtime``."""
    from wasinn.host import Runtime

    outputs = {}
    for route in routes:
        stdout = stage / f"{route.name}.expected"
        with Runtime(dirs=[f"{GUEST_DIR}:{stage}"], stdout=stdout) as runtime:
            assert runtime.run(route.module, route.args) == 0, route.name
        outputs[route.name] = stdout.read_bytes()
        assert outputs[route.name].startswith(b"output 0:") or route.name == "component", outputs
    return outputs


Answer = tuple[int, bytes] | str


def first_requests(base: str, routes: list[ColdRoute]) -> dict[str, list[Answer]]:
    """``CONCURRENT`` requests to every route at once, released together by a barrier."""
    import httpx

    answers: dict[str, list[Answer]] = {route.name: [] for route in routes}
    barrier = threading.Barrier(CONCURRENT * len(routes))

    def ask(route: ColdRoute) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            barrier.wait()
            try:
                response = client.post(f"{base}/{route.name}?{route.query}")
                answers[route.name].append((response.status_code, response.content))
            except httpx.HTTPError as err:
                answers[route.name].append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=ask, args=(r,)) for r in routes for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT + 30)
    assert not any(thread.is_alive() for thread in threads), "a client never got an answer"
    return answers
