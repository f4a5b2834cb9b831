"""nn-rpc through the commands: `wasinn rpc-server` and `wasinn run --nn-rpc-uri` processes,
with real backends (OpenVINO, GGML) compared with local runs and native frameworks.

The protocol and transport cases, on the stub backend, are in test_nn_rpc.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import guest_wasm, native_infer, require_module, wasinn_cli
from test_nn_rpc import stub_server
from wasinn.cli import main
from wasinn.cli._errors import USAGE_ERROR
from wasinn.host import Runtime

require_module("grpc")  # the rpc extra: a skip here, a failure under CI=true


@contextlib.contextmanager
def rpc_server_cli(listen: str, *preloads: str, cwd: Path | None = None) -> Iterator[str]:
    """``wasinn rpc-server`` in its own process; the address it reports once bound."""
    options = [f"--nn-preload={spec}" for spec in preloads]
    process = subprocess.Popen(
        [sys.executable, "-m", "wasinn", "rpc-server", "--listen", listen, *options],
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "rpc-server listening on " in line, line + process.stderr.read()
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_openvino_over_tcp_equals_the_local_run(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    """The nn-run guest, a preloaded model by name, 3 rounds each: one run locally (in this
    process), then three client processes at once against one server, each with its own input; every output is
    the local run's bytes or native OpenVINO's."""
    xml, weights = tiny_ir
    inputs = [np.array([[0.5, -1.0, 2.0, 3.5]], np.float32) * (n + 1) for n in range(3)]
    for n, data in enumerate(inputs):
        data.tofile(tmp_path / f"in{n}.bin")

    def args(n: int) -> list[str]:
        return [
            "--name",
            "tiny",
            "--input",
            f"0:f32:1x4:in{n}.bin",
            "--output",
            f"0:out{n}.bin",
            "--repeat",
            "3",
        ]

    wasm = str(guest_wasm("nn-run"))
    local = run_here(tmp_path, wasm, *args(0), preload=[f"tiny:OpenVINO:CPU:{xml}:{weights}"])
    expected = (tmp_path / "out0.bin").read_bytes()
    (tmp_path / "out0.bin").unlink()
    with rpc_server_cli("tcp:127.0.0.1:0", f"tiny:OpenVINO:CPU:{xml}:{weights}") as uri:
        assert uri.startswith("tcp:127.0.0.1:") and not uri.endswith(":0")
        command = [sys.executable, "-m", "wasinn", "run", "--dir", ".:.", "--nn-rpc-uri", uri, wasm]
        clients = [
            subprocess.Popen(
                [*command, *args(n)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for n in range(3)
        ]
        results = [(client.communicate(timeout=120), client.returncode) for client in clients]
    for (stdout, stderr), code in results:
        assert code == 0, stderr
        assert stdout == local
    assert (tmp_path / "out0.bin").read_bytes() == expected
    for n, data in enumerate(inputs):
        (reference,) = native_infer(xml, [data])
        assert (tmp_path / f"out{n}.bin").read_bytes() == reference.tobytes()


def run_here(directory: Path, wasm: str, *args: str, **runtime: Any) -> str:
    """A guest run in this process (no interpreter to start) with ``directory`` as its ".";
    its stdout."""
    stdout = directory / "stdout.txt"
    with Runtime(dirs=[f".:{directory}"], stdout=stdout, cache=False, **runtime) as here:
        assert here.run(wasm, args) == 0
    return stdout.read_text()


def ggml_chat(tmp_path: Path, *options: str, rpc: str | None = None, model: Path | None = None) -> str:
    """ggml-chat on the preloaded tiny model: in this process with ``model``, or as a
    `wasinn run --nn-rpc-uri` process with ``rpc``."""
    wasm = str(guest_wasm("ggml-chat"))
    if rpc is None:
        preload = [f"default:GGML:AUTO:{model}"]
        return run_here(tmp_path, wasm, *options, "default", "Once upon a time, ", preload=preload)
    prompt = ("default", "Once upon a time, ")
    done = wasinn_cli("run", "--dir", ".:.", "--nn-rpc-uri", rpc, wasm, *options, *prompt, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ggml_over_a_unix_socket_equals_the_local_run_streaming_included(
    tiny_model: Path, tmp_path: Path
) -> None:
    """compute + get_output, then a compute_single stream to end of sequence (100), then the
    stream again from a third client process: every byte as the local runs (in this process).
    (GGML settings belong to the graph, which all clients share, as on WasmEdge's server: the
    stream's grammar would still hold for a later client that does not set its own.)"""
    generate = ("--meta", json.dumps({"temp": 0, "n-predict": 12}))
    stream = ("--stream", "--meta", json.dumps({"temp": 0, "n-predict": 6, "grammar": 'root ::= "yes"'}))
    local = [ggml_chat(tmp_path, *options, model=tiny_model) for options in (generate, stream)]
    assert "rc_single=100" in local[1] and "piece_hex" in local[1]
    with tempfile.TemporaryDirectory(prefix="nnrpc-", dir="/tmp") as directory:
        with rpc_server_cli(f"unix:{directory}/s", f"default:GGML:AUTO:{tiny_model}") as uri:
            remote = [ggml_chat(tmp_path, *options, rpc=uri) for options in (generate, stream, stream)]
        assert not os.path.exists(f"{directory}/s")  # removed at SIGTERM
    assert remote == [*local, local[1]]


def test_cli_refusals_and_client_mode_preloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 22, in-process: rpc-server needs --listen; unix://rel is refused by both commands
    (a non-loopback address by the same path: test_nn_rpc.py::test_uri_forms); a client's
    --nn-preload is ignored with a warning, the server's models count."""
    logger = logging.getLogger("wasinn")  # the commands point it at the runner's stderr
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    runner = CliRunner()
    wasm = str(guest_wasm("nn-run"))
    no_listen = runner.invoke(main, ["rpc-server"])
    assert no_listen.exit_code == USAGE_ERROR and "--listen" in no_listen.stderr
    refused = runner.invoke(main, ["rpc-server", "--listen", "unix://rel.sock"])
    assert refused.exit_code == USAGE_ERROR and "write unix:rel.sock" in refused.stderr, refused.stderr
    refused = runner.invoke(main, ["run", "--nn-rpc-uri", "unix://rel.sock", wasm])
    assert refused.exit_code == USAGE_ERROR and "write unix:rel.sock" in refused.stderr, refused.stderr
    (tmp_path / "in.bin").write_bytes(b"abc")
    monkeypatch.chdir(tmp_path)
    with (
        tempfile.TemporaryDirectory(prefix="nnrpc-", dir="/tmp") as sockets,
        stub_server(Path(sockets), m={}) as uri,
    ):
        done = runner.invoke(main, [
            "run", "--dir", ".:.", "--nn-preload", "m:openvino:cpu:/nonexistent.xml", "--nn-rpc-uri", uri,
            wasm, "--name", "m", "--input", "0:u8:3:in.bin", "--output", "0:out.bin",
        ])  # fmt: skip
    assert "--nn-preload is ignored with --nn-rpc-uri" in done.stderr
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "out.bin").read_bytes() == b"abc"  # the stub echoes its input


def test_road_segmentation_over_rpc_moves_megabytes_both_ways(shared_data: Path, tmp_path: Path) -> None:
    """A real model (shared data): a 5.5 MB input and a 7.3 MB output, over gRPC's default
    4 MiB cap both ways, equal to native OpenVINO as the local guest is."""
    require_module("openvino")
    folder = shared_data / "road-segmentation-adas-0001"
    xml, weights = folder / "road-segmentation-adas-0001.xml", folder / "road-segmentation-adas-0001.bin"
    image = np.random.default_rng(3).uniform(0, 255, (1, 512, 896, 3)).astype(np.float32)
    image.tofile(tmp_path / "in.bin")
    with rpc_server_cli("tcp:127.0.0.1:0", f"road:openvino:cpu:{xml}:{weights}") as uri:
        done = wasinn_cli(
            "run", "--dir", ".:.", "--nn-rpc-uri", uri, str(guest_wasm("nn-run")),
            "--name", "road", "--input", "0:f32:1x512x896x3:in.bin", "--output", "0:out.bin", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["output 0: 7340032 bytes"]
    got = np.fromfile(tmp_path / "out.bin", np.float32).reshape(1, 4, 512, 896)
    (expected,) = native_infer(xml, [image.transpose(0, 3, 1, 2)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
