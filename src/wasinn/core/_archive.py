"""A model directory (a TensorFlow SavedModel) carried as one builder blob.

``--nn-preload`` reads every model at start-up into bytes; a SavedModel is a directory, so it
is packed into an uncompressed zip here and unpacked by the backend into a temporary
directory. The blob holds the files themselves, never a host path, so a guest that passes
such bytes to ``load`` can reach nothing outside them.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath

from wasinn.core import InvalidArgument

ZIP_MAGIC = b"PK\x03\x04"


def is_archive(blob: bytes) -> bool:
    return blob[:4] == ZIP_MAGIC


def pack_directory(directory: Path) -> bytes:
    """Every regular file under ``directory``, by relative path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for root, _dirs, files in os.walk(directory):
            for name in sorted(files):
                path = Path(root) / name
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def unpack_directory(blob: bytes, target: Path) -> None:
    """Extract into ``target``; a member naming a path outside it is refused."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for member in archive.infolist():
                parts = PurePosixPath(member.filename).parts
                if not parts or member.filename.startswith("/") or ".." in parts or "\\" in member.filename:
                    raise InvalidArgument(f"model archive member {member.filename!r} escapes the archive")
                archive.extract(member, target)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InvalidArgument(f"the model archive is damaged: {err}") from None
