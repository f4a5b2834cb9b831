"""``make bench-warm``: whole-process timings of ``wasinn run`` through the warm host.

For each guest: a warm ``wasinn run`` (the thin client and a running ``wasinn host``), a
cold one (``WASINN_WARM=0``: Python start, imports, module cache, model load) and a native
Python script doing the same inference, all as whole processes timed from here, in turn
(warm, cold, native, warm, …) so that a drift of the machine's speed touches all three.
Medians are reported. Prints Markdown rows for docs/benchmarks.md.

- mobilenet-raw: WasmEdge's openvino-mobilenet-raw call sequence (the ``nn-run`` guest
  reads model.xml/model.bin and a 1x3x224x224 f32 tensor and loads the model by bytes) on
  a MobileNetV2 with random weights (generated here: 3.5 M parameters, 14 MB).
- road segmentation: build/wasm/road-segmentation.wasm on road-segmentation-adas-0001
  (/work/shared/data), as in ``wasinn bench``'s end-to-end case; also its steady inference
  (one ``infer`` in a warm native process), the yardstick of the issue's 1.05x target.
- GGML chat: the ``ggml-chat`` guest on wasinn.testing's random-weight llama (preloaded),
  16 tokens, greedy, vs llama-cpp-python generating the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from wasinn.bench._harness import ROAD_BIN, ROAD_XML, data_file, guest
from wasinn.bench.cases import NATIVE_ROAD_SCRIPT

NATIVE_MOBILENET = """\
import os, sys
os.environ["CI"] = "true"  # OpenVINO telemetry off, as wasinn does
import numpy as np
import openvino as ov
xml, weights, tensor = sys.argv[1:]
compiled = ov.Core().compile_model(ov.Core().read_model(xml, weights), "CPU")
data = np.fromfile(tensor, dtype="<f4").reshape(1, 3, 224, 224)
out = compiled.create_infer_request().infer({0: data})[0]
print("argmax", int(np.argmax(out)))
"""

NATIVE_GGML = """\
import sys
from llama_cpp import Llama
model, prompt, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = Llama(model, n_ctx=512, verbose=False, seed=0)
out = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0)
print(out["choices"][0]["text"])
"""


def mobilenet_v2(directory: Path) -> tuple[Path, Path]:
    """MobileNetV2 (1.0, 224) as OpenVINO IR with random weights; BN folded into the convs."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def conv(x: object, out: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> object:
        channels = x.get_output_partial_shape(0)[1].get_length()  # type: ignore[attr-defined]
        pad = kernel // 2
        scale = np.sqrt(2.0 / (kernel * kernel * channels / groups))
        if groups == 1:
            w = (rng.standard_normal((out, channels, kernel, kernel)) * scale).astype(np.float32)
            y = ops.convolution(x, ops.constant(w), [stride] * 2, [pad] * 2, [pad] * 2, [1, 1])
        else:
            w = (rng.standard_normal((groups, 1, 1, kernel, kernel)) * scale).astype(np.float32)
            y = ops.group_convolution(x, ops.constant(w), [stride] * 2, [pad] * 2, [pad] * 2, [1, 1])
        y = ops.add(y, ops.constant(np.zeros((1, out, 1, 1), np.float32)))
        return ops.clamp(y, 0.0, 6.0) if act else y

    image = ops.parameter([1, 3, 224, 224], ov.Type.f32, name="input")
    x = conv(image, 32, 3, 2)
    channels = 32
    blocks = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
    for expand, out, repeat, stride in [*blocks, (6, 320, 1, 1)]:
        for index in range(repeat):
            step = stride if index == 0 else 1
            hidden = channels * expand
            y = conv(x, hidden, 1, 1) if expand != 1 else x
            y = conv(y, hidden, 3, step, groups=hidden)
            y = conv(y, out, 1, 1, act=False)
            x = ops.add(x, y) if step == 1 and channels == out else y
            channels = out
    x = conv(x, 1280, 1, 1)
    x = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    fc = (rng.standard_normal((1000, 1280)) * 0.02).astype(np.float32)
    logits = ops.matmul(x, ops.constant(fc), False, True)
    model = ov.Model([ops.softmax(logits, 1)], [image], "mobilenet_v2")
    xml = directory / "mobilenet.xml"
    ov.save_model(model, xml, compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def timed(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def compare(
    name: str, runs: int, cwd: Path, sides: Mapping[str, Sequence[str]], env: dict[str, str]
) -> dict[str, float]:
    cold_env = {**env, "WASINN_WARM": "0"}
    envs = {"warm": env, "cold": cold_env, "native": env}
    for side, command in sides.items():  # untimed: fill the module, page and model caches
        timed(command, cwd, envs[side])
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(runs):
        for side, command in sides.items():
            samples[side].append(timed(command, cwd, envs[side]))
    medians = {side: statistics.median(values) for side, values in samples.items()}
    spread = {side: (min(values), max(values)) for side, values in samples.items()}
    print(f"# {name}: medians {medians} (min, max) {spread}", file=sys.stderr)
    return medians


def road_inference_ms(xml: Path, weights: Path, rounds: int = 20) -> float:
    """The steady inference the issue's 1.05x target is about: one ``infer``, warm process."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    core = ov.Core()
    ppp = PrePostProcessor(core.read_model(xml, weights))
    ppp.input(0).tensor().set_layout(ov.Layout("NHWC"))
    ppp.input(0).model().set_layout(ov.Layout("NCHW"))
    request = core.compile_model(ppp.build(), "CPU").create_infer_request()
    data = np.random.default_rng(0).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        request.infer({0: data})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasinn.bench.warm")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--case", action="append", choices=["mobilenet", "road", "ggml"])
    options = parser.parse_args(argv)
    cases = options.case or ["mobilenet", "road", "ggml"]
    source = str(Path(__file__).resolve().parents[2])
    with tempfile.TemporaryDirectory(prefix="wasinn-warm-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "WASINN_HOST_DIR": str(work / "host"), "PYTHONPATH": source, "CI": "true"}
        env.pop("WASINN_WARM", None)
        # the console script, as people type it (``python -m`` adds runpy's imports, ~4 ms)
        script = Path(sys.executable).with_name("wasinn")
        wasinn = [str(script)] if script.is_file() else [sys.executable, "-m", "wasinn"]
        subprocess.run([*wasinn, "host", "start"], env=env, check=True, capture_output=True)
        rows: list[str] = []
        try:
            for case in cases:
                rows += CASES[case](work, options.runs, wasinn, env)
        finally:
            subprocess.run([*wasinn, "host", "stop"], env=env, capture_output=True)
    print("| guest | warm `wasinn run` | cold `wasinn run` | native Python script | warm / native | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 0


def _row(name: str, m: dict[str, float], target: str) -> str:
    return (
        f"| {name} | **{m['warm']:.0f} ms** | {m['cold']:.0f} ms | {m['native']:.0f} ms "
        f"| {m['warm'] / m['native']:.2f} | {target} |"
    )


def mobilenet_case(work: Path, runs: int, wasinn: list[str], env: dict[str, str]) -> list[str]:
    xml, weights = mobilenet_v2(work)
    (work / "tensor.rgb").write_bytes(data_file("mobilenet/image-1x3x224x224.rgb").read_bytes())
    (work / "native.py").write_text(NATIVE_MOBILENET)
    run = [*wasinn, "run", "--dir", ".:.", str(guest("nn-run")), "--encoding", "openvino", "--target", "cpu"]
    run += [
        "--model",
        xml.name,
        "--model",
        weights.name,
        "--input",
        "0:f32:1,3,224,224:tensor.rgb",
        "--print",
    ]
    sides = {
        "warm": run,
        "cold": run,
        "native": [sys.executable, "native.py", xml.name, weights.name, "tensor.rgb"],
    }
    m = compare("mobilenet-raw", runs, work, sides, env)
    return [
        _row(
            "openvino-mobilenet-raw (nn-run, MobileNetV2 14 MB by bytes)",
            m,
            f"warm ≤ 50 ms: {'yes' if m['warm'] <= 50 else 'no'}",
        )
    ]


def road_case(work: Path, runs: int, wasinn: list[str], env: dict[str, str]) -> list[str]:
    xml, weights = data_file(ROAD_XML), data_file(ROAD_BIN)
    np.random.default_rng(0).uniform(0, 255, (512, 896, 3)).astype(np.float32).tofile(work / "in.tensor")
    (work / "native_road.py").write_text(NATIVE_ROAD_SCRIPT)
    run = [*wasinn, "run", "--dir", ".:.", "--dir", f"{xml.parent}:{xml.parent}"]
    run += [str(guest("road-segmentation")), str(xml), str(weights), "in.tensor"]
    native = [sys.executable, "native_road.py", str(xml), str(weights), "in.tensor", "native-out.tensor"]
    m = compare("road-segmentation", runs, work, {"warm": run, "cold": run, "native": native}, env)
    inference = road_inference_ms(xml, weights)
    ratio = m["warm"] / inference
    target = (
        f"warm ≤ 1.05x the inference ({inference:.0f} ms): {ratio:.2f}x, {'yes' if ratio <= 1.05 else 'no'}"
    )
    return [_row("road-segmentation-adas-0001", m, target)]


def ggml_case(work: Path, runs: int, wasinn: list[str], env: dict[str, str]) -> list[str]:
    from wasinn.bench.ggml import PROMPT, bench_model

    model = bench_model()
    (work / "native_ggml.py").write_text(NATIVE_GGML)
    meta = '{"temp": 0, "ignore-eos": true, "n-predict": 16}'
    run = [*wasinn, "run", "--nn-preload", f"default:GGML:AUTO:{model}", str(guest("ggml-chat"))]
    run += ["--meta", meta, "default", PROMPT]
    native = [sys.executable, "native_ggml.py", str(model), PROMPT, "16"]
    m = compare("ggml-chat", runs, work, {"warm": run, "cold": run, "native": native}, env)
    return [_row("ggml-chat (random-weight llama, 16 tokens)", m, "—")]


CASES: dict[str, Callable[[Path, int, list[str], dict[str, str]], list[str]]] = {
    "mobilenet": mobilenet_case,
    "road": road_case,
    "ggml": ggml_case,
}

if __name__ == "__main__":
    sys.exit(main())
