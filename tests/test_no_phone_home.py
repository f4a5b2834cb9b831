"""Nothing phones home, nothing forks (issue 16): ``wasinn serve`` and ``wasinn run`` audited.

Each command runs in a subprocess whose Python installs an audit hook (``sys.addaudithook``,
from a ``sitecustomize`` put first on PYTHONPATH) before anything else is imported, so the
hook sees the whole life of the host process: every socket connect, send and name lookup,
and every fork, exec, spawn and subprocess, written as JSON lines to a file. The test then
requires no lookup of, connect or send to, an address other than loopback (or a Unix socket),
and no process event at all. The subprocess gets a fresh HOME (no OpenVINO consent file: a
new machine's default) and no CI variables (OpenVINO's telemetry declines under CI=true).

Before the fix this caught, in both commands, OpenVINO's import-time telemetry (``os.fork``
from ``openvino_telemetry``'s sender thread, then the child's ``getaddrinfo`` of
www.google-analytics.com), and in the server ``subprocess.Popen`` of ``/sbin/ldconfig -p``
(``ctypes.util.find_library`` in wasinn's malloc tuning).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

from conftest import guest_wasm, native_infer, nn_run, require_module, stage

require_module("starlette")
require_module("uvicorn")
require_module("httpx")

import httpx  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402
from wasinn.core._paths import user_cache_dir  # noqa: E402

LOG_ENV = "WASINN_TEST_AUDIT_LOG"
STDLIB = (sysconfig.get_paths()["stdlib"] + os.sep, "<frozen")
# Read by openvino_telemetry (and other tools) to decline; the process under test must be
# quiet without them.
CI_VARIABLES = ("CI", "TF_BUILD", "JENKINS_URL")
NETWORK_EVENTS = {
    # event → index of the address (or host) among the audit arguments
    "socket.connect": 1,
    "socket.sendto": 1,
    "socket.getaddrinfo": 0,
    "socket.gethostbyname": 0,
    "socket.gethostbyaddr": 0,
}
PROCESS_EVENTS = (
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.exec",
    "os.spawn",
    "os.system",
    "subprocess.Popen",
    "pty.spawn",
)

HOOK = f'''\
"""Written by tests/test_no_phone_home.py: this process's network and process events."""
import json
import os
import sys

_LOG = os.open(os.environ["{LOG_ENV}"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
_NETWORK = {NETWORK_EVENTS!r}
_PROCESS = {PROCESS_EVENTS!r}


def _record(event, **fields):
    # One write per record on an O_APPEND descriptor: whole lines, even from several threads.
    os.write(_LOG, (json.dumps({{"pid": os.getpid(), "event": event, **fields}}) + "\\n").encode())


def _stack():
    frame, stack = sys._getframe(2), []
    while frame is not None and len(stack) < 40:
        stack.append(f"{{frame.f_code.co_filename}}:{{frame.f_lineno}}")
        frame = frame.f_back
    return stack


def _host(address):
    if isinstance(address, tuple) and address:
        address = address[0]
    if isinstance(address, bytes):
        address = address.decode("latin-1")
    return address if address is None or isinstance(address, str) else repr(address)


def _hook(event, args):
    if event in _NETWORK:
        family = getattr(args[0], "family", None) if event in ("socket.connect", "socket.sendto") else None
        host = _host(args[_NETWORK[event]])
        _record(event, host=host, family=None if family is None else int(family), stack=_stack())
    elif event in _PROCESS:
        _record(event, args=repr(args)[:500], stack=_stack())


sys.addaudithook(_hook)
_record("start", argv=sys.argv)
'''


def audited(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of an audited subprocess, and the file its events go to."""
    hook = tmp_path / "audit-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    home = tmp_path / "home"
    home.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in CI_VARIABLES}
    log = tmp_path / "audit.jsonl"
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
            LOG_ENV: str(log),
            "HOME": str(home),
            # the usual compiled-module cache, not one under the fresh HOME
            "WASINN_CACHE_DIR": str(user_cache_dir()),
        }
    )
    return env, log


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def is_local(record: dict[str, Any]) -> bool:
    if record.get("family") == socket.AF_UNIX:
        return True
    host = record["host"]
    if host is None or host == "localhost":  # None: a lookup for bind, no query
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:  # a name: a DNS query
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def in_stdlib(frame: str) -> bool:
    return frame.startswith(STDLIB) and f"-packages{os.sep}" not in frame


def violations(log: Path) -> list[str]:
    """Each event that phones home or starts a process, with where it came from."""
    found = []
    for record in records(log):
        event = record["event"]
        if event in PROCESS_EVENTS:
            detail = record["args"]
        elif event in NETWORK_EVENTS and not is_local(record):
            detail = repr(record["host"])
        else:
            continue
        # the frames outside the standard library say whose code it was
        frames = [frame for frame in record["stack"] if not in_stdlib(frame)] or record["stack"]
        stack = "\n    ".join(frames[:8])
        found.append(f"{event} {detail} (pid {record['pid']})\n    {stack}")
    return found


def assert_quiet(log: Path, command: str, home: Path) -> None:
    """Only the one audited process ran (no child started Python), and it did nothing of the kind."""
    found = violations(log)
    assert not found, "\n".join(found)
    started = [record for record in records(log) if record["event"] == "start"]
    assert len(started) == 1 and command in started[0]["argv"], started
    assert {record["pid"] for record in records(log)} == {started[0]["pid"]}
    assert not (home / "intel").exists(), "OpenVINO's telemetry wrote its client id under HOME"


def test_the_hook_reports_lookups_and_children_and_spares_loopback(tmp_path: Path) -> None:
    env, log = audited(tmp_path)
    code = (
        "import socket, subprocess, sys\n"
        "socket.getaddrinfo('127.0.0.1', 9)\n"
        "socket.getaddrinfo('192.0.2.1', 9)\n"  # numeric: no query leaves the machine
        "subprocess.run([sys.executable, '-S', '-c', ''], check=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    found = violations(log)
    assert [line.split(" (pid")[0] for line in found] == [
        "socket.getaddrinfo '192.0.2.1'",
        f"subprocess.Popen ({sys.executable!r}, [{sys.executable!r}, '-S', '-c', ''], None, None)",
    ]


def test_wasinn_run_of_an_openvino_guest(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    env, log = audited(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    xml, weights = stage(work, *tiny_ir)
    data = np.array([[1.0, -2.0, 0.25, 3.0]], dtype=np.float32)
    data.tofile(work / "in.bin")
    result = nn_run(
        work,
        *("--model", xml, "--model", weights, "--input", "0:f32:1x4:in.bin", "--output", "0:out.bin"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    (expected,) = native_infer(tiny_ir[0], [data])
    np.testing.assert_array_equal(np.fromfile(work / "out.bin", np.float32), expected.reshape(-1))
    assert_quiet(log, "run", tmp_path / "home")


def test_wasinn_serve_with_an_openvino_route(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    env, log = audited(tmp_path)
    xml, weights = tiny_ir
    process, base = start_server(
        *("--nn-preload", f"tiny:openvino:cpu:{xml}:{weights}", f"tiny={guest_wasm('nn-pipe')}"), env=env
    )
    try:
        rng = np.random.default_rng(16)
        for _ in range(3):
            data = rng.standard_normal((1, 4)).astype(np.float32)
            response = httpx.post(f"{base}/tiny?name=tiny&dims=1x4", content=data.tobytes(), timeout=60)
            assert response.status_code == 200, response.text
            (expected,) = native_infer(xml, [data])
            np.testing.assert_array_equal(np.frombuffer(response.content, np.float32), expected.reshape(-1))
        assert "wasinn_requests_total" in httpx.get(f"{base}/metrics", timeout=30).text
        # OpenVINO sent its telemetry from a thread-pool thread: give such threads a moment.
        time.sleep(0.5)
    finally:
        stop_server(process)
    assert_quiet(log, "serve", tmp_path / "home")


def test_wasinn_serve_with_a_ggml_model(tiny_model: Path, tmp_path: Path) -> None:
    env, log = audited(tmp_path)
    process, base = start_server(
        *("--nn-preload", f"tiny:GGML:AUTO:{tiny_model}", "--openai", "tiny"),
        *("--openai-guest", str(guest_wasm("llm-serve"))),
        env=env,
    )
    try:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
        chat = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert chat.status_code == 200, chat.text
        assert chat.json()["usage"]["completion_tokens"] in range(1, 5)
        embedding = httpx.post(f"{base}/v1/embeddings", json={"input": "Hi"}, timeout=120)
        assert embedding.status_code == 200, embedding.text
        vector = np.array(embedding.json()["data"][0]["embedding"])
        assert vector.size > 0 and abs(np.linalg.norm(vector) - 1) < 1e-4
    finally:
        stop_server(process)
    assert_quiet(log, "serve", tmp_path / "home")
