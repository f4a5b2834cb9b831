"""nn-rpc (WasmEdge's WASI-NN over gRPC): our server and client on loopback.

Conformance cases of ../shared/spec/nn-rpc.md §6 by number. Transport cases use the stub
backend (wasinn.testing.nnrpc_stub); OpenVINO and GGML cases compare a guest's output over
RPC with the same guest run locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Probe, make_probe, require_module
from nnrpc_stub_server import stub_host
from wasinn import Runtime
from wasinn.abi import _nnrpc_wire as _wire
from wasinn.abi._errors import unexpected_counts
from wasinn.abi.nnrpc_client import ClientOptions, errno_from_trailer, grpc_target
from wasinn.core import ConfigError, Errno
from wasinn.rpc.server import RpcServer, ServerOptions, model_server
from wasinn.testing.nnrpc_stub import StubBackend

require_module("grpc")  # the rpc extra: a skip here, a failure under CI=true
import grpc  # noqa: E402

U8, F32, F64, I64 = 3, 1, 2, 5
OUT, WRITTEN, BUF = 64, 68, 4096  # probe memory: handle slots, bytes-written, output buffer


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short directory for unix sockets (pytest's tmp_path can pass the 107-byte limit)."""
    directory = Path(tempfile.mkdtemp(prefix="nnrpc-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def write_models(directory: Path, **models: dict[str, Any]) -> dict[str, str]:
    paths = {}
    for name, spec in models.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(spec))
        paths[name] = str(path)
    return paths


@contextlib.contextmanager
def stub_server(
    directory: Path, backend: StubBackend | None = None, **models: dict[str, Any]
) -> Iterator[str]:
    server = RpcServer(
        stub_host(write_models(directory, **models), backend), ServerOptions(f"unix:{directory}/s")
    )
    address = server.start()
    try:
        yield address
    finally:
        server.stop(0)


@contextlib.contextmanager
def remote_probe(uri: str, timeout: float | None = None, pages: int = 4) -> Iterator[Probe]:
    probe = make_probe(Runtime(cache=False, nn_rpc=ClientOptions(uri, timeout)), pages=pages)
    try:
        yield probe
    finally:
        probe.instance.close()


def load(probe: Probe, name: str) -> int:
    ptr, length = probe.string(name)
    return probe.call("load_by_name", ptr, length, OUT)


def context(probe: Probe, name: str = "m") -> int:
    assert load(probe, name) == 0
    assert probe.call("init_execution_context", probe.u32(OUT), OUT + 4) == 0
    return probe.u32(OUT + 4)


def get_output(probe: Probe, ctx: int, capacity: int, ptr: int = BUF) -> int:
    return probe.call("get_output", ctx, 0, ptr, capacity, WRITTEN)


# ------------------------------------------------------------------ wire (cases 1, 2, 12)


def test_method_paths_are_wasmedges() -> None:
    paths = {_wire.method_path(m) for m in _wire.HOST_FUNCTION}
    assert paths - {
        "/wasinn.nnrpc.ext.v1.Lifecycle/Unload",
        "/wasinn.nnrpc.ext.v1.Lifecycle/FinalizeExecutionContext",
    } == {
        "/wasi_ephemeral_nn.Graph/LoadByName",
        "/wasi_ephemeral_nn.Graph/LoadByNameWithConfig",
        "/wasi_ephemeral_nn.GraphResource/InitExecutionContext",
        *(
            f"/wasi_ephemeral_nn.GraphExecutionContextResource/{m}"
            for m in ("SetInput", "Compute", "ComputeSingle", "GetOutput", "GetOutputSingle", "FiniSingle")
        ),
    }


def test_golden_encodings_both_ways() -> None:
    assert _wire.encode_load_by_name("default") == bytes.fromhex("0a0764656661756c74")
    golden = bytes.fromhex("1001 1a0c 0a0105 1003 1a0568656c6c6f")
    assert _wire.encode_set_input(0, 1, [5], U8, b"hello") == golden
    assert _wire.decode_set_input(golden) == (0, 1, _wire.WireTensor((5,), U8, b"hello"))
    assert _wire.encode_get_output(1, 1) == bytes.fromhex("08011001")
    assert _wire.encode_handle(0) == b""
    assert _wire.encode_tensor([1, 3, 224, 224], F32, b"") == bytes.fromhex("0a060103e001e0011001")
    # Unpacked repeated dims (field 1 as varints) parse the same; unknown fields are skipped.
    unpacked = bytes.fromhex("0801 0803 10 01 2d00000000")
    assert _wire.decode_set_input(bytes.fromhex("1a") + bytes([len(unpacked)]) + unpacked)[2].dims == (1, 3)
    with pytest.raises(_wire.WireError):
        _wire.decode_load_by_name(bytes.fromhex("0a02ff fe"))


def test_errno_trailer_parsing() -> None:
    cases = {None: 5, "abc": 5, "101": 101, "7abc": 7, "0": 5, "4294967295": 5, "-3": -3, "": 5}
    assert {value: errno_from_trailer(value) for value in cases} == cases


def test_uri_forms() -> None:
    assert grpc_target("unix:/tmp/a.sock") == "unix:/tmp/a.sock"
    assert grpc_target("unix:rel.sock") == "unix:rel.sock"
    assert grpc_target("tcp:127.0.0.1:5000") == "127.0.0.1:5000"
    assert grpc_target("127.0.0.1:5000") == "127.0.0.1:5000"
    with pytest.raises(ConfigError, match="unix:rel.sock"):
        grpc_target("unix://rel.sock")
    with pytest.raises(ConfigError, match="loopback"):
        model_server([], ServerOptions("tcp:10.1.2.3:5000")).start()


# ------------------------------------------------------------------ client and server, stub backend


def test_echo_flow_u8_on_the_wire_and_the_size_probe(sockets: Path) -> None:
    """Cases 3, 4 and 9: set_input → compute → get_output; ty 3 reaches the backend as U8;
    a small buffer gets 7 with the full size and stays untouched; a 200 KB output arrives whole."""
    backend = StubBackend()
    with (
        stub_server(sockets, backend, m={}, big={"size": 200_000}) as uri,
        remote_probe(uri, pages=8) as probe,
    ):
        ctx = context(probe)
        assert (ctx, probe.u32(OUT)) == (0, 0)
        assert probe.call("set_input", ctx, 0, probe.tensor([5], U8, b"hello")) == 0
        assert probe.call("set_input", ctx, 1, probe.tensor([1], 0x103, b"-")) == 0  # the low byte
        assert backend.types_seen == ["U8", "U8"]
        assert probe.call("compute", ctx) == 0
        probe.write(BUF, b"\xee" * 8)
        assert get_output(probe, ctx, 4) == Errno.TOO_LARGE
        assert probe.u32(WRITTEN) == 5 and probe.read(BUF, 8) == b"\xee" * 8
        assert get_output(probe, ctx, 5) == 0
        assert probe.read(BUF, 6) == b"hello\xee" and probe.u32(WRITTEN) == 5
        big = context(probe, "big")
        assert (big, probe.u32(OUT)) == (1, 1)
        assert probe.call("compute", big) == 0
        assert get_output(probe, big, 300_000, ptr=65_536) == 0
        assert probe.u32(WRITTEN) == 200_000
        assert probe.read(65_536, 200_000) == bytes(i % 251 for i in range(200_000))


def test_calls_outside_the_protocol_answer_6_without_a_server(sockets: Path) -> None:
    """Case 5 (no RPC: there is no server at all) and case 14 (the first forwarded call: 5, fast)."""
    with remote_probe(f"unix:{sockets}/nobody") as probe:
        assert probe.call("load", 0xFFFFFF00, 3, 0, 0, 0xFFFFFFF0) == Errno.UNSUPPORTED_OPERATION
        assert probe.call("unload", 0) == Errno.UNSUPPORTED_OPERATION
        assert probe.call("finalize_execution_context", 7) == Errno.UNSUPPORTED_OPERATION
        started = time.monotonic()
        assert load(probe, "m") == Errno.RUNTIME_ERROR
        assert time.monotonic() - started < 1.0


def test_local_checks_come_before_any_call(sockets: Path) -> None:
    """Cases 6, 7, 23 against a dead address: each answer is the local check's, not 5."""
    with remote_probe(f"unix:{sockets}/nobody") as probe:
        tensor = probe.tensor([2], F64, b"\0" * 16)
        assert probe.call("set_input", 0, 0, tensor) == Errno.INVALID_ARGUMENT
        assert probe.call("set_input", 0, 0, probe.tensor([2], I64, b"\0" * 16)) == Errno.INVALID_ARGUMENT
        assert probe.call("set_input", 0, 0, probe.size - 4) == Errno.INVALID_ARGUMENT
        name, length = probe.string("m")
        assert probe.call("load_by_name", name, length, probe.size) == Errno.INVALID_ARGUMENT
        assert probe.call("load_by_name", probe.size - 1, 2, OUT) == Errno.INVALID_ARGUMENT
        bad = probe.put(b"\xff\xfe")
        assert probe.call("load_by_name", bad, 2, OUT) == Errno.RUNTIME_ERROR  # not UTF-8: never sent
        assert get_output(probe, 0, 16, ptr=probe.size - 8) == Errno.INVALID_ARGUMENT


def test_errno_crosses_the_wire(sockets: Path) -> None:
    """Cases 8, 10, 13: the server's errno reaches the guest, with UNKNOWN and the details."""
    with (
        stub_server(sockets, m={}, fails={"errno": 101}, raises={"raise": True}) as uri,
        remote_probe(uri) as probe,
    ):
        assert load(probe, "nope") == Errno.NOT_FOUND
        assert probe.call("init_execution_context", 99, OUT + 4) == Errno.INVALID_ARGUMENT
        assert probe.call("compute", 42) == Errno.INVALID_ARGUMENT
        probe.write(WRITTEN, b"\x09\x09\x09\x09")
        assert get_output(probe, 42, 16) == Errno.INVALID_ARGUMENT and probe.u32(WRITTEN) == 0
        assert probe.call("compute", context(probe, "fails")) == Errno.CONTEXT_FULL
        before = unexpected_counts().get("nn-rpc", 0)
        assert probe.call("compute", context(probe, "raises")) == Errno.RUNTIME_ERROR
        assert unexpected_counts()["nn-rpc"] == before + 1  # the host-call policy: counted, logged
        assert probe.call("compute_single", context(probe, "m")) == Errno.INVALID_ARGUMENT  # not GGML
        channel = grpc.insecure_channel(grpc_target(uri))
        call = channel.unary_unary(_wire.method_path("Compute"), _wire.identity, _wire.identity)
        with pytest.raises(grpc.RpcError) as failure:
            call(_wire.encode_handle(42))
        channel.close()
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert ("errno", "1") in failure.value.trailing_metadata()
    assert failure.value.details().startswith('failed to call host function "compute", errno=1')


def test_a_server_without_a_trailer_is_errno_5(sockets: Path) -> None:
    """Case 12's transport half: a peer that fails without ``errno`` (WasmEdge's size limit)."""

    def refuse(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big")
        return b""

    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(2))
    handlers = {"LoadByName": grpc.unary_unary_rpc_method_handler(refuse, _wire.identity, _wire.identity)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("wasi_ephemeral_nn.Graph", handlers),)
    )
    server.add_insecure_port(f"unix:{sockets}/fake")
    server.start()
    try:
        with remote_probe(f"unix:{sockets}/fake") as probe:
            assert load(probe, "m") == Errno.RUNTIME_ERROR
            assert probe.call("compute", 0) == Errno.RUNTIME_ERROR  # UNIMPLEMENTED: no trailer either
            # No lifecycle extension there: 6, as WasmEdge's client answers, and not asked again.
            assert probe.call("finalize_execution_context", 0) == Errno.UNSUPPORTED_OPERATION
            assert probe.instance._abi.client.lifecycle is False  # type: ignore[attr-defined]
            assert probe.call("unload", 0) == Errno.UNSUPPORTED_OPERATION
    finally:
        server.stop(0)


def test_our_server_ends_contexts_through_the_extension(sockets: Path) -> None:
    """Spec §5.2's extension: wasinn's client frees its contexts on a wasinn server (no leak);
    unload answers 0 and leaves the shared graph to the other clients."""
    host = stub_host(write_models(sockets, m={}))
    server = RpcServer(host, ServerOptions(f"unix:{sockets}/s"))
    uri = server.start()
    try:
        with remote_probe(uri) as probe, remote_probe(uri) as other:
            ctx, graph = context(probe), probe.u32(OUT)
            assert host.live_contexts == 1
            assert probe.call("finalize_execution_context", ctx) == 0 and host.live_contexts == 0
            assert probe.call("finalize_execution_context", ctx) == Errno.INVALID_ARGUMENT
            assert probe.call("unload", graph) == 0
            assert probe.call("unload", 77) == Errno.INVALID_ARGUMENT
            assert context(other) == 1 and other.u32(OUT) == graph  # the graph is still served
    finally:
        server.stop(0)


def test_clients_share_handles_and_many_run_at_once(sockets: Path) -> None:
    """Cases 11 and 19: one graph per name for everyone, contexts numbered across clients, a
    context usable by another client; 8 clients at once, each with its own answer."""
    with stub_server(sockets, m={}) as uri:
        with remote_probe(uri) as a, remote_probe(uri) as b:
            assert (context(a), context(b)) == (0, 1)
            assert a.u32(OUT) == b.u32(OUT) == 0
            assert b.call("set_input", 0, 0, b.tensor([1], U8, b"A")) == 0
            assert a.call("compute", 0) == 0 and get_output(a, 0, 8) == 0 and a.read(BUF, 1) == b"A"
        results: dict[int, bytes] = {}

        def client(number: int) -> None:
            with remote_probe(uri) as probe:
                ctx = context(probe)
                payload = f"client {number}".encode() * 50
                assert probe.call("set_input", ctx, 0, probe.tensor([len(payload)], U8, payload)) == 0
                assert probe.call("compute", ctx) == 0
                assert get_output(probe, ctx, BUF) == 0
                results[number] = probe.read(BUF, probe.u32(WRITTEN))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == {n: f"client {n}".encode() * 50 for n in range(8)}


def test_slow_computes_overlap_on_two_graphs_and_queue_on_one(sockets: Path) -> None:
    """Case 19: the per-graph lock is the only serialisation."""
    with stub_server(sockets, a={"sleep": 0.6}, b={"sleep": 0.6}) as uri:

        def computes(names: tuple[str, str]) -> float:
            with remote_probe(uri) as one, remote_probe(uri) as two:
                contexts = [
                    (probe, context(probe, name)) for probe, name in zip((one, two), names, strict=True)
                ]
                started = time.monotonic()
                threads = [threading.Thread(target=p.call, args=("compute", c)) for p, c in contexts]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
                return time.monotonic() - started

        assert computes(("a", "b")) < 1.1
        assert computes(("a", "a")) >= 1.2


def test_a_client_that_leaves_cancels_its_compute(sockets: Path) -> None:
    """Spec §5.12: the client's deadline ends the call; the server cancels the 20 s compute
    and frees the graph's lock, so another client's call on that graph goes through."""
    backend = StubBackend()
    with (
        stub_server(sockets, backend, slow={"sleep": 20}) as uri,
        remote_probe(uri, timeout=0.5) as impatient,
        remote_probe(uri) as other,
    ):
        ctx = context(impatient, "slow")
        assert impatient.call("compute", ctx) == Errno.RUNTIME_ERROR
        started = time.monotonic()
        assert other.call("set_input", ctx, 0, other.tensor([1], U8, b"x")) == 0
        assert time.monotonic() - started < 2.0
    assert backend.cancels == 1


def test_a_guest_time_limit_bounds_the_remote_call(sockets: Path) -> None:
    """--time-limit covers forwarded calls: the guest stops as it would locally, not after 20 s."""
    from wasinn.core import TimeLimitExceeded
    from wasinn.host import Limits

    with stub_server(sockets, slow={"sleep": 20}) as uri:
        runtime = Runtime(cache=False, nn_rpc=ClientOptions(uri), limits=Limits(time_limit_ms=1500))
        probe = make_probe(runtime)
        try:
            ctx = context(probe, "slow")
            started = time.monotonic()
            with pytest.raises(TimeLimitExceeded):
                probe.call("compute", ctx)
            assert time.monotonic() - started < 3.0
        finally:
            probe.instance.close()


def test_large_messages_both_ways(sockets: Path) -> None:
    """Case 18: 5 MiB in and out (gRPC's default cap is 4 MiB)."""
    payload = bytes(range(256)) * (5 * 4096)
    with stub_server(sockets, m={}) as uri, remote_probe(uri, pages=200) as probe:
        ctx = context(probe)
        data = probe.put(payload)
        record = probe.put(
            struct.pack("<IIIII", probe.put(struct.pack("<I", len(payload))), 1, U8, data, len(payload))
        )
        assert probe.call("set_input", ctx, 0, record) == 0
        assert probe.call("compute", ctx) == 0
        out = probe.put(b"\0" * len(payload))
        assert get_output(probe, ctx, len(payload), ptr=out) == 0
        assert probe.read(out, len(payload)) == payload


# ------------------------------------------------------------------ a server in its own process


@contextlib.contextmanager
def stub_process(directory: Path, uri: str, **models: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    entries = [f"{name}={path}" for name, path in write_models(directory, **models).items()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("nnrpc_stub_server.py")), uri, *entries],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == uri  # bound and serving
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_server_killed_mid_compute_is_errno_5_at_once(sockets: Path) -> None:
    """Case 15: SIGKILL 1 s into a 20 s compute; the guest's compute returns 5 within 2 s,
    the next get_output also 5 with bytes_written 0, and the host process goes on."""
    uri = f"unix:{sockets}/s"
    with stub_process(sockets, uri, slow={"sleep": 20}) as server, remote_probe(uri) as probe:
        ctx = context(probe, "slow")
        threading.Timer(1.0, os.kill, (server.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        assert probe.call("compute", ctx) == Errno.RUNTIME_ERROR
        assert time.monotonic() - started < 3.0
        probe.write(WRITTEN, b"\x09\x09\x09\x09")
        assert get_output(probe, ctx, 16) == Errno.RUNTIME_ERROR and probe.u32(WRITTEN) == 0


def test_a_stopped_server_is_errno_5_after_the_timeout(sockets: Path) -> None:
    """Case 16: SIGSTOP and --nn-rpc-timeout 1: 5 after about a second, not a hang."""
    uri = f"unix:{sockets}/s"
    with stub_process(sockets, uri, m={}) as server, remote_probe(uri, timeout=1.0) as probe:
        ctx = context(probe)
        os.kill(server.pid, signal.SIGSTOP)
        started = time.monotonic()
        assert probe.call("compute", ctx) == Errno.RUNTIME_ERROR
        assert 0.9 < time.monotonic() - started < 3.0


def test_a_stale_socket_is_replaced_and_a_live_one_refused(sockets: Path) -> None:
    """Case 17: restart after a kill (the socket file stays behind); no takeover of a live one."""
    uri = f"unix:{sockets}/s"
    with stub_process(sockets, uri, m={}) as server:
        with pytest.raises(ConfigError, match="another server is listening"):
            model_server([], ServerOptions(uri)).start()
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
    assert (sockets / "s").exists()
    with stub_server(sockets, m={}) as again, remote_probe(again) as probe:
        assert context(probe) == 0
