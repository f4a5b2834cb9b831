"""nn-rpc through the commands: `wasinn rpc-server` and `wasinn run --nn-rpc-uri` processes,
with real backends (OpenVINO, GGML) compared with local runs and native frameworks.

The protocol and transport cases, on the stub backend, are in test_nn_rpc.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from conftest import guest_wasm, native_infer, nn_run, require_module, wasinn_cli
from test_nn_rpc import stub_server

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
    """The nn-run guest, a preloaded model by name, 3 rounds each: one run locally, then three
    client processes at once against one server, each with its own input; every output is
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

    local = nn_run(tmp_path, *args(0), preload=(f"tiny:OpenVINO:CPU:{xml}:{weights}",))
    assert local.returncode == 0, local.stderr
    expected = (tmp_path / "out0.bin").read_bytes()
    (tmp_path / "out0.bin").unlink()
    wasm = str(guest_wasm("nn-run"))
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
        assert stdout == local.stdout
    assert (tmp_path / "out0.bin").read_bytes() == expected
    for n, data in enumerate(inputs):
        (reference,) = native_infer(xml, [data])
        assert (tmp_path / f"out{n}.bin").read_bytes() == reference.tobytes()


def ggml_chat(tmp_path: Path, *options: str, rpc: str | None = None, model: Path | None = None) -> str:
    where = ["--nn-rpc-uri", rpc] if rpc else [f"--nn-preload=default:GGML:AUTO:{model}"]
    done = wasinn_cli(
        "run",
        "--dir",
        ".:.",
        *where,
        str(guest_wasm("ggml-chat")),
        *options,
        "default",
        "Once upon a time, ",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ggml_over_a_unix_socket_equals_the_local_run_streaming_included(
    tiny_model: Path, tmp_path: Path
) -> None:
    """compute + get_output, then a compute_single stream to end of sequence (100), then the
    stream again from a third client process: every byte as locally. (GGML settings belong to
    the graph, which all clients share, as on WasmEdge's server: the stream's grammar would
    still hold for a later client that does not set its own.)"""
    generate = ("--meta", json.dumps({"temp": 0, "n-predict": 12}))
    stream = ("--stream", "--meta", json.dumps({"temp": 0, "n-predict": 6, "grammar": 'root ::= "yes"'}))
    local = [ggml_chat(tmp_path, *options, model=tiny_model) for options in (generate, stream)]
    assert "rc_single=100" in local[1] and "piece_hex" in local[1]
    with tempfile.TemporaryDirectory(prefix="nnrpc-", dir="/tmp") as directory:
        with rpc_server_cli(f"unix:{directory}/s", f"default:GGML:AUTO:{tiny_model}") as uri:
            remote = [ggml_chat(tmp_path, *options, rpc=uri) for options in (generate, stream, stream)]
        assert not os.path.exists(f"{directory}/s")  # removed at SIGTERM
    assert remote == [*local, local[1]]


def test_cli_refusals_and_client_mode_preloads(tmp_path: Path) -> None:
    """Case 22: rpc-server needs --listen; unix://rel and non-loopback TCP are refused by both
    commands; a client's --nn-preload is ignored with a warning (the server's models count)."""
    wasm = str(guest_wasm("nn-run"))
    no_listen = wasinn_cli("rpc-server")
    assert no_listen.returncode == 2 and "--listen" in no_listen.stderr
    # (a non-loopback address is refused by the same path: tests/test_nn_rpc.py::test_uri_forms)
    refused = wasinn_cli("rpc-server", "--listen", "unix://rel.sock")
    assert refused.returncode == 2 and "unix:rel.sock" in refused.stderr, refused.stderr
    assert "unix:rel.sock" in wasinn_cli("run", "--nn-rpc-uri", "unix://rel.sock", wasm).stderr
    (tmp_path / "in.bin").write_bytes(b"abc")
    with (
        tempfile.TemporaryDirectory(prefix="nnrpc-", dir="/tmp") as sockets,
        stub_server(Path(sockets), m={}) as uri,
    ):
        done = wasinn_cli(
            "run", "--dir", ".:.", "--nn-preload", "m:openvino:cpu:/nonexistent.xml", "--nn-rpc-uri", uri,
            wasm, "--name", "m", "--input", "0:u8:3:in.bin", "--output", "0:out.bin", cwd=tmp_path,
        )  # fmt: skip
    assert "--nn-preload is ignored with --nn-rpc-uri" in done.stderr
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.bin").read_bytes() == b"abc"  # the stub echoes its input
