"""GGML text-to-speech (ggml-backend spec §8) on tiny random OuteTTS and WavTokenizer GGUFs.

The models are written by the test (wasinn.testing.tiny_tts). The reference is native
llama.cpp (llama-cpp-python's C API) for the codes and the vocoder's spectra, and a plain
numpy transcription of WasmEdge's ``embdToAudio`` loops (its one-sided inverse DFT, window,
fold, envelope) and ``audioDataToWav`` for the audio: the WAV bytes must be equal.
"""

from __future__ import annotations

import functools
import io
import json
import math
import shutil
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wasinn.abi._plugin import resolve_guest_path
from wasinn.backends import get_backend
from wasinn.backends.ggml_tts import normalise_text, number_words, speaker_profile
from wasinn.backends.ggml_tts_speaker import AUDIO, TEXT
from wasinn.core import Errno, ExecutionTarget, GraphEncoding, NNError, NNSession, Tensor, TensorType

llama_cpp = pytest.importorskip("llama_cpp")
from wasinn.testing.tiny_gguf import VocabUnavailable  # noqa: E402
from wasinn.testing.tiny_tts import (  # noqa: E402
    CODE_BASE,
    TinyWavTokenizerShape,
    tiny_outetts,
    tiny_wavtokenizer,
)

SEED, CODES = 42, 40
BASE = {"tts": True, "seed": SEED, "n-predict": CODES, "threads": 1}


@pytest.fixture(scope="module")
def models() -> tuple[Path, Path]:
    try:
        return tiny_outetts(), tiny_wavtokenizer()
    except VocabUnavailable as err:
        pytest.skip(str(err))


class Tts:
    """One GGML graph and context; guest paths resolve inside ``root`` as through ``--dir .:.``."""

    def __init__(self, model: Path, config: dict[str, Any], root: Path | None = None) -> None:
        guest_path = None
        path = bytes(model)
        if root is not None:  # the models' folder is /m, as a second --dir
            guest_path = functools.partial(resolve_guest_path, [(".", root), ("/m", model.parent)])
            path = f"/m/{model.name}".encode()
        self.nn = NNSession(get_backend, guest_path=guest_path)
        builders = [b"preload:" + path, json.dumps(config).encode()]
        self.graph = self.nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU)
        self.ctx = self.graph.init_execution_context()

    def prompt(self, text: bytes) -> int:
        data = np.frombuffer(text, dtype=np.uint8)
        return errno_of(lambda: self.ctx.set_input(0, Tensor((len(text),), TensorType.U8, data)))

    def meta(self, settings: dict[str, Any]) -> None:
        raw = json.dumps(settings).encode()
        self.ctx.set_input(1, Tensor((len(raw),), TensorType.U8, np.frombuffer(raw, dtype=np.uint8)))

    def compute(self) -> int:
        return errno_of(self.ctx.compute)

    def output(self) -> bytes:
        return bytes(self.ctx.get_output(0))

    def metadata(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(bytes(self.ctx.get_output(1)))
        return parsed


def errno_of(call: Any) -> int:
    try:
        call()
    except NNError as err:
        return int(err.errno)
    return 0


@pytest.fixture
def tts(models: tuple[Path, Path], tmp_path: Path) -> Iterator[Tts]:
    session = Tts(models[0], {**BASE, "model-vocoder": str(models[1])})
    yield session
    session.nn.close()


# -- the reference: native llama.cpp and WasmEdge's loops in numpy


def native_tokens(vocab: Any, text: str, add_special: bool) -> list[int]:
    raw = text.encode()
    buffer = (llama_cpp.llama_token * (len(raw) + 8))()
    count = llama_cpp.llama_tokenize(vocab, raw, len(raw), buffer, len(buffer), add_special, True)
    return list(buffer[:count])


def native_codes(model_path: Path, words: str) -> tuple[int, list[int]]:
    """The prompt's token count and the codes sampled with top-k 4 + dist(SEED)."""
    model = llama_cpp.llama_model_load_from_file(bytes(model_path), llama_cpp.llama_model_default_params())
    vocab = llama_cpp.llama_model_get_vocab(model)
    parts = ["<|im_start|>\n", TEXT, words, "<|text_end|>\n", AUDIO]
    prompt = [t for i, part in enumerate(parts) for t in native_tokens(vocab, part, i == 0)]
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 0  # the trained context, as the backend's default ctx-size 0
    params.n_threads = params.n_threads_batch = 1
    ctx = llama_cpp.llama_init_from_model(model, params)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(4))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(SEED))
    array = (llama_cpp.llama_token * len(prompt))(*prompt)
    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(prompt))) == 0
    tokens = []
    for _ in range(CODES):
        token = llama_cpp.llama_sampler_sample(chain, ctx, -1)
        tokens.append(token)
        one = (llama_cpp.llama_token * 1)(token)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
    llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return len(prompt), [t - CODE_BASE for t in tokens if CODE_BASE <= t <= CODE_BASE + 4100]


def native_spectra(vocoder: Path, codes: list[int]) -> np.ndarray:
    model = llama_cpp.llama_model_load_from_file(bytes(vocoder), llama_cpp.llama_model_default_params())
    width = llama_cpp.llama_model_n_embd_out(model)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 512
    params.embeddings = True
    params.n_threads = params.n_threads_batch = 1
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(len(codes), 0, 1)
    for i, code in enumerate(codes):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = code, i, 1, True
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(codes)
    assert llama_cpp.llama_decode(ctx, batch) == 0
    pointer = llama_cpp.llama_get_embeddings(ctx)
    spectra = np.array(pointer[: len(codes) * width], dtype=np.float32).reshape(len(codes), width)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return spectra


def reference_wav(embd: np.ndarray) -> bytes:
    """WasmEdge's embdToAudio + zeroing + audioDataToWav, loop for loop (float64)."""
    n_codes, n_embd = embd.shape
    n_fft, n_hop, n_win = 1280, 320, 1280
    n_pad, n_out, half = (n_win - n_hop) // 2, (n_codes - 1) * n_hop + n_win, n_fft // 2 + 1
    hann = np.array([0.5 * (1 - math.cos(2 * math.pi * i / n_fft)) for i in range(n_fft)])
    k, m = np.meshgrid(np.arange(n_fft), np.arange(half), indexing="ij")
    angle = 2 * math.pi * (k * m) / n_fft
    cos, sin = np.cos(angle), np.sin(angle)
    res = np.zeros((n_codes, n_fft))
    for frame in range(n_codes):
        mag = np.minimum(np.exp(embd[frame, : n_embd // 2].astype(np.float64)), 100.0)
        phi = embd[frame, n_embd // 2 :].astype(np.float64)
        re, im = mag * np.cos(phi), mag * np.sin(phi)
        res[frame] = (cos @ re - sin @ im) / half * hann

    def fold(data: np.ndarray) -> np.ndarray:
        out = np.zeros(n_out)
        for col in range(n_codes):  # WasmEdge's column loop; later columns find no data
            start = col * n_hop - n_pad
            for offset in range(n_win):
                if 0 <= start + offset < n_out:
                    out[start + offset] += data[col, offset]
        return out[: n_out - 2 * n_pad]

    audio = (fold(res) / fold(np.tile(hann * hann, (n_codes, 1)))).astype(np.float32)
    audio[:6000] = 0
    samples = [int(max(-32768.0, min(32767.0, float(x) * 32767.0))) for x in audio]
    data = struct.pack(f"<{len(samples)}h", *samples)
    return wav_header(len(data)) + data


def wav_header(data_size: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


# -- the text side


def test_text_normalisation_spells_numbers_and_keeps_words() -> None:
    assert normalise_text(b"Hello, world!") == "hello<|text_sep|>world"
    assert normalise_text(b"12.5") == "twelve<|text_sep|>point<|text_sep|>five"
    assert number_words("1234567") == "one million two hundred thirty-four thousand five hundred sixty-seven"
    assert normalise_text(b"21") == "twenty<|text_sep|>one"
    assert normalise_text(b"  A\tB_c/d\\e ") == "a<|text_sep|>b<|text_sep|>c<|text_sep|>d<|text_sep|>e"
    # each non-ASCII byte is dropped; std::stoi's overflow is WasmEdge's " "
    assert normalise_text("caf\u00e9 na\u00efve".encode()) == "caf<|text_sep|>nave"
    assert normalise_text(b"x 99999999999 y") == "x<|text_sep|>y"
    assert normalise_text(b"0") == "zero"


def test_speaker_file_builds_both_prompt_parts() -> None:
    words = {
        "words": [
            {"word": "hi", "duration": 0.125, "codes": [1, 22]},
            {"word": "yo", "duration": 1, "codes": []},
        ]
    }
    text, audio = speaker_profile(json.dumps(words).encode(), "s.json")
    assert text == "<|text_start|>hi<|text_sep|>yo<|text_sep|>"
    assert audio == (
        "<|audio_start|>\nhi<|t_0.12|><|code_start|><|1|><|22|><|code_end|>\n"
        "yo<|t_1.00|><|code_start|><|code_end|>\n"
    )


# -- the audio pipeline against the reference


@pytest.fixture(scope="module")
def hello(models: tuple[Path, Path]) -> tuple[int, list[int], bytes]:
    """The native prompt length, codes and reference WAV of "Hello, world!"."""
    prompt_tokens, codes = native_codes(models[0], "hello<|text_sep|>world")
    return prompt_tokens, codes, reference_wav(native_spectra(models[1], codes))


def test_wav_equals_native_codes_through_the_reference_istft(
    tts: Tts, hello: tuple[int, list[int], bytes]
) -> None:
    prompt_tokens, codes, expected = hello
    assert tts.prompt(b"Hello, world!") == 0
    assert tts.metadata()["input_tokens"] == prompt_tokens
    assert tts.compute() == 0
    assert len(codes) == CODES  # the tiny model samples only audio codes
    wav = tts.output()
    assert len(wav) == 44 + 640 * CODES
    assert wav == expected
    samples = np.frombuffer(wav[44:], dtype="<i2")
    assert not samples[:6000].any() and samples[6000:].any()
    assert np.abs(samples).max() < 32767  # the comparison is not of clipped samples
    assert tts.metadata()["output_tokens"] == CODES
    with wave.open(io.BytesIO(wav)) as parsed:
        assert (parsed.getnchannels(), parsed.getsampwidth(), parsed.getframerate()) == (1, 2, 24000)
        assert parsed.getnframes() == 320 * CODES


def test_same_seed_same_audio_and_file_through_wasi_dirs(models: tuple[Path, Path], tmp_path: Path) -> None:
    config = {**BASE, "model-vocoder": f"/m/{models[1].name}", "tts-output-file": "out/speech.wav"}
    (tmp_path / "out").mkdir()
    session = Tts(models[0], config, root=tmp_path)
    try:
        assert session.prompt(b"Hello, world!") == 0
        assert session.compute() == 0
        first = session.output()
        assert (tmp_path / "out" / "speech.wav").read_bytes() == first
        assert session.compute() == 0  # the sampler is reset per compute: the same draw
        assert session.output() == first
    finally:
        session.nn.close()


def test_default_output_file_is_output_wav_in_the_guest_dir(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    session = Tts(
        models[0], {**BASE, "n-predict": 20, "model-vocoder": f"/m/{models[1].name}"}, root=tmp_path
    )
    try:
        assert session.prompt(b"hi") == 0 and session.compute() == 0
        assert (tmp_path / "output.wav").read_bytes() == session.output()
        assert len(session.output()) == 44 + 640 * 20
    finally:
        session.nn.close()


# -- errors


def test_output_file_outside_the_dirs_is_5_with_the_audio_kept(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    config = {
        **BASE,
        "n-predict": 20,
        "model-vocoder": f"/m/{models[1].name}",
        "tts-output-file": "/elsewhere/x.wav",
    }
    session = Tts(models[0], config, root=tmp_path)
    try:
        assert session.prompt(b"hi") == 0
        assert session.compute() == Errno.RUNTIME_ERROR
        assert len(session.output()) == 44 + 640 * 20  # as WasmEdge: the buffer is set first
    finally:
        session.nn.close()


def test_speaker_file_errors_are_1(models: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("not json")
    (tmp_path / "shape.json").write_text('{"words": [{"word": 3, "duration": 1, "codes": []}]}')
    session = Tts(models[0], {**BASE, "model-vocoder": f"/m/{models[1].name}"}, root=tmp_path)
    try:
        for name in ("missing.json", "bad.json", "shape.json", "/outside.json"):
            session.meta({"tts-speaker-file": name})
            assert session.prompt(b"hi") == Errno.INVALID_ARGUMENT, name
    finally:
        session.nn.close()


def test_speaker_file_changes_the_prompt(models: tuple[Path, Path], tmp_path: Path) -> None:
    words = {"words": [{"word": "hey", "duration": 0.5, "codes": [7, 8, 9]}]}
    (tmp_path / "me.json").write_text(json.dumps(words))
    config = {**BASE, "model-vocoder": f"/m/{models[1].name}", "tts-speaker-file": "me.json"}
    session = Tts(models[0], config, root=tmp_path)
    try:
        assert session.prompt(b"hi") == 0
        model = llama_cpp.llama_model_load_from_file(bytes(models[0]), llama_cpp.llama_model_default_params())
        vocab = llama_cpp.llama_model_get_vocab(model)
        text, audio = speaker_profile(json.dumps(words).encode(), "me.json")
        parts = ["<|im_start|>\n", text, "hi", "<|text_end|>\n", audio]
        expected = sum(len(native_tokens(vocab, part, i == 0)) for i, part in enumerate(parts))
        llama_cpp.llama_model_free(model)
        assert session.metadata()["input_tokens"] == expected
        assert session.compute() == 0
    finally:
        session.nn.close()


def test_vocoder_missing_or_not_a_gguf_is_1(models: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"junk" * 64)
    session = Tts(models[0], BASE, root=tmp_path)
    try:
        assert session.prompt(b"hi") == Errno.INVALID_ARGUMENT  # no model-vocoder
        # nothing there, not a GGUF, a host path outside the --dir mappings
        for name in ("nope.gguf", "junk.gguf", str(models[1])):
            session.meta({"model-vocoder": name})
            assert session.prompt(b"hi") == Errno.INVALID_ARGUMENT, name
        session.meta({"model-vocoder": f"/m/{models[1].name}"})
        assert session.prompt(b"hi") == 0
    finally:
        session.nn.close()


def test_no_codes_is_5(tts: Tts) -> None:
    tts.meta({"n-predict": 0})
    assert tts.prompt(b"hi") == 0
    assert tts.compute() == Errno.RUNTIME_ERROR


def test_vocoder_of_another_width_is_5(models: tuple[Path, Path], tmp_path: Path) -> None:
    narrow = tiny_wavtokenizer(TinyWavTokenizerShape(width=130))
    session = Tts(models[0], {**BASE, "n-predict": 4, "model-vocoder": str(narrow)})
    try:
        assert session.prompt(b"hi") == 0
        assert session.compute() == Errno.RUNTIME_ERROR
    finally:
        session.nn.close()


def test_tts_switched_on_by_set_input_metadata(
    models: tuple[Path, Path], hello: tuple[int, list[int], bytes]
) -> None:
    session = Tts(models[0], {"seed": SEED, "threads": 1, "n-predict": CODES})
    try:
        session.meta({"tts": True, "model-vocoder": str(models[1])})
        assert session.prompt(b"Hello, world!") == 0
        assert session.compute() == 0
        assert session.output() == hello[2]
    finally:
        session.nn.close()


def test_two_contexts_of_one_graph_speak_concurrently(
    models: tuple[Path, Path], hello: tuple[int, list[int], bytes]
) -> None:
    """The graph's lock serialises the text model and the shared vocoder: each context's WAV
    equals the sequential reference (each compute resets its own sampler to the seed)."""
    import threading

    session = Tts(models[0], {**BASE, "model-vocoder": str(models[1])})
    try:
        contexts = [session.ctx, session.graph.init_execution_context()]
        data = np.frombuffer(b"Hello, world!", dtype=np.uint8)
        for ctx in contexts:
            ctx.set_input(0, Tensor((len(data),), TensorType.U8, data))
        errors: list[BaseException] = []

        def speak(ctx: Any) -> None:
            try:
                ctx.compute()
            except BaseException as err:  # reported below, not lost in the thread
                errors.append(err)

        threads = [threading.Thread(target=speak, args=(ctx,)) for ctx in contexts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        assert [bytes(ctx.get_output(0)) for ctx in contexts] == [hello[2], hello[2]]
    finally:
        session.nn.close()


def test_a_compiled_guest_gets_the_wav_and_the_file_through_wasi(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    """The ggml-chat C guest (WasmEdge's call sequence): load_by_name_with_config with tts,
    the prompt, compute, get_output; the WAV it reads equals the file written through WASI."""
    from conftest import guest_wasm, run_guest

    shutil.copy(models[1], tmp_path / "voc.gguf")
    config = {**BASE, "n-predict": 30, "model-vocoder": "voc.gguf", "tts-output-file": "speech.wav"}
    done = run_guest(
        guest_wasm("ggml-chat"),
        "--config",
        json.dumps(config),
        "default",
        "Hello, world!",
        cwd=tmp_path,
        preload=[f"default:GGML:AUTO:{models[0]}"],
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert lines["rc_compute"] == "0"
    wav = bytes.fromhex(lines["text_hex"])
    assert wav == (tmp_path / "speech.wav").read_bytes()
    with wave.open(io.BytesIO(wav)) as parsed:
        assert (parsed.getnchannels(), parsed.getsampwidth(), parsed.getframerate()) == (1, 2, 24000)
        assert parsed.getnframes() == 320 * 30
