"""The whisper backend's framework-free parts (ggml-backend spec §9): config, WAV, transcript text.

WasmEdge's whisper plugin accepts only a complete RIFF/WAVE file, 16 kHz, 16-bit PCM, mono or
stereo, whose RIFF size matches its length exactly; its config is JSON with strict types.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.core import InvalidArgument, InvalidEncoding

SAMPLE_RATE = 16000
_BOOL_KEYS = """
    enable-log enable-debug-log split-on-word translate detect-language no-timestamps diarize output-srt
    output-lrc output-json output-json-full
"""
_UNSIGNED_KEYS = "threads processors offset-t duration max-len best-of beam-size audio-ctx offset-n"
WHISPER_KEYS: Mapping[str, str] = {
    **dict.fromkeys(_BOOL_KEYS.split(), "bool"),
    **dict.fromkeys(_UNSIGNED_KEYS.split(), "unsigned"),
    "max-context": "int",
    "language": "string",
    "prompt": "string",
    "output-file": "string",
    "temperature": "float",
}
WHISPER_DEFAULTS: Mapping[str, Any] = {
    "language": "en",
    "processors": 1,
    "max-context": 16384,
    "best-of": 5,
    "beam-size": 5,
    "temperature": 0.0,
    "prompt": "",
    "output-file": "output",
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _accepts(kind: str, value: Any) -> bool:
    if kind == "bool":
        return type(value) is bool
    if kind == "int":
        return type(value) is int
    if kind == "unsigned":
        return type(value) is int and value >= 0
    if kind == "float":
        return type(value) in (int, float)
    return type(value) is str


def parse_whisper_config(raw: bytes) -> dict[str, Any]:
    """Known keys, type-checked: not JSON → 2, a wrong type → 1; unknown keys are ignored."""
    try:
        document = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidEncoding(f"whisper: the config is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        return {}
    settings: dict[str, Any] = {}
    for key, value in document.items():
        kind = WHISPER_KEYS.get(key)
        if kind is None:
            continue
        if not _accepts(kind, value):
            raise InvalidArgument(f"whisper: config key {key!r} must be a {kind}, got {json.dumps(value)}")
        settings[key] = float(value) if kind == "float" else value
    return settings


def read_wav(data: bytes, dims: Sequence[int]) -> npt.NDArray[np.float32]:
    """The samples of a complete 16 kHz 16-bit PCM RIFF/WAVE file as float32 mono."""
    if len(dims) != 2 or dims[0] != 1:
        raise InvalidArgument(f"whisper: audio dims must be [1, byte_length], got {list(dims)}")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidArgument("whisper: the audio is not a RIFF/WAVE file")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 != len(data):
        raise InvalidArgument(f"whisper: the RIFF size says {riff_size + 8} bytes, the input has {len(data)}")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8 : offset + 8 + size]
        if chunk == b"fmt " and size >= 16:
            tag, channels, rate = struct.unpack_from("<HHI", body)
            bits = struct.unpack_from("<H", body, 14)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            return _samples(fmt, body)
        offset += 8 + size + (size & 1)
    raise InvalidArgument("whisper: the WAV file has no data chunk")


def _samples(fmt: tuple[int, int, int, int] | None, body: bytes) -> npt.NDArray[np.float32]:
    if fmt is None:
        raise InvalidArgument("whisper: the WAV file has no fmt chunk before its data")
    tag, channels, rate, bits = fmt
    if tag != 1 or bits != 16 or channels not in (1, 2) or rate != SAMPLE_RATE:
        raise InvalidArgument(
            f"whisper: the audio must be 16 kHz 16-bit PCM mono or stereo, got format {tag}, "
            f"{rate} Hz, {bits}-bit, {channels} channel(s)"
        )
    pcm = np.frombuffer(body[: len(body) // (2 * channels) * 2 * channels], dtype="<i2").astype(np.float32)
    if channels == 2:
        return ((pcm[0::2] + pcm[1::2]) / 65536.0).astype(np.float32)
    return pcm / np.float32(32768.0)


def timestamp(centiseconds: int) -> str:
    milliseconds = centiseconds * 10
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def transcript(segments: Sequence[tuple[int, int, bytes]], timestamps: bool) -> bytes:
    """``[HH:MM:SS.mmm --> HH:MM:SS.mmm] text\\n`` per segment; bare texts without timestamps."""
    if not timestamps:
        return b"".join(text for _, _, text in segments)
    return b"".join(
        f"[{timestamp(t0)} --> {timestamp(t1)}] ".encode() + text + b"\n" for t0, t1, text in segments
    )


WHISPER_MAGIC = 0x67676D6C  # "ggml", little-endian


def check_whisper_model(model: bytes) -> None:
    """Errno 1 unless ``model`` is a legacy ggml whisper file with at least one tensor.

    whisper.cpp reads sizes from the file without bounds checks, so a truncated file (or one
    without tensors, like whisper.cpp's for-tests models) can crash it or load garbage.
    """

    def fail(reason: str) -> InvalidArgument:
        return InvalidArgument(f"whisper: not a ggml whisper model: {reason}")

    def need(offset: int, size: int, what: str) -> None:
        if offset + size > len(model):
            raise fail(f"the file ends inside the {what}")

    need(0, 48, "header")
    magic, *hparams = struct.unpack_from("<I11i", model, 0)
    if magic != WHISPER_MAGIC:
        raise fail("bad magic")
    if hparams[10] % 1000 == 0:
        # whisper.cpp 1.8.5 asserts (aborting the process) in its F16-only convolution
        raise InvalidArgument("whisper: F32 models are refused: whisper.cpp 1.8.5 aborts on them; use F16")
    offset = 48
    need(offset, 8, "mel filters")
    n_mel, n_fft = struct.unpack_from("<ii", model, offset)
    if n_mel <= 0 or n_fft <= 0:
        raise fail(f"mel filters {n_mel}x{n_fft}")
    offset += 8 + 4 * n_mel * n_fft
    need(offset, 4, "vocabulary")
    (n_vocab,) = struct.unpack_from("<i", model, offset)
    offset += 4
    for _ in range(max(n_vocab, 0)):
        need(offset, 4, "vocabulary")
        (length,) = struct.unpack_from("<I", model, offset)
        offset += 4 + length
    need(offset, 12, "tensors (it has none)")
