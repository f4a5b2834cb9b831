"""Known models: where to look for them on disk and how to download them with verified checksums.

A model is a set of files (an OpenVINO ``.xml`` + ``.bin`` pair, one ``.tflite``...). The
search path is ``$WASINN_MODELS`` followed by the user cache; :func:`download` fills the cache
and never leaves a partial or unverified file where :func:`find_model` would see it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from wasinn.core import ModelError
from wasinn.core._paths import CACHE_ENV as CACHE_ENV
from wasinn.core._paths import user_cache_dir

MODELS_ENV = "WASINN_MODELS"
MIRROR_ENV = "WASINN_MODEL_MIRROR"

_CHUNK_BYTES = 1 << 16
_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- errors


class ModelNotFoundError(ModelError):
    """The model is unknown, or none of the search-path directories holds all of its files."""


class DownloadError(ModelError):
    """A file could not be fetched (network failure, HTTP error)."""

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


class ChecksumError(ModelError):
    """A fetched file is not the catalogued one: its size or sha256 differs."""

    def __init__(self, message: str, *, file_name: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.file_name = file_name
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class ModelFile:
    name: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    id: str
    files: tuple[ModelFile, ...]
    description: str
    # Sample inputs are downloaded with the model but not required for it to count as found.
    samples: tuple[ModelFile, ...] = ()


# Both examples keep their model and input files in the WasmEdge-WASINN-examples repository,
# which is where the checksums below were taken from (see docs/models.md for the sources).
_WASINN_EXAMPLES = "https://github.com/second-state/WasmEdge-WASINN-examples/raw/master"
_ROAD_SEGMENTATION = f"{_WASINN_EXAMPLES}/openvino-road-segmentation-adas"
_BIRDS = f"{_WASINN_EXAMPLES}/tflite-birds_v1-image"

CATALOGUE: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="road-segmentation-adas-0001",
            description="OpenVINO IR (FP32, Open Model Zoo 2021.4): road, curb and mark segmentation",
            files=(
                ModelFile(
                    name="road-segmentation-adas-0001.xml",
                    url=f"{_ROAD_SEGMENTATION}/model/road-segmentation-adas-0001.xml",
                    sha256="700f0691a10ef665e7af0c19823f521a58022cd03d55080fb884049709f4ee4a",
                    size=401509,
                ),
                ModelFile(
                    name="road-segmentation-adas-0001.bin",
                    url=f"{_ROAD_SEGMENTATION}/model/road-segmentation-adas-0001.bin",
                    sha256="3c1847f6f62ed91b8ca2d94b4242b833bfcfb9be6dfdb007e83d13084fb15e0b",
                    size=737192,
                ),
            ),
            samples=(
                ModelFile(
                    name="empty_road_mapillary.jpg",
                    url=f"{_ROAD_SEGMENTATION}/image/empty_road_mapillary.jpg",
                    sha256="ec0e37f215d67b29d0240869fef97afbb595341efe132c420b851c4cfd9b60cd",
                    size=232468,
                ),
            ),
        ),
        ModelSpec(
            id="birds-v1",
            description="TensorFlow Lite (uint8): AIY vision classifier, 964 bird species",
            files=(
                ModelFile(
                    name="lite-model_aiy_vision_classifier_birds_V1_3.tflite",
                    url=f"{_BIRDS}/lite-model_aiy_vision_classifier_birds_V1_3.tflite",
                    sha256="95f59df4cff9053355abcd0b6e5e7e740f6eae19ed8cded32e2c3e8068195093",
                    size=3561598,
                ),
            ),
            samples=(
                ModelFile(
                    name="bird.jpg",
                    url=f"{_BIRDS}/bird.jpg",
                    sha256="e99770ebc03ea7a691dc627b5a35cbc7cd7606959068fdf22114a77b720461be",
                    size=229104,
                ),
            ),
        ),
    )
}


def model_spec(model_id: str) -> ModelSpec:
    """The catalogue entry for ``model_id``; :class:`ModelNotFoundError` if there is none."""
    try:
        return CATALOGUE[model_id]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ModelNotFoundError(f"unknown model {model_id!r}; known models: {known}") from None


# --------------------------------------------------------------------------- search path


def search_path() -> list[Path]:
    """The directories searched for models, in order: ``$WASINN_MODELS`` entries, then the cache."""
    configured = os.environ.get(MODELS_ENV, "")
    entries = [Path(entry).expanduser() for entry in configured.split(os.pathsep) if entry]
    return [*entries, user_cache_dir() / "models"]


def find_model(model_id: str) -> Path | None:
    """The first search-path directory holding every file of the model, as
    ``<entry>/<model_id>/<file>`` or ``<entry>/<file>``; None when no directory does."""
    spec = model_spec(model_id)
    for entry in search_path():
        for candidate in (entry / model_id, entry):
            if all((candidate / model_file.name).is_file() for model_file in spec.files):
                return candidate
    return None


def find_file(name: str) -> Path | None:
    """A single file (e.g. a sample image) in a search-path entry or one directory below it."""
    for entry in search_path():
        if (entry / name).is_file():
            return entry / name
        try:
            subdirectories = sorted(child for child in entry.iterdir() if child.is_dir())
        except OSError:  # a missing or unreadable entry is skipped, as PATH lookups do
            continue
        for subdirectory in subdirectories:
            if (subdirectory / name).is_file():
                return subdirectory / name
    return None


def _not_found_message(model_id: str) -> str:
    searched = ", ".join(str(entry) for entry in search_path())
    return (
        f"model {model_id!r} not found (searched: {searched}); "
        f"set {MODELS_ENV} or run `wasinn models download {model_id}`"
    )


# --------------------------------------------------------------------------- download

Advance = Callable[[int], None]
StartBar = Callable[[str, int], Advance]


def _ignore_progress(_byte_count: int) -> None:
    return None


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[StartBar]:
    """Yields ``start(name, total) -> advance(bytes)``; draws bars only on an interactive stderr."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda _name, _total: _ignore_progress
        return
    # rich is imported here so that finding a model never pays for it.
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bars:

        def start(name: str, total: int) -> Advance:
            task = bars.add_task(name, total=total)
            return lambda byte_count: bars.advance(task, byte_count)

        yield start


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _is_verified(path: Path, model_file: ModelFile) -> bool:
    return path.is_file() and path.stat().st_size == model_file.size and _sha256_of(path) == model_file.sha256


def _source_url(model_file: ModelFile, mirror: str | None) -> str:
    # A mirror is a flat directory: every catalogued file name is unique.
    return f"{mirror.rstrip('/')}/{model_file.name}" if mirror else model_file.url


def _describe_network_error(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _fetch_verified(model_id: str, model_file: ModelFile, url: str, target: Path, start: StartBar) -> None:
    """Streams ``url`` into a temporary file beside ``target``, verifies it, then renames it."""
    # A fresh name in the same directory makes the final rename atomic; os.open (rather than
    # tempfile) keeps the umask-derived permissions a plain file would get.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(descriptor, "wb") as sink:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                    advance = start(model_file.name, model_file.size)
                    # Reading stops one byte past the expected size so a wrong file cannot fill the disk.
                    while received <= model_file.size and (chunk := response.read(_CHUNK_BYTES)):
                        sink.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        advance(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
                reason = _describe_network_error(error)
                raise DownloadError(
                    f"cannot download {model_file.name} for model {model_id!r} from {url}: {reason}; "
                    f"check the network, or set {MIRROR_ENV} to a server that has the file",
                    url=url,
                    reason=reason,
                ) from error
        actual = digest.hexdigest()
        if received != model_file.size or actual != model_file.sha256:
            size_note = (
                f"{received} bytes" if received <= model_file.size else f"over {model_file.size} bytes"
            )
            raise ChecksumError(
                f"{model_file.name} for model {model_id!r} from {url} is not the catalogued file: "
                f"expected sha256 {model_file.sha256} ({model_file.size} bytes), "
                f"got {actual} ({size_note}); the download was discarded. "
                f"Retry, or check {MIRROR_ENV} if it points at a mirror",
                file_name=model_file.name,
                expected=model_file.sha256,
                actual=actual,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def download(
    model_id: str,
    *,
    dest: str | os.PathLike[str] | None = None,
    progress: bool = True,
    base_url: str | None = None,
) -> Path:
    """Downloads the model's files (and its samples) into ``dest`` or the user cache and returns
    that directory. Files already there with the right checksum are kept, not fetched again.

    ``base_url`` (else ``$WASINN_MODEL_MIRROR``) replaces each file's URL with
    ``base_url.rstrip('/') + '/' + file.name``.
    """
    spec = model_spec(model_id)
    directory = Path(dest) if dest is not None else user_cache_dir() / "models" / model_id
    directory.mkdir(parents=True, exist_ok=True)
    mirror = base_url or os.environ.get(MIRROR_ENV) or None
    with _progress_bars(progress) as start:
        for model_file in (*spec.files, *spec.samples):
            target = directory / model_file.name
            if not _is_verified(target, model_file):
                _fetch_verified(model_id, model_file, _source_url(model_file, mirror), target, start)
    return directory


def ensure_model(model_id: str, *, download_missing: bool = True, progress: bool = True) -> Path:
    """The model's directory from the search path, downloading it into the cache when missing."""
    if (found := find_model(model_id)) is not None:
        return found
    if not download_missing:
        raise ModelNotFoundError(_not_found_message(model_id))
    return download(model_id, progress=progress)
