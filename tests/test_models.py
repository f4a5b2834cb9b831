"""Model search path, catalogue and verified downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import missing, shared_data_dir
from wasinn.cli.models import models_command
from wasinn.tools import models
from wasinn.tools.models import (
    CATALOGUE,
    ChecksumError,
    DownloadError,
    ModelFile,
    ModelNotFoundError,
    ModelSpec,
    download,
    ensure_model,
    find_file,
    find_model,
    search_path,
    user_cache_dir,
)

TINY_ID = "tiny-test-model"


# --------------------------------------------------------------------------- fixtures


@dataclass
class FileServer:
    root: Path
    url: str
    requests: Counter[str]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: Counter[str]

    def do_GET(self) -> None:
        self.requests[self.path] += 1
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    served = tmp_path / "served"
    root = served / "models"  # a path prefix, as real mirrors have
    root.mkdir(parents=True)
    requests: Counter[str] = Counter()
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=served))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FileServer(root, f"http://127.0.0.1:{server.server_port}/models", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache and no search path or mirror from the caller's shell."""
    for name in (models.MODELS_ENV, models.MIRROR_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(models.CACHE_ENV, str(cache))
    return cache


def _catalogued(name: str, content: bytes) -> ModelFile:
    digest = hashlib.sha256(content).hexdigest()
    return ModelFile(name, f"https://models.invalid/tiny/{name}", digest, len(content))


@pytest.fixture
def tiny_model(file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """A test-only catalogue entry whose files (one bigger than a read chunk) sit on the server."""
    contents = {
        "tiny.xml": b"<net name='tiny'/>\n",
        "tiny.bin": bytes(range(256)) * 1000,
        "tiny.jpg": b"\xff\xd8 not really a jpeg",
    }
    for name, content in contents.items():
        (file_server.root / name).write_bytes(content)
    spec = ModelSpec(
        id=TINY_ID,
        files=(_catalogued("tiny.xml", contents["tiny.xml"]), _catalogued("tiny.bin", contents["tiny.bin"])),
        description="test-only model",
        samples=(_catalogued("tiny.jpg", contents["tiny.jpg"]),),
    )
    monkeypatch.setitem(CATALOGUE, TINY_ID, spec)
    return contents


def _shared_model_dir(model_id: str) -> Path:
    directory = shared_data_dir() / model_id
    if not directory.is_dir():
        missing(f"{directory} is missing: the real model files come from the shared data set")
    return directory


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


# --------------------------------------------------------------------------- downloads


def test_download_places_verified_files(tiny_model: dict[str, bytes], file_server: FileServer) -> None:
    directory = download(TINY_ID, base_url=file_server.url, progress=False)

    assert directory == user_cache_dir() / "models" / TINY_ID
    for name, content in tiny_model.items():
        assert (directory / name).read_bytes() == content
    assert _leftovers(directory) == []
    assert find_model(TINY_ID) == directory


def test_second_download_does_not_refetch(tiny_model: dict[str, bytes], file_server: FileServer) -> None:
    download(TINY_ID, base_url=file_server.url, progress=False)
    download(TINY_ID, base_url=file_server.url, progress=False)

    assert file_server.requests == {f"/models/{name}": 1 for name in tiny_model}


def test_wrong_local_copy_is_replaced(tiny_model: dict[str, bytes], file_server: FileServer) -> None:
    directory = user_cache_dir() / "models" / TINY_ID
    directory.mkdir(parents=True)
    (directory / "tiny.bin").write_bytes(b"stale")

    download(TINY_ID, base_url=file_server.url, progress=False)

    assert (directory / "tiny.bin").read_bytes() == tiny_model["tiny.bin"]


def test_corrupted_file_raises_checksum_error_and_leaves_nothing(
    tiny_model: dict[str, bytes], file_server: FileServer, tmp_path: Path
) -> None:
    corrupted = bytearray(tiny_model["tiny.bin"])
    corrupted[1234] ^= 0xFF
    (file_server.root / "tiny.bin").write_bytes(corrupted)
    dest = tmp_path / "dest"

    with pytest.raises(ChecksumError) as raised:
        download(TINY_ID, dest=dest, base_url=file_server.url, progress=False)

    expected = hashlib.sha256(tiny_model["tiny.bin"]).hexdigest()
    actual = hashlib.sha256(corrupted).hexdigest()
    error = raised.value
    assert "tiny.bin" in str(error) and expected in str(error) and actual in str(error)
    assert (error.file_name, error.expected, error.actual) == ("tiny.bin", expected, actual)
    assert not (dest / "tiny.bin").exists()
    assert _leftovers(dest) == []


def test_oversized_file_is_rejected(tiny_model: dict[str, bytes], file_server: FileServer) -> None:
    (file_server.root / "tiny.xml").write_bytes(b"x" * 500_000)

    with pytest.raises(ChecksumError, match="over 19 bytes"):
        download(TINY_ID, base_url=file_server.url, progress=False)


def test_missing_file_raises_download_error(tiny_model: dict[str, bytes], file_server: FileServer) -> None:
    (file_server.root / "tiny.bin").unlink()

    with pytest.raises(DownloadError) as raised:
        download(TINY_ID, base_url=file_server.url, progress=False)

    assert raised.value.url == f"{file_server.url}/tiny.bin"
    assert "404" in str(raised.value) and raised.value.url in str(raised.value)
    assert _leftovers(user_cache_dir() / "models" / TINY_ID) == []


def test_unreachable_server_raises_download_error(tiny_model: dict[str, bytes]) -> None:
    with socket.socket() as probe:  # a port that was just free is very likely closed now
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(DownloadError, match="refused"):
        download(TINY_ID, base_url=f"http://127.0.0.1:{closed_port}", progress=False)


def test_mirror_variable_redirects_downloads(
    tiny_model: dict[str, bytes], file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.MIRROR_ENV, file_server.url + "/")

    directory = ensure_model(TINY_ID, progress=False)

    assert (directory / "tiny.xml").read_bytes() == tiny_model["tiny.xml"]


def test_progress_bar_drawn_only_on_a_terminal(
    tiny_model: dict[str, bytes], file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    download(TINY_ID, base_url=file_server.url, progress=True)

    assert "tiny.bin" in terminal.getvalue()


def test_unknown_model_is_reported() -> None:
    with pytest.raises(ModelNotFoundError, match="known models: .*road-segmentation-adas-0001"):
        download("no-such-model", progress=False)


def test_real_model_downloads_with_catalogued_checksums(file_server: FileServer) -> None:
    model_id = "road-segmentation-adas-0001"
    for model_file in (*CATALOGUE[model_id].files, *CATALOGUE[model_id].samples):
        shutil.copy(_shared_model_dir(model_id) / model_file.name, file_server.root)

    directory = download(model_id, base_url=file_server.url, progress=False)

    assert find_model(model_id) == directory


@pytest.mark.parametrize("model_id", sorted(CATALOGUE))
def test_catalogue_matches_the_shared_files(model_id: str) -> None:
    directory = _shared_model_dir(model_id)
    for model_file in (*CATALOGUE[model_id].files, *CATALOGUE[model_id].samples):
        content = (directory / model_file.name).read_bytes()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (model_file.size, model_file.sha256)


# --------------------------------------------------------------------------- search path


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(models.CACHE_ENV)
    assert user_cache_dir() == tmp_path / "xdg" / "wasinn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "wasinn"


def test_search_path_lists_models_entries_before_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(models.MODELS_ENV, os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))

    assert search_path() == [tmp_path / "a", tmp_path / "b", tmp_path / "cache" / "models"]


def _lay_out(directory: Path, spec: ModelSpec) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for model_file in spec.files:
        (directory / model_file.name).write_bytes(b"")
    return directory


def test_find_model_in_both_layouts(
    tiny_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = CATALOGUE[TINY_ID]
    nested = _lay_out(tmp_path / "shared" / TINY_ID, spec)
    flat = _lay_out(tmp_path / "flat", spec)

    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path / "shared"))
    assert find_model(TINY_ID) == nested
    monkeypatch.setenv(models.MODELS_ENV, str(flat))
    assert find_model(TINY_ID) == flat


def test_incomplete_directory_is_not_a_model(
    tiny_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "tiny.xml").write_bytes(b"")
    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path / "partial"))

    assert find_model(TINY_ID) is None
    advice = f"set WASINN_MODELS or run `wasinn models download {TINY_ID}`"
    with pytest.raises(ModelNotFoundError, match=advice):
        ensure_model(TINY_ID, download_missing=False)


def test_models_entries_win_over_the_cache(
    tiny_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = CATALOGUE[TINY_ID]
    _lay_out(user_cache_dir() / "models" / TINY_ID, spec)
    assert find_model(TINY_ID) == user_cache_dir() / "models" / TINY_ID

    first = _lay_out(tmp_path / "first" / TINY_ID, spec)
    _lay_out(tmp_path / "second" / TINY_ID, spec)
    entries = [str(tmp_path / "first"), str(tmp_path / "second")]
    monkeypatch.setenv(models.MODELS_ENV, os.pathsep.join(entries))
    assert find_model(TINY_ID) == first
    assert ensure_model(TINY_ID, download_missing=False) == first


def test_find_model_with_the_shared_data_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _shared_model_dir("road-segmentation-adas-0001")
    monkeypatch.setenv(models.MODELS_ENV, str(shared_data_dir()))

    assert find_model("road-segmentation-adas-0001") == directory
    assert find_file("empty_road_mapillary.jpg") == directory / "empty_road_mapillary.jpg"


def test_find_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "image.jpg").write_bytes(b"")
    (tmp_path / "nested" / "some-model").mkdir(parents=True)
    (tmp_path / "nested" / "some-model" / "other.jpg").write_bytes(b"")
    entries = [tmp_path / "missing", tmp_path / "top", tmp_path / "nested"]
    monkeypatch.setenv(models.MODELS_ENV, os.pathsep.join(str(entry) for entry in entries))

    assert find_file("image.jpg") == tmp_path / "top" / "image.jpg"
    assert find_file("other.jpg") == tmp_path / "nested" / "some-model" / "other.jpg"
    assert find_file("absent.jpg") is None


# --------------------------------------------------------------------------- command line


def test_cli_list_says_where_each_model_is(
    tiny_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = _lay_out(tmp_path / "models" / TINY_ID, CATALOGUE[TINY_ID])
    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path / "models"))

    result = CliRunner().invoke(models_command, ["list"])

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert str(found) in lines[TINY_ID]
    assert "not downloaded" in lines["birds-v1"]


def test_cli_path(tiny_model: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(models_command, ["path", TINY_ID])
    assert missing.exit_code == 1
    assert "wasinn models download" in missing.output

    found = _lay_out(tmp_path / TINY_ID, CATALOGUE[TINY_ID])
    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path))
    result = runner.invoke(models_command, ["path", TINY_ID])
    assert (result.exit_code, result.output) == (0, f"{found}\n")

    unknown = runner.invoke(models_command, ["path", "no-such-model"])
    assert unknown.exit_code == 2  # the person's mistake
    assert "unknown model" in unknown.output


def test_cli_download(
    tiny_model: dict[str, bytes], file_server: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(models.MIRROR_ENV, file_server.url)
    dest = tmp_path / "chosen"

    result = CliRunner().invoke(models_command, ["download", TINY_ID, "--dest", str(dest)])

    assert (result.exit_code, result.output) == (0, f"{dest}\n")
    assert (dest / "tiny.bin").read_bytes() == tiny_model["tiny.bin"]

    (file_server.root / "tiny.xml").unlink()
    failed = CliRunner().invoke(models_command, ["download", TINY_ID, "--dest", str(tmp_path / "other")])
    assert failed.exit_code == 1
    assert "HTTP 404" in failed.output
