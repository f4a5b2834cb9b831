"""The warm host (``wasinn host``, ``WASINN_WARM``): a warm ``wasinn run`` must answer exactly as
a cold one — stdout, stderr, exit code — while the guest uses the client's own stdio.

One daemon (2 workers) serves the module, in a private runtime directory. Cold runs
(``WASINN_WARM=0``) are the reference; ``runs`` in ``wasinn host status`` proves a run was warm.
``WASINN_WARM_RSS_RUNS`` sets how many runs the memory test makes (default 1000).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import wasmtime

from conftest import guest_wasm
from wasinn.warm import protocol

SPIN_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'
RSS_RUNS = int(os.environ.get("WASINN_WARM_RSS_RUNS", "1000"))


def _env(directory: Path, warm: str | None = None) -> dict[str, str]:
    # The wasinn under test, wherever the clients' cwd is (PYTHONPATH may be relative).
    source = str(Path(protocol.__file__).resolve().parents[2])
    env = {**os.environ, protocol.DIR_ENV: str(directory), "PYTHONPATH": source}
    env.pop(protocol.WARM_ENV, None)
    if warm is not None:
        env[protocol.WARM_ENV] = warm
    return env


def wasinn(
    directory: Path, *args: str, warm: str | None = None, **options: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "wasinn", *args],
        env=_env(directory, warm),
        capture_output=True,
        text=True,
        timeout=120,
        **options,
    )


def client(directory: Path, *args: str, **options: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "wasinn", *args],
        env=_env(directory),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )


def status(directory: Path) -> dict[str, int]:
    answer = protocol.request({"op": "status"}, protocol.socket_path(str(directory)))
    return {key: value for key, value in answer.items() if isinstance(value, int)}


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _answers(path: str) -> bool:
    try:
        return "pid" in protocol.request({"op": "ping"}, path)
    except (OSError, protocol.ProtocolError):
        return False


def start(directory: Path) -> None:
    started = wasinn(directory, "host", "start", "--workers", "2")
    assert started.returncode == 0, started.stderr + started.stdout


def stop(directory: Path) -> None:
    wasinn(directory, "host", "stop")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("host") / "run"
    start(directory)
    yield directory
    stop(directory)
    assert not os.path.exists(protocol.socket_path(str(directory)))


@pytest.fixture(scope="module")
def probe() -> Path:
    return guest_wasm("wasi-probe")


@pytest.fixture(scope="module")
def spin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spin") / "spin.wasm"
    path.write_bytes(wasmtime.wat2wasm(SPIN_WAT))
    return path


def test_runtime_directory_and_socket_are_private(host: Path) -> None:
    assert (os.stat(host).st_mode & 0o777, os.stat(protocol.socket_path(str(host))).st_mode & 0o777) == (
        0o700,
        0o600,
    )


def test_output_errors_and_exit_codes_equal_a_cold_run(host: Path, probe: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host")
    cases = [  # each is run cold too: ~2 s apiece on a busy machine, so few
        ["run", "--dir", ".:.", "--env", "A=b=c", str(probe), "cat", "in.txt"],
        ["run", str(probe), "exit", "3"],
        ["run", str(probe), "trap"],  # 134 and the trap's one line
        ["run", "--gas-limit", "1000", str(probe), "args"],  # 124
        ["run", "--dir", "nowhere", str(probe), "args"],  # usage error, one line
        ["run", "--time-limit", "x", str(probe)],  # click's usage line
        # the host's warning for the failed call ("wasinn: load_by_name: ..."), then the guest's
        ["run", "--dir", ".:.", str(guest_wasm("nn-run")), "--name", "missing", "--input", "0:f32:1,2:x.bin"],
    ]
    (tmp_path / "x.bin").write_bytes(bytes(8))
    before = status(host)["runs"]
    for args in cases:
        cold = wasinn(host, *args, warm="0", cwd=tmp_path)
        warm = wasinn(host, *args, cwd=tmp_path)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), (
            args
        )
    assert status(host)["runs"] - before == len(cases)  # every one ran warm
    assert [wasinn(host, *c, cwd=tmp_path).returncode for c in cases[1:4]] == [3, 134, 124]
    warm = wasinn(host, "run", "--env", "GREETING=hi=there", str(probe), "env", "GREETING")
    assert (warm.returncode, warm.stdout) == (0, "hi=there\n")
    warm = wasinn(host, "run", str(probe), "args", "x y", "--dir")
    assert (warm.returncode, warm.stdout) == (0, f"0={probe}\n1=args\n2=x y\n3=--dir\n")
    assert wasinn(host, "run", str(probe), "exit", "200").returncode == 200


def test_a_model_runs_warm_with_the_cold_output_and_is_loaded_once(
    host: Path, conv_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    import numpy as np

    xml, bin_ = conv_ir
    for file in (xml, bin_):
        (tmp_path / file.name).write_bytes(file.read_bytes())
    image = np.random.default_rng(3).standard_normal((1, 3, 8, 12)).astype(np.float32)
    (tmp_path / "x.bin").write_bytes(image.tobytes())
    args = ["run", "--dir", ".:.", str(guest_wasm("nn-run")), "--encoding", "openvino"]
    args += ["--model", xml.name, "--model", bin_.name, "--input", "0:f32:1,3,8,12:x.bin"]
    args += ["--output", "0:out.bin"]
    cold = wasinn(host, *args, warm="0", cwd=tmp_path)
    assert cold.returncode == 0, cold.stderr
    expected = (tmp_path / "out.bin").read_bytes()
    (tmp_path / "out.bin").unlink()
    hits = status(host)["cache_hits"]
    for _ in range(2):
        warm = wasinn(host, *args, cwd=tmp_path)
        assert (warm.returncode, warm.stderr) == (0, "")
        assert (tmp_path / "out.bin").read_bytes() == expected
    assert status(host)["cache_hits"] >= hits + 1  # the second run reused the loaded graph


def test_stdin_streams_and_megabytes_of_stdout_pass_through_pipes(host: Path, probe: Path) -> None:
    data = os.urandom(6 << 20)  # more than a pipe holds: the guest reads while the client writes
    runs = status(host)["runs"]
    warm = subprocess.run(
        [sys.executable, "-m", "wasinn", "run", str(probe), "stdin"],
        env=_env(host),
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert (warm.returncode, warm.stderr, len(warm.stdout)) == (0, b"", len(data))
    assert warm.stdout == data
    assert status(host)["runs"] == runs + 1


def test_stdout_appends_to_the_callers_file_at_its_offset(host: Path, probe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("before\n")
    with open(out, "a") as file:
        result = subprocess.run(
            [sys.executable, "-m", "wasinn", "run", str(probe), "args"],
            env=_env(host),
            stdout=file,
            timeout=120,
        )
    assert result.returncode == 0
    assert out.read_text() == f"before\n0={probe}\n1=args\n"


@pytest.mark.parametrize(
    ("sent", "code", "line"),
    [(signal.SIGINT, 130, b"wasinn: error: interrupted\n"), (signal.SIGTERM, -signal.SIGTERM, b"")],
)
def test_a_signal_to_the_client_stops_the_guest(
    host: Path, spin: Path, sent: int, code: int, line: bytes
) -> None:
    running = client(host, "run", str(spin))
    wait_for(lambda: status(host)["active"] == 1)
    running.send_signal(sent)
    _, stderr = running.communicate(timeout=30)
    assert (running.returncode, stderr) == (code, line)
    wait_for(lambda: status(host)["active"] == 0)


def test_clients_run_in_parallel_and_a_limit_stops_only_its_own_guest(
    host: Path, spin: Path, probe: Path
) -> None:
    limited = client(host, "run", "--time-limit", "60000", str(spin))
    wait_for(lambda: status(host)["active"] == 1)
    with ThreadPoolExecutor(4) as pool:  # two workers: one spins, the other serves these in turn
        results = list(pool.map(lambda i: wasinn(host, "run", str(probe), "args", str(i)), range(4)))
    for i, result in enumerate(results):
        assert (result.returncode, result.stdout) == (0, f"0={probe}\n1=args\n2={i}\n")
    assert limited.poll() is None  # still spinning: the others did not wait for it
    second = client(host, "run", "--time-limit", "300", str(spin))
    _, stderr = second.communicate(timeout=60)
    assert (second.returncode, stderr) == (124, b"wasinn: error: time limit of 300 ms exceeded\n")
    assert limited.poll() is None  # the other guest's limit did not touch this one
    limited.send_signal(signal.SIGINT)
    assert limited.wait(timeout=30) == 130


def test_the_client_does_not_import_the_heavy_modules(host: Path, probe: Path) -> None:
    result = wasinn(host, "run", str(probe), "args")
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wasinn", "run", str(probe), "args"],
        env=_env(host),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (traced.returncode, traced.stdout) == (0, result.stdout)
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "|" in line}
    assert "wasinn.warm.client" in imported
    assert not imported & {
        "numpy",
        "wasmtime",
        "click",
        "wasinn.runtime",
        "wasinn.cli",
        "typing",
        "json",
        "socket",
    }


def test_the_daemon_memory_is_stable_over_many_runs(host: Path, probe: Path) -> None:
    def run_once() -> dict[str, object]:
        sock = protocol.connect(protocol.socket_path(str(host)))
        try:
            with open(os.devnull, "r+b") as null:
                fds = [null.fileno()] * 3
                request = {
                    "op": "run",
                    "argv": [str(probe), "args", "x"],
                    "cwd": "/",
                    "build": protocol.build_id(),
                }
                protocol.send(sock, {**request, "env": protocol.host_env(os.environ)}, fds)
                assert protocol.receive(sock)[0] == {"started": True}
                answer, _ = protocol.receive(sock)
        finally:
            sock.close()
        assert answer == {"exit": 0, "error": None}
        return answer

    for _ in range(100):
        run_once()
    before = status(host)["rss_kib"]
    for _ in range(RSS_RUNS):
        run_once()
    after = status(host)["rss_kib"]
    assert after - before < 8 * 1024, (before, after)  # KiB: no per-run leak


def test_peer_credentials_refuse_another_user() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert protocol.peer_uid(left) == os.getuid()
        assert protocol.peer_allowed(left)
        assert not protocol.peer_allowed(left, uid=os.getuid() + 1)
    if os.getuid() != 0:
        return
    from wasinn.warm.daemon import Daemon

    # A daemon in this process, under /tmp (which anyone may traverse), with its directory
    # and socket opened to everyone, so that only SO_PEERCRED stands in the other uid's way.
    directory = Path(tempfile.mkdtemp(prefix="wasinn-peer-", dir="/tmp"))
    daemon = Daemon(directory, workers=1)
    server = threading.Thread(target=daemon.serve, daemon=True)
    server.start()
    path = protocol.socket_path(str(directory))
    wait_for(lambda: _answers(path))
    os.chmod(directory, 0o711)
    os.chmod(path, 0o666)
    reader, writer = os.pipe()
    try:
        child = os.fork()  # a client of another uid: setuid in a forked child, as root may
        if child == 0:
            try:
                os.setuid(65534)
                answer: object = protocol.request({"op": "status"}, path)
            except BaseException as err:
                answer = f"{type(err).__name__}: {err}"
            finally:
                os.write(writer, json.dumps(answer).encode())
                os._exit(0)
        os.close(writer)
        os.waitpid(child, 0)
        reply = os.read(reader, 65536)
        mine = protocol.request({"op": "ping"}, path)
    finally:
        os.close(reader)
        daemon.stop()
        server.join(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    assert json.loads(reply) == {"refused": "the warm host serves only its own user"}
    assert mine == {"pid": os.getpid()}


def test_a_private_directory_is_required(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(protocol.UnsafeDirectory, match="open to other users"):
        protocol.ensure_runtime_dir(str(open_dir))
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(protocol.UnsafeDirectory, match="not a directory owned by"):
            protocol.ensure_runtime_dir(str(theirs))


def test_a_stale_socket_runs_cold_then_a_new_host_replaces_it(probe: Path, tmp_path: Path) -> None:
    directory = tmp_path / "stale"
    directory.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(protocol.socket_path(str(directory)))
    dead.close()  # a socket file nobody listens on: its daemon died
    cold = wasinn(directory, "run", str(probe), "args")
    assert (cold.returncode, cold.stdout, cold.stderr) == (0, f"0={probe}\n1=args\n", "")
    try:
        warm = wasinn(directory, "run", "--warm", str(probe), "args")  # starts a host, which replaces it
        assert (warm.returncode, warm.stdout, warm.stderr) == (0, f"0={probe}\n1=args\n", "")
        assert status(directory)["runs"] == 1
    finally:
        stop(directory)


def test_a_host_of_another_version_is_bypassed(probe: Path, tmp_path: Path) -> None:
    """A host that cannot read the request (another wire format) never starts the guest: cold."""
    directory = tmp_path / "other"
    directory.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(protocol.socket_path(str(directory)))
    listener.listen()

    def answer_in_another_format() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b'{"exit": 0}\n')

    threading.Thread(target=answer_in_another_format, daemon=True).start()
    try:
        result = wasinn(directory, "run", str(probe), "args")
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    assert (result.returncode, result.stdout, result.stderr) == (0, f"0={probe}\n1=args\n", "")


def test_a_host_that_dies_mid_run_is_an_error_not_a_hang(spin: Path, tmp_path: Path) -> None:
    directory = tmp_path / "dies"
    start(directory)
    try:
        pid = status(directory)["pid"]
        running = client(directory, "run", str(spin))
        wait_for(lambda: status(directory)["active"] == 1)
        os.kill(pid, signal.SIGKILL)
        _, stderr = running.communicate(timeout=30)
        assert (running.returncode, stderr) == (70, b"wasinn: error: the warm host stopped during the run\n")
    finally:
        stop(directory)


POOLED_ENGINE = """
import wasmtime
from wasinn.host import pool_instances, shared_engine

pool_instances(2, 1 << 20, 2)
engine = shared_engine()
module = wasmtime.Module(engine, '''(module (memory (export "m") 1)
  (func (export "peek") (result i32) (i32.load (i32.const 64)))
  (func (export "poke") (i32.store (i32.const 64) (i32.const 42))))''')

def instance():
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1 << 30)
    made = wasmtime.Instance(store, module, [])
    return store, made.exports(store)

store, first = instance()
first["poke"](store)
assert first["peek"](store) == 42
del store, first
store, second = instance()  # the slot the first used, its kept page zeroed
print("after reuse", second["peek"](store))
third = instance()
try:
    instance()
    print("no pool")
except wasmtime.WasmtimeError:
    print("pool full")
"""


def test_the_warm_hosts_engine_pools_instances_and_zeroes_kept_memory() -> None:
    """The warm host makes its engine with wasmtime's pooling allocator (pool_instances):
    memory kept mapped between runs reads as zeros to the next guest, and the pool's bound
    is real (the daemon sizes it at 16 instances a worker)."""
    done = subprocess.run([sys.executable, "-c", POOLED_ENGINE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["after reuse 0", "pool full"]
