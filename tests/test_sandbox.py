"""A guest reaches only what it was given: its ``--dir`` mappings and its preloaded model names.

Files: through the ``wasi-probe`` guest (``cat PATH`` exits 3 when it cannot open PATH,
``write PATH TEXT`` exits 4) run by ``python -m wasinn run``: ``..`` escapes, absolute host
paths, and symlinks inside a mapped directory that point outside it (relative, absolute,
to a directory, dangling, chained, looping) must all fail without touching the host file.

Models: ``load_by_name`` resolves only ``--nn-preload`` names, never a host path; and a model
sent by the guest must not make a framework read host files on its own (ONNX external data).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Probe, guest_wasm, make_probe, wasinn_cli
from wasinn import Errno, Runtime

SECRET = "host secret: the guest must never see this"


def wasinn_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return wasinn_cli("run", *args, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def probe_wasm() -> Path:
    return guest_wasm("wasi-probe")


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """``tmp/outside/secret`` next to ``tmp/jail`` (mapped as /d), with links out of the jail."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (tmp_path / "secret").write_text(SECRET)
    jail = tmp_path / "jail"
    (jail / "sub").mkdir(parents=True)
    (jail / "inside.txt").write_text("inside")
    (jail / "link-relative").symlink_to("../outside/secret")
    (jail / "link-absolute").symlink_to(outside / "secret")
    (jail / "link-dir").symlink_to(outside)
    (jail / "sub" / "link-up").symlink_to("../../secret")
    (jail / "link-chain").symlink_to("link-relative")
    (jail / "link-loop-a").symlink_to("link-loop-b")
    (jail / "link-loop-b").symlink_to("link-loop-a")
    (jail / "link-inside").symlink_to("inside.txt")
    (jail / "link-proc").symlink_to("/proc/self/environ")
    (jail / "link-dangling").symlink_to("../outside/created-by-guest")
    return jail


def run_probe(probe_wasm: Path, jail: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return wasinn_run("--dir", f"/d:{jail}", str(probe_wasm), *args)


READ_ESCAPES = [
    "/d/../secret",
    "/d/../outside/secret",
    "/d/sub/../../secret",
    "/d/./../secret",
    "/d/sub/../../../../../../etc/passwd",
    "/d/..",
    "../secret",
    "/etc/passwd",
    "/proc/self/environ",
    "/d/link-relative",
    "/d/link-absolute",
    "/d/link-dir/secret",
    "/d/sub/link-up",
    "/d/link-chain",
    "/d/link-loop-a",
    "/d/link-proc",
]


@pytest.mark.parametrize("path", READ_ESCAPES)
def test_reads_outside_the_mapping_fail(probe_wasm: Path, jail: Path, path: str) -> None:
    result = run_probe(probe_wasm, jail, "cat", path)
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "secret" not in result.stdout


def test_absolute_host_path_of_a_real_file_fails(probe_wasm: Path, jail: Path) -> None:
    secret = jail.parent / "outside" / "secret"
    for path in (str(secret), str(jail / "inside.txt")):  # host spellings mean nothing in the guest
        result = run_probe(probe_wasm, jail, "cat", path)
        assert (result.returncode, result.stdout) == (3, ""), path


def test_links_that_stay_inside_work(probe_wasm: Path, jail: Path) -> None:
    """The control case: a relative link to a file inside the mapping is followed."""
    for path in ("/d/link-inside", "/d/sub/../inside.txt", "/d/inside.txt"):
        result = run_probe(probe_wasm, jail, "cat", path)
        assert (result.returncode, result.stdout) == (0, "inside"), (path, result.stderr)


WRITE_ESCAPES = {
    "/d/../escaped.txt": "escaped.txt",
    "/d/sub/../../escaped.txt": "escaped.txt",
    "/d/link-dir/escaped.txt": "outside/escaped.txt",
    "/d/link-dangling": "outside/created-by-guest",
    "/d/link-relative": "outside/secret",
    "/d/link-absolute": "outside/secret",
}


@pytest.mark.parametrize("path", WRITE_ESCAPES)
def test_writes_outside_the_mapping_fail(probe_wasm: Path, jail: Path, path: str) -> None:
    host = jail.parent / WRITE_ESCAPES[path]
    before = host.read_text() if host.exists() else None
    result = run_probe(probe_wasm, jail, "write", path, "written by the guest")
    assert result.returncode == 4, (result.returncode, result.stderr)
    after = host.read_text() if host.exists() else None
    assert after == before, f"the guest changed {host}"
    assert (jail.parent / "outside" / "secret").read_text() == SECRET


def test_no_dir_means_no_files(probe_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text(SECRET)
    for path in ("here.txt", str(tmp_path / "here.txt"), "/", "/etc/passwd"):
        result = wasinn_run(str(probe_wasm), "cat", path, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (3, ""), path
    result = wasinn_run(str(probe_wasm), "write", "new.txt", "x", cwd=tmp_path)
    assert result.returncode == 4
    assert not (tmp_path / "new.txt").exists()


# --------------------------------------------------------------------------- named models


@pytest.fixture
def preloaded_probe(tiny_ir: tuple[Path, Path]) -> Iterator[Probe]:
    xml, weights = tiny_ir
    probe = make_probe(Runtime(cache=False, preload=[f"m:openvino:cpu:{xml}:{weights}"]), pages=2)
    yield probe
    probe.instance.close()


def test_load_by_name_never_resolves_host_paths(preloaded_probe: Probe, tiny_ir: tuple[Path, Path]) -> None:
    xml, weights = tiny_ir
    names = [
        "/etc/passwd",
        str(xml),  # an existing model file on the host
        f"{xml}:{weights}",
        f"m:openvino:cpu:{xml}:{weights}",  # a whole --nn-preload spelling
        "preload:" + str(xml),
        "./m",
        "m/",
        "M",
    ]
    assert os.path.exists("/etc/passwd") and xml.exists()
    for name in names:
        pointer, length = preloaded_probe.string(name)
        assert preloaded_probe.call("load_by_name", pointer, length, 64) == Errno.NOT_FOUND, name
    pointer, length = preloaded_probe.string("m")
    assert preloaded_probe.call("load_by_name", pointer, length, 64) == Errno.SUCCESS
    assert preloaded_probe.instance.nn.live_graphs == 1


@pytest.mark.usefixtures("openvino_available")
def test_nn_run_name_equal_to_a_host_path_is_not_found(tiny_ir: tuple[Path, Path], tmp_path: Path) -> None:
    xml, weights = tiny_ir
    for name in ("/etc/passwd", str(xml)):
        result = wasinn_run(
            f"--nn-preload=m:openvino:cpu:{xml}:{weights}",
            str(guest_wasm("nn-run")),
            "--name",
            name,
            cwd=tmp_path,
        )
        assert result.returncode == Errno.NOT_FOUND, result.stderr
        assert f"no preloaded model named {name!r} (preloaded: m)" in result.stderr


# --------------------------------------------------------------------------- models that point at host files


def onnx_returning(length: int, *, location: str | None = None, inline: bytes = b"") -> bytes:
    """An ONNX model whose only output is a u8 initializer: inline, or in an external file."""
    from onnx import TensorProto, helper

    weights = TensorProto()
    weights.name = "w"
    weights.data_type = TensorProto.UINT8
    weights.dims.extend([length])
    if location is None:
        weights.raw_data = inline
    else:
        weights.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
            entry = weights.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "external",
        [],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [length])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def read_through_model(builders: list[bytes], encoding: int, size: int) -> bytes | None:
    """Load, compute and fetch output 0 as a guest would; None when any step refuses."""
    probe = make_probe(Runtime(cache=False), pages=2)
    try:
        array, count = probe.builders(builders)
        if probe.call("load", array, count, encoding, 0, 64) != Errno.SUCCESS:
            return None
        if probe.call("init_execution_context", probe.u32(64), 68) != Errno.SUCCESS:
            return None
        context = probe.u32(68)
        if probe.call("compute", context) != Errno.SUCCESS:
            return None
        buffer = probe.put(b"\0" * size)
        if probe.call("get_output", context, 0, buffer, size, 72) != Errno.SUCCESS:
            return None
        return probe.read(buffer, size)
    finally:
        probe.instance.close()


def external_data_cases() -> list[object]:
    """The encodings that accept ONNX bytes: OpenVINO (its ONNX frontend), ONNX, autodetect."""
    from wasinn.abi._wasmedge import CODE_OF_ENCODING
    from wasinn.backends import backends

    registered = {CODE_OF_ENCODING[info.encoding]: info.installed for info in backends()}
    onnx_ok = importlib.util.find_spec("onnx") is not None
    cases = []
    for encoding, name, module in (
        (0, "openvino", "openvino"),
        (1, "onnx", "onnxruntime"),
        (5, "autodetect", ""),
    ):
        usable = (
            onnx_ok and registered.get(encoding, False) and (not module or importlib.util.find_spec(module))
        )
        mark = pytest.mark.skipif(not usable, reason=f"needs onnx and the {name} backend")
        cases.append(pytest.param(encoding, id=name, marks=mark))
    return cases


@pytest.mark.parametrize("encoding", external_data_cases())
def test_self_contained_onnx_model_output_comes_back(encoding: int) -> None:
    """The control for the two tests below: the same path, weights inside the model.

    The openvino encoding takes OpenVINO IR only (its ONNX frontend is how external data
    got in), so there even a self-contained ONNX model is refused.
    """
    payload = b"weights inside the model bytes!!"
    model = onnx_returning(len(payload), inline=payload)
    expected = None if encoding == 0 else payload
    assert read_through_model([model, b""] if encoding == 0 else [model], encoding, len(payload)) == expected


@pytest.mark.parametrize("encoding", external_data_cases())
def test_model_external_data_cannot_read_host_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: int
) -> None:
    secret = SECRET.encode()
    (tmp_path / "secret.bin").write_bytes(secret)
    monkeypatch.chdir(tmp_path)  # the host's working directory, which no --dir maps
    model = onnx_returning(len(secret), location="secret.bin")
    builders = [model, b""] if encoding == 0 else [model]
    leaked = read_through_model(builders, encoding, len(secret))
    assert leaked is None, f"the guest read {leaked!r} from the host"


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs onnx to build the model")
@pytest.mark.usefixtures("openvino_available")
def test_nn_run_external_data_stays_out_of_the_host_cwd(tmp_path: Path) -> None:
    cwd, sandbox = tmp_path / "cwd", tmp_path / "sandbox"
    cwd.mkdir()
    sandbox.mkdir()
    secret = SECRET.encode()
    (cwd / "secret.bin").write_bytes(secret)
    (sandbox / "model.onnx").write_bytes(onnx_returning(len(secret), location="secret.bin"))
    (sandbox / "empty.bin").write_bytes(b"")
    result = wasinn_run(
        "--dir",
        f"/sandbox:{sandbox}",
        str(guest_wasm("nn-run")),
        "--model",
        "/sandbox/model.onnx",
        "--model",
        "/sandbox/empty.bin",
        "--output",
        "0:/sandbox/out.bin",
        cwd=cwd,
    )
    out = sandbox / "out.bin"
    leaked = out.read_bytes() if out.exists() else b""
    assert secret not in leaked, f"nn-run (exit {result.returncode}) copied the host's secret.bin"
