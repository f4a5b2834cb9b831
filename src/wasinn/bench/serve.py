"""``wasinn bench`` cases for serving: a warm HTTP request against native inference and
against a whole ``wasinn run`` process doing the same work, and a person's request (a
photo to the demo's segment route) against the same pipeline run natively."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import RemoteDisconnected
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wasinn.bench._harness import (
    PROCESS_UNIT,
    ROAD_BIN,
    ROAD_XML,
    Unavailable,
    data_dir,
    data_file,
    guest,
    native_loop,
    require,
    wasm_dir,
)
from wasinn.bench.types import Plan, Record, alternate

REQUEST_UNIT = "ms per request, timed by an HTTP client on loopback (body 5.5 MB in, 7.3 MB out)"
LABELS_UNIT = "ms per request, timed by an HTTP client on loopback (body 5.5 MB in, 0.46 MB out)"
PHOTO_UNIT = "ms per photo, timed by an HTTP client on loopback (a 232 KB JPEG in, JSON with a PNG out)"
PHOTO = "road-segmentation-adas-0001/empty_road_mapillary.jpg"
ROAD_ARGS = ["--name", "road", "--dims", "1x512x896x3"]
ROUTE = "road-segmentation"  # the route and preloaded model of `wasinn serve --demo`
QUERY = f"name={ROUTE}&dims=1x512x896x3"


class NativeRoad:
    """Native OpenVINO with the pre-processing the guest asks for (NHWC tensor, NCHW model),
    copy-in + infer + copy-out, on wasinn's own backend Core (the same defaults)."""

    def __init__(self, xml: Path, weights: Path, data: npt.NDArray[np.float32]) -> None:
        from wasinn.backends import get_backend
        from wasinn.backends._offline import openvino_telemetry_off
        from wasinn.core import GraphEncoding

        with openvino_telemetry_off():
            from openvino import Layout
            from openvino.preprocess import PrePostProcessor

        core = get_backend(GraphEncoding.OPENVINO).core  # type: ignore[attr-defined]
        ppp = PrePostProcessor(core.read_model(str(xml), str(weights)))
        ppp.input(0).tensor().set_layout(Layout("NHWC"))
        ppp.input(0).model().set_layout(Layout("NCHW"))
        self.compiled = core.compile_model(ppp.build(), "CPU")
        self.request = self.compiled.create_infer_request()
        self.data = data
        self.out = np.empty(tuple(self.compiled.outputs[0].get_shape()), dtype=np.float32)
        self.step()

    def step(self) -> None:
        self.infer(self.data)

    def infer(self, data: npt.NDArray[np.float32]) -> None:
        np.copyto(self.request.get_input_tensor(0).data, data)
        self.request.infer()
        np.copyto(self.out, self.request.get_output_tensor(0).data)


def native_photo(native: NativeRoad, photo: bytes) -> bytes:
    """The demo's segment route without the server: the same host code around native
    OpenVINO instead of the guest; returns the same JSON body."""
    from wasinn.serve.page import HEIGHT, WIDTH, overlay_picture, photo_tensor

    tensor, rgb = photo_tensor(photo)
    native.infer(np.frombuffer(tensor, dtype=np.float32).reshape(1, HEIGHT, WIDTH, 3))
    labels = native.out[0].argmax(axis=0).astype(np.uint8)
    png, shares = overlay_picture(labels.tobytes(), rgb)
    answer = {
        "picture": "data:image/png;base64," + base64.b64encode(png).decode(),
        "shares": {name: round(share, 2) for name, share in shares.items()},
    }
    return json.dumps(answer).encode()


@contextmanager
def road_server(cache: Path) -> Iterator[str]:
    """``wasinn serve --demo --workers 1`` in a subprocess (the road-segmentation route, its
    model preloaded from the shared data, and the demo's segment route); yields its URL."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "wasinn", "serve", "--port", str(port), "--workers", "1", "--demo"]
    env = {
        **os.environ,
        "WASINN_CACHE_DIR": str(cache),
        "WASINN_MODELS": str(data_dir()),
        "WASINN_GUESTS": str(wasm_dir()),
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise Unavailable(f"wasinn serve exited {process.returncode}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise Unavailable("wasinn serve did not start within 120 s") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Client:
    """A keep-alive HTTP/1.1 client from the standard library: little Python per byte."""

    def __init__(self, base: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)

    def post_ms(self, path: str, body: bytes, expected_bytes: int | None) -> float:
        """Milliseconds from sending ``body`` to having read the whole answer."""
        for attempt in range(2):
            started = time.perf_counter()
            try:
                self.post(path, body, expected_bytes)
                return (time.perf_counter() - started) * 1000
            except (BrokenPipeError, ConnectionResetError, RemoteDisconnected):
                if attempt:
                    raise
                # uvicorn closes a connection idle for 5 s (a slow native block): reconnect.
                self.connection.close()
        raise AssertionError("unreachable")

    def post(self, path: str, body: bytes, expected_bytes: int | None) -> bytes:
        self.connection.request("POST", path, body=body, headers={"content-type": "application/octet-stream"})
        response = self.connection.getresponse()
        content = response.read()
        if response.status != 200 or expected_bytes not in (None, len(content)):
            raise Unavailable(f"the server answered {response.status}: {content[:200]!r}")
        return content

    def close(self) -> None:
        self.connection.close()


def serve_road(plan: Plan) -> list[Record]:
    """Warm requests vs native inference (scores, and labels), and vs a whole ``wasinn run``."""
    require("openvino")
    require("uvicorn")
    require("PIL")
    xml, weights = data_file(ROAD_XML), data_file(ROAD_BIN)
    photo = data_file(PHOTO).read_bytes()
    pipe = guest("nn-pipe")
    data = np.random.default_rng(0).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    body = data.tobytes()
    labels = np.empty((512, 896), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="wasinn-bench-") as tmp:
        native = NativeRoad(xml, weights, data)

        def native_labels() -> None:
            native.step()
            labels[...] = native.out[0].argmax(axis=0)

        with road_server(Path(tmp, "cache")) as base:
            client = Client(base)

            def requests(path: str, size: int | None, sent: bytes = body) -> Callable[[int], list[float]]:
                return lambda count: [client.post_ms(path, sent, size) for _ in range(count)]

            scores = requests(f"/{ROUTE}?{QUERY}", native.out.nbytes)
            label_map = requests(f"/{ROUTE}?{QUERY}&argmax=4", labels.nbytes)
            photos = requests("/demo/segment", None, photo)
            scores(2)  # warms the server's first-request paths
            check_photo_answer(client.post("/demo/segment", photo, None), native_photo(native, photo))
            native_ms, request_ms = alternate(
                plan.steady_blocks,
                lambda: native_loop(native.step, plan.steady_reps),
                lambda: scores(plan.steady_reps),
            )
            native_labels_ms, labels_ms = alternate(
                plan.steady_blocks,
                lambda: native_loop(native_labels, plan.steady_reps),
                lambda: label_map(plan.steady_reps),
            )
            native_photo_ms, photo_ms = alternate(
                plan.steady_blocks,
                lambda: native_loop(lambda: native_photo(native, photo), plan.steady_reps),
                lambda: photos(plan.steady_reps),
            )
            Path(tmp, "in.tensor").write_bytes(body)
            process = [
                *(sys.executable, "-m", "wasinn", "run"),
                *("--nn-preload", f"road:openvino:cpu:{xml}:{weights}", str(pipe), *ROAD_ARGS),
            ]
            env = {**os.environ, "WASINN_CACHE_DIR": str(Path(tmp, "cache"))}

            def whole_process() -> list[float]:
                with open(Path(tmp, "in.tensor"), "rb") as stdin:
                    started = time.perf_counter()
                    done = subprocess.run(process, stdin=stdin, capture_output=True, env=env)
                    elapsed = (time.perf_counter() - started) * 1000
                if done.returncode != 0:
                    raise Unavailable(f"wasinn run exited {done.returncode}: {done.stderr[-200:]!r}")
                return [elapsed]

            whole_process()  # fills the module cache
            warm_ms, process_ms = alternate(plan.e2e_runs, lambda: scores(1), whole_process)
            client.close()
    warm = Record.measured("serve/road-segmentation/warm-request", native_ms, request_ms, REQUEST_UNIT)
    warm.notes = {
        "native": "OpenVINO NHWC→NCHW pre-processing, copy-in + infer + copy-out, in this process",
        "wasinn": "POST /road to `wasinn serve --workers 1` (nn-pipe guest, preloaded model)",
    }
    labelled = Record.measured(
        "serve/road-segmentation/warm-request-labels", native_labels_ms, labels_ms, LABELS_UNIT
    )
    labelled.notes = {
        "native": "the same inference + numpy argmax over the classes",
        "wasinn": "POST /road?argmax=4: the guest returns the 512x896 u8 label map",
    }
    person = Record.measured(
        "serve/road-segmentation/warm-request-photo", native_photo_ms, photo_ms, PHOTO_UNIT
    )
    person.notes = {
        "native": "PIL decode + im2tensor + OpenVINO + argmax + overlay PNG + JSON, in this process",
        "wasinn": "POST /demo/segment: the same host code around the nn-pipe guest (--argmax 4)",
    }
    versus = Record.measured("serve/road-segmentation/vs-process", warm_ms, process_ms, PROCESS_UNIT)
    versus.notes = {
        "native": "a warm request to wasinn serve (the baseline here)",
        "wasinn": "the same nn-pipe run as a whole `wasinn run` process: imports, model load, instance",
    }
    return [
        warm.judge("ratio <= 1.10", (warm.ratio or 0) <= 1.10),
        labelled.judge("ratio <= 1.10", (labelled.ratio or 0) <= 1.10),
        person.judge("ratio <= 1.10", (person.ratio or 0) <= 1.10),
        versus.judge("process >= 5x a warm request", (versus.ratio or 0) >= 5),
    ]


def check_photo_answer(served: bytes, native: bytes) -> None:
    """The server's class shares are the native pipeline's (a wrong answer is no benchmark)."""
    got, expected = json.loads(served)["shares"], json.loads(native)["shares"]
    if got.keys() != expected.keys() or any(abs(got[k] - expected[k]) > 0.05 for k in got):
        raise Unavailable(f"the demo route's class shares {got} are not native OpenVINO's {expected}")
