"""GGML text-to-speech (ggml-backend spec §8): OuteTTS 0.2 codes, WavTokenizer, WAV out.

WasmEdge's ``plugins/wasi_nn/GGML/tts/tts_core.cpp`` (itself llama.cpp b4488's
``examples/tts/tts.cpp``) in Python: the prompt is normalised text between the speaker's
words and its audio block; the text model samples audio-code tokens (top-k 4, random draw);
the codes go through the WavTokenizer vocoder (a llama.cpp ``wavtokenizer-dec`` model in
embedding mode) to a spectrum per code, whose inverse STFT is 320 samples of 24 kHz audio.
The output is a 16-bit mono WAV, also written to ``tts-output-file`` through the guest's
WASI directories.

Only :mod:`wasinn.backends.ggml` imports this module (and the tests, for the pure parts).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from wasinn.backends._llama import LlamaContext, LlamaModel, default_threads
from wasinn.core import BackendError, Errno, InvalidArgument, NNError

if TYPE_CHECKING:
    from wasinn.backends.ggml import GgmlContext

CODE_FIRST, CODE_LAST = 151672, 155772  # OuteTTS 0.2's <|0|>…<|4100|> (WasmEdge's bounds)
N_FFT, HOP, N_WIN = 1280, 320, 1280
N_PAD = (N_WIN - HOP) // 2
SAMPLE_RATE = 24000
SILENT_START = SAMPLE_RATE // 4  # WasmEdge zeroes the first 0.25 s
MAGNITUDE_CAP = 100.0
DEFAULT_OUTPUT_FILE = "output.wav"

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
_NUMBER = re.compile(r"\d+(\.\d+)?", re.ASCII)
_INT_MAX = (1 << 31) - 1  # std::stoi's range; beyond it WasmEdge writes " "


# -- text (tts_core.cpp processTTSPromptText)


def _below_thousand(number: int) -> str:
    words = ""
    if number >= 100:
        words += _ONES[number // 100] + " hundred "
        number %= 100
    if number >= 20:
        words += _TENS[number // 10]
        if number % 10:
            words += "-" + _ONES[number % 10]
    elif number > 0:
        words += _ONES[number]
    return words


def number_words(text: str) -> str:
    """``12.5`` → ``twelve point five``, as WasmEdge's ``numberToWords`` spells it."""
    whole, dot, decimals = text.partition(".")
    number = int(whole)
    if number > _INT_MAX:
        return " "
    if number == 0:
        words = "zero"
    else:
        words = ""
        for scale, name in ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand")):
            if number >= scale:
                words += _below_thousand(number // scale) + f" {name} "
                number %= scale
        if number > 0:
            words += _below_thousand(number)
    if dot:
        words += " point" + "".join(" " + _ONES[int(digit)] for digit in decimals)
    return words


def normalise_text(prompt: bytes) -> str:
    """Numbers spelled out, lower-case a–z words joined by ``<|text_sep|>`` (spec §8).

    WasmEdge works on bytes (``::tolower`` in the C locale, ``std::regex`` on ``char``): the
    text is read as Latin-1 so that each non-ASCII byte is one character that is dropped."""
    text = prompt.decode("latin-1")
    text = _NUMBER.sub(lambda match: number_words(match.group()), text)
    text = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
    text = re.sub(r"[-_/,.\\]", " ", text)
    text = re.sub(r"[^a-z\s]", "", text, flags=re.ASCII)
    text = re.sub(r"\s+", " ", text, flags=re.ASCII).strip(" ")
    return re.sub(r"\s", "<|text_sep|>", text, flags=re.ASCII)


# -- the speaker (OuteTTS speaker JSON, or the built-in en_female_1)


def speaker_profile(data: bytes, name: str) -> tuple[str, str]:
    """The speaker's text part and audio part of the prompt, from an OuteTTS speaker JSON.

    WasmEdge aborts the host on a file that is not JSON or has a word of the wrong shape;
    wasinn answers errno 1 (the number an unreadable speaker file gives)."""
    try:
        profile = json.loads(data)
        words = profile.get("words", []) if isinstance(profile, dict) else None
        if not isinstance(words, list):
            raise ValueError("'words' is not a list")
        text, audio = "<|text_start|>", "<|audio_start|>\n"
        for entry in words:
            word, duration, codes = entry["word"], entry["duration"], entry["codes"]
            if (
                not isinstance(word, str)
                or isinstance(duration, bool)
                or not isinstance(duration, int | float)
            ):
                raise ValueError("a word needs a string 'word' and a number 'duration'")
            if not isinstance(codes, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in codes
            ):
                raise ValueError("a word's 'codes' must be a list of integers")
            audio += f"{word}<|t_{duration:.2f}|><|code_start|>"
            audio += "".join(f"<|{code}|>" for code in codes) + "<|code_end|>\n"
            text += word + "<|text_sep|>"
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidArgument(
            f"ggml: the tts-speaker-file {name!r} is not an OuteTTS speaker JSON: {err}"
        ) from None
    return text, audio


def default_speaker() -> tuple[str, str]:
    from wasinn.backends.ggml_tts_speaker import AUDIO, TEXT

    return TEXT, AUDIO


def prompt_parts(prompt: bytes, speaker: tuple[str, str]) -> list[str]:
    """The five pieces WasmEdge tokenizes in turn (only the first with add_special)."""
    return ["<|im_start|>\n", speaker[0], normalise_text(prompt), "<|text_end|>\n", speaker[1]]


def tokenize_prompt(model: LlamaModel, parts: Sequence[str]) -> list[int]:
    tokens: list[int] = []
    for index, part in enumerate(parts):
        tokens += model.tokenize(part.encode(), add_special=index == 0)
    return tokens


# -- codes → audio (tts_core.cpp codesToSpeech, embdToAudio, audioDataToWav)


def audio_codes(tokens: Sequence[int]) -> list[int]:
    """The generated tokens that are audio codes, as code numbers (0…4100)."""
    return [token - CODE_FIRST for token in tokens if CODE_FIRST <= token <= CODE_LAST]


def _fold(frames: npt.NDArray[np.float64], n_out: int) -> npt.NDArray[np.float64]:
    """Overlap-add of (n_frames, N_WIN) frames at HOP, shifted left by N_PAD and cut to
    ``n_out − 2·N_PAD`` samples (WasmEdge's ``fold``)."""
    total = np.zeros(n_out + N_PAD, dtype=np.float64)
    for index, frame in enumerate(frames):
        start = index * HOP
        total[start : start + N_WIN] += frame
    return total[N_PAD : n_out - N_PAD]


def embeddings_to_audio(embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The vocoder's (codes × 1282) output to audio: magnitude exp(x) capped at 100 and phase
    from the second half, WasmEdge's inverse DFT per frame (a one-sided sum divided by
    N/2 + 1, not numpy's irfft), periodic Hann window, overlap-add divided by the summed
    squared window, N_PAD trimmed at each end: 320 samples per code."""
    n_codes, width = embeddings.shape
    bins = N_FFT // 2 + 1
    if width != 2 * bins:
        raise NNError(
            f"ggml: the vocoder gives {width} values per code; WasmEdge's inverse STFT needs {2 * bins}",
            Errno.RUNTIME_ERROR,
        )
    values = embeddings.astype(np.float64)
    magnitude = np.minimum(np.exp(values[:, :bins]), MAGNITUDE_CAP)
    phase = values[:, bins:]
    real, imag = magnitude * np.cos(phase), magnitude * np.sin(phase)
    # Σ_m (Re·cos − Im·sin)(2πkm/N) over m = 0…N/2 equals (N·irfft(X) + Re X₀ + (−1)^k Re X_{N/2}) / 2
    spectrum = real + 1j * imag
    full = np.fft.irfft(spectrum, n=N_FFT, axis=1) * N_FFT
    alternating = np.where(np.arange(N_FFT) % 2 == 0, 1.0, -1.0)
    one_sided = (full + real[:, :1] + real[:, -1:] * alternating) / 2 / bins
    window = hann(N_FFT)
    n_out = (n_codes - 1) * HOP + N_WIN
    audio = _fold(one_sided * window, n_out)
    envelope = _fold(np.tile(window * window, (n_codes, 1)), n_out)
    return (audio / envelope).astype(np.float32)


def hann(length: int) -> npt.NDArray[np.float64]:
    """The periodic Hann window."""
    return 0.5 * (1.0 - np.cos(2.0 * math.pi * np.arange(length) / length))


def wav_bytes(audio: npt.NDArray[np.float32], rate: int = SAMPLE_RATE) -> bytes:
    """44-byte PCM header, mono 16-bit, samples int16(clamp(x × 32767)) truncated toward 0."""
    samples = np.clip(audio.astype(np.float64) * 32767.0, -32768.0, 32767.0).astype("<i2")
    data = samples.tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
        b"data", len(data),
    )  # fmt: skip
    return header + data


def speech_wav(embeddings: npt.NDArray[np.float32]) -> bytes:
    audio = embeddings_to_audio(embeddings)
    audio[:SILENT_START] = 0.0  # WasmEdge writes 6000 zeros even past a shorter buffer
    return wav_bytes(audio)


# -- the vocoder model


class Vocoder:
    """A WavTokenizer GGUF in llama.cpp, with an embedding context sized to the codes."""

    def __init__(self, path: str, settings: Mapping[str, Any]) -> None:
        self.path = path
        self.model = LlamaModel(path, {**settings, "n-gpu-layers": settings.get("n-gpu-layers", 0)})
        import llama_cpp

        self.width = int(llama_cpp.llama_model_n_embd_out(self.model.model))
        self.threads = int(settings.get("threads", default_threads()))
        self.context: LlamaContext | None = None

    def embeddings(self, codes: Sequence[int]) -> npt.NDArray[np.float32]:
        """One decode of every code with all outputs on: (codes × width) floats."""
        import llama_cpp

        n_vocab = self.model.n_vocab
        if any(code >= n_vocab for code in codes):
            raise NNError(
                f"ggml: an audio code is outside the vocoder's {n_vocab} codes", Errno.RUNTIME_ERROR
            )
        # WavTokenizer attends over the whole sequence: one ubatch must hold every code.
        if self.context is None or self.context.n_ubatch < len(codes):
            self.close_context()
            size = max(512, 1 << (len(codes) - 1).bit_length())
            settings = {"ctx-size": size, "batch-size": size, "ubatch-size": size, "embedding": True}
            if self.threads > 0:
                settings["threads"] = self.threads
            self.context = LlamaContext(self.model, settings)
        context = self.context
        context.clear()
        try:
            context.decode(list(codes), 0, all_outputs=True)
        except BackendError as err:
            raise NNError(f"ggml: the vocoder failed: {err}", Errno.RUNTIME_ERROR) from None
        pointer = llama_cpp.llama_get_embeddings(context.ctx)
        if not pointer:
            raise NNError("ggml: the vocoder returned no embeddings", Errno.RUNTIME_ERROR)
        flat = np.ctypeslib.as_array(pointer, shape=(len(codes) * self.width,))
        return flat.reshape(len(codes), self.width).copy()

    def close_context(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None

    def close(self) -> None:
        self.close_context()
        self.model.close()


# -- the execution context's side (called by GgmlContext)


def speaker_for(ctx: GgmlContext) -> tuple[str, str]:
    name = str(ctx.graph.settings.get("tts-speaker-file", ""))
    if not name:
        return default_speaker()
    host = ctx._host_path("tts-speaker-file", name)
    if not os.path.isfile(host):
        raise InvalidArgument(f"ggml: the tts-speaker-file {name!r} is not a file")
    try:
        with open(host, "rb") as file:
            data = file.read()
    except OSError as err:
        raise InvalidArgument(f"ggml: cannot read the tts-speaker-file {name!r}: {err.strerror}") from None
    return speaker_profile(data, name)


def tts_prompt(ctx: GgmlContext, model: LlamaModel, prompt: bytes) -> list[int]:
    """The prompt's tokens in TTS mode; also loads the vocoder, so that a bad path is errno 1
    here (WasmEdge: at load) rather than after generation."""
    vocoder_for(ctx)
    return tokenize_prompt(model, prompt_parts(prompt, speaker_for(ctx)))


def vocoder_for(ctx: GgmlContext) -> Vocoder:
    """The graph's vocoder; ``model-vocoder`` is a guest path (resolved through --dir)."""
    graph = ctx.graph
    name = str(graph.settings.get("model-vocoder", ""))
    if not name:
        raise InvalidArgument("ggml: tts needs model-vocoder (the WavTokenizer GGUF)")
    host = ctx._host_path("model-vocoder", name)
    if graph.vocoder is not None and graph.vocoder.path == host:
        return graph.vocoder
    graph.drop_vocoder()
    if not os.path.isfile(host):
        raise InvalidArgument(f"ggml: model-vocoder {name!r} is not a file")
    try:
        graph.vocoder = Vocoder(host, graph.settings)
    except InvalidArgument as err:
        raise InvalidArgument(f"ggml: cannot load the vocoder {name!r}: {err}") from None
    return graph.vocoder


def compute_tts(ctx: GgmlContext, model: LlamaModel, context: LlamaContext) -> None:
    """Generate as in text mode, then turn the audio codes into the WAV output (spec §8).

    As in WasmEdge, a full context (101) ends generation and the codes so far are spoken."""
    ctx._evaluate_prompt(context)
    sampler = ctx._current_sampler()
    limit = int(ctx.settings.get("n-predict", -1))
    ignore_eos = bool(ctx.graph.settings.get("ignore-eos", False))
    tokens: list[int] = []
    while limit < 0 or len(tokens) < limit:
        if ctx._cancelled:
            raise BackendError("ggml: generation cancelled")
        token = sampler.sample(context)
        ctx._append(model, token)
        tokens.append(token)
        if not ignore_eos and model.is_eog(token):
            break
        try:
            ctx._advance(context, token)
        except NNError as err:
            if err.errno != Errno.CONTEXT_FULL:
                raise
            break
    codes = audio_codes(tokens)
    if not codes:
        raise NNError("ggml: the text model generated no audio codes", Errno.RUNTIME_ERROR)
    wav = speech_wav(vocoder_for(ctx).embeddings(codes))
    ctx.output = bytearray(wav)
    write_output_file(ctx, wav)


def write_output_file(ctx: GgmlContext, wav: bytes) -> None:
    """``tts-output-file`` (default output.wav) through the guest's --dir mappings; called
    from Python without a guest, the file is written only when the key is set."""
    name = ctx.graph.settings.get("tts-output-file")
    if name is None and ctx.guest_path is None:
        return
    name = str(name if name is not None else DEFAULT_OUTPUT_FILE)
    try:
        host = ctx._host_path("tts-output-file", name)
        with open(host, "wb") as file:
            file.write(wav)
    except (InvalidArgument, OSError) as err:
        message = err.strerror if isinstance(err, OSError) else str(err)
        raise NNError(
            f"ggml: cannot write the tts-output-file {name!r}: {message}", Errno.RUNTIME_ERROR
        ) from None
