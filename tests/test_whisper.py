"""The whisper backend (ggml-backend spec §9, cases 44–47): WAV rules, config types, load failures."""

from __future__ import annotations

import io
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import require_module
from wasinn.backends import get_backend
from wasinn.backends.whisper_audio import parse_whisper_config, read_wav, transcript
from wasinn.core import Errno, ExecutionTarget, GraphEncoding, NNError, NNSession, Tensor, TensorType


def wav_bytes(samples: np.ndarray, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def errno_of(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except NNError as err:
        return int(err.errno)
    return 0


PCM = (np.sin(np.arange(16000) / 10) * 12000).astype("<i2")


def test_mono_wav_becomes_float_samples() -> None:
    samples = read_wav(wav_bytes(PCM), (1, 0))
    np.testing.assert_array_equal(samples, PCM.astype(np.float32) / 32768)


def test_stereo_is_mixed_like_wasmedge() -> None:
    right = (-PCM // 2).astype("<i2")
    stereo = np.stack([PCM, right], axis=1).reshape(-1)
    samples = read_wav(wav_bytes(stereo, channels=2), (1, 0))
    np.testing.assert_allclose(samples, (PCM.astype(np.float32) + right) / 65536)


@pytest.mark.parametrize(
    ("data", "dims"),
    [
        (wav_bytes(PCM), (0,)),  # [len]: one dim
        (wav_bytes(PCM), (2, 0)),  # dims[0] must be 1
        (wav_bytes(PCM) + b"junk", (1, 0)),  # RIFF size no longer matches
        (wav_bytes(PCM, rate=44100), (1, 0)),
        (wav_bytes(PCM.astype(np.uint8), width=1), (1, 0)),
        (b"ID3\x04" + bytes(100), (1, 0)),  # an MP3
    ],
)
def test_bad_audio_is_errno_1(data: bytes, dims: tuple[int, ...]) -> None:
    assert errno_of(lambda: read_wav(data, dims)) == Errno.INVALID_ARGUMENT


def test_config_types() -> None:
    assert parse_whisper_config(b'{"language": "auto", "threads": 2, "temperature": 0}') == {
        "language": "auto",
        "threads": 2,
        "temperature": 0.0,
    }
    assert errno_of(lambda: parse_whisper_config(b'{"threads": -1}')) == Errno.INVALID_ARGUMENT
    assert errno_of(lambda: parse_whisper_config(b'{"translate": 1}')) == Errno.INVALID_ARGUMENT
    assert errno_of(lambda: parse_whisper_config(b"nan")) == Errno.INVALID_ENCODING
    assert errno_of(lambda: parse_whisper_config(b"{bad")) == Errno.INVALID_ENCODING


def test_transcript_format() -> None:
    segments = [(0, 430, b" This is a test record for whisper.cpp"), (430, 6123, b" Second.")]
    assert transcript(segments, timestamps=True) == (
        b"[00:00:00.000 --> 00:00:04.300]  This is a test record for whisper.cpp\n"
        b"[00:00:04.300 --> 00:01:01.230]  Second.\n"
    )
    assert transcript(segments, timestamps=False) == b" This is a test record for whisper.cpp Second."


def test_load_failures(tmp_path: Path) -> None:
    require_module("_pywhispercpp")
    nn = NNSession(get_backend)

    def load(*builders: bytes) -> int:
        return errno_of(lambda: nn.load(list(builders), GraphEncoding.WHISPER, ExecutionTarget.CPU))

    # a whisper header with hyper-parameters but no tensors, like the for-tests-ggml-*.bin files
    header = b"lmgg" + struct.pack("<11i", 51865, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1)
    assert load(header) == Errno.INVALID_ARGUMENT
    assert load(b"garbage") == Errno.INVALID_ARGUMENT
    assert load(b"garbage", b"{bad") == Errno.INVALID_ENCODING
    assert load(b"garbage", b'{"language": "xx"}') == Errno.INVALID_ARGUMENT
    assert load(b"preload:/missing.bin") == Errno.INVALID_ARGUMENT
    from wasinn.testing.tiny_whisper import write_tiny_whisper

    f32 = write_tiny_whisper(tmp_path / "f32.bin", layers=1, f16=False)
    assert load(b"preload:" + bytes(f32)) == Errno.INVALID_ARGUMENT  # whisper.cpp would abort
    nn.close()


@pytest.fixture(scope="module")
def tiny_whisper_model() -> Path:
    require_module("_pywhispercpp")
    from wasinn.testing.tiny_whisper import tiny_whisper

    return tiny_whisper()


def test_load_refuses_target_auto_which_only_preloads_may_name(tiny_whisper_model: Path) -> None:
    """WasmEdge's load refuses AUTO (3) before the whisper plugin, which ignores the target."""
    from wasinn.core import ModelRegistry
    from wasinn.host.options import parse_preload

    nn = NNSession(get_backend)
    builders = [b"preload:" + bytes(tiny_whisper_model)]
    auto = errno_of(lambda: nn.load(builders, GraphEncoding.WHISPER, ExecutionTarget.AUTO))
    assert auto == Errno.INVALID_ARGUMENT
    assert nn.load(builders, GraphEncoding.WHISPER, ExecutionTarget.CPU)
    nn.close()
    registry = ModelRegistry([parse_preload(f"default:Whisper:AUTO:{tiny_whisper_model}")], get_backend)
    assert NNSession(get_backend, registry).load_by_name("default")
    registry.close()


def test_set_input_metadata_errors(tiny_whisper_model: Path) -> None:
    """Spec case 47: index 1 is the config JSON, checked like the load config."""
    nn = NNSession(get_backend)
    graph = nn.load([b"preload:" + bytes(tiny_whisper_model)], GraphEncoding.WHISPER, ExecutionTarget.CPU)
    context = graph.init_execution_context()

    def meta(raw: bytes) -> int:
        tensor = Tensor((len(raw),), TensorType.U8, np.frombuffer(raw, dtype=np.uint8))
        return errno_of(lambda: context.set_input(1, tensor))

    assert meta(b'{"language": "xx"}') == Errno.INVALID_ARGUMENT
    assert meta(b'{"language": "auto"}') == 0
    assert meta(b'{"threads": -1}') == Errno.INVALID_ARGUMENT
    assert meta(b"nan") == Errno.INVALID_ENCODING
    nn.close()


def test_transcript_equals_pywhispercpp_and_formats(tiny_whisper_model: Path) -> None:
    from pywhispercpp.model import Model

    audio = (np.sin(np.arange(32000) / 8) * 8000).astype("<i2")
    wav = np.frombuffer(wav_bytes(audio), dtype=np.uint8)
    nn = NNSession(get_backend)
    config = b'{"beam-size": 1, "best-of": 1, "threads": 2}'
    graph = nn.load(
        [b"preload:" + bytes(tiny_whisper_model), config], GraphEncoding.WHISPER, ExecutionTarget.CPU
    )
    context = graph.init_execution_context()
    context.set_input(0, Tensor((1, wav.size), TensorType.F32, wav))
    context.compute()
    text = bytes(context.get_output(0))
    assert re.fullmatch(rb"(\[\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\] .*\n)+", text)

    native = Model(
        str(tiny_whisper_model), redirect_whispercpp_logs_to=None, print_progress=False, n_threads=2
    )
    segments = native.transcribe(
        audio.astype(np.float32) / 32768, language="en", greedy={"best_of": 1}, temperature=0.0
    )
    assert segments
    # Spec §9: "[HH:MM:SS.mmm --> HH:MM:SS.mmm] " + the raw segment text + "\n", the raw text
    # being whisper.cpp's own (usually with a leading space; pywhispercpp's Segment.text is
    # stripped), times t × 10 ms.
    import _pywhispercpp as pw

    def clock(centiseconds: int) -> bytes:
        ms = centiseconds * 10
        return b"%02d:%02d:%02d.%03d" % (ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60, ms % 1000)

    raw_texts = [bytes(pw.whisper_full_get_segment_text(native._ctx, i)) for i in range(len(segments))]
    assert all(raw.startswith(b" ") for raw in raw_texts)  # the space the format must keep
    expected = b"".join(
        b"[" + clock(s.t0) + b" --> " + clock(s.t1) + b"] " + raw + b"\n"
        for s, raw in zip(segments, raw_texts, strict=True)
    )
    assert text == expected

    raw = b'{"no-timestamps": true}'
    context.set_input(1, Tensor((len(raw),), TensorType.U8, np.frombuffer(raw, dtype=np.uint8)))
    context.compute()
    plain = bytes(context.get_output(0))
    segments = native.transcribe(
        audio.astype(np.float32) / 32768,
        language="en",
        greedy={"best_of": 1},
        temperature=0.0,
        no_timestamps=True,
    )
    raw_texts = [bytes(pw.whisper_full_get_segment_text(native._ctx, i)) for i in range(len(segments))]
    assert plain == b"".join(raw_texts)  # the raw texts, no brackets, no newlines
    # A WIT compute: whisper names no outputs and declares one, the transcript (ggml spec §9).
    # Last, as whisper.cpp carries the graph's previous text into the next compute.
    ((name, array),) = context.compute_with_io([("0", Tensor((1, wav.size), TensorType.F32, wav))])
    assert name == "0" and bytes(array) == bytes(context.get_output(0))
    assert bytes(array) and b"[" not in bytes(array) and b"\n" not in bytes(array)
    assert errno_of(context.compute_single) == Errno.INVALID_ARGUMENT
    nn.close()
