"""A tiny random-weight whisper model in whisper.cpp's legacy ggml format, written offline.

The layout is whisper.cpp's loader: magic, 11 hyper-parameters, mel filters, vocabulary,
then tensors as (n_dims, name length, type, ne[…], name, data). Widths are tiny (state 64,
one layer) but the fixed parts are real: 80 mels, a 1500-frame audio context, the
multilingual 51865-token vocabulary size (so the special tokens sit where whisper.cpp expects
them). The transcript is babble; the tests check its format and the call sequence.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wasinn.core._paths import user_cache_dir

MAGIC = 0x67676D6C
N_VOCAB, N_AUDIO_CTX, N_TEXT_CTX, N_MELS, N_FFT = 51865, 1500, 448, 80, 201
BASE_VOCAB = 50257  # the GPT-2 words; whisper.cpp adds the special tokens itself
F32, F16 = 0, 1


def _shapes(state: int, layers: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Tensor names and ggml ``ne`` (fastest dimension first), in whisper.cpp's order."""
    yield "encoder.positional_embedding", (state, N_AUDIO_CTX)
    yield "encoder.conv1.weight", (3, N_MELS, state)
    yield "encoder.conv1.bias", (1, state)
    yield "encoder.conv2.weight", (3, state, state)
    yield "encoder.conv2.bias", (1, state)
    yield "encoder.ln_post.weight", (state,)
    yield "encoder.ln_post.bias", (state,)
    for prefix in [f"encoder.blocks.{i}." for i in range(layers)]:
        yield from _block(prefix, state, cross=False)
    yield "decoder.positional_embedding", (state, N_TEXT_CTX)
    yield "decoder.token_embedding.weight", (state, N_VOCAB)
    yield "decoder.ln.weight", (state,)
    yield "decoder.ln.bias", (state,)
    for prefix in [f"decoder.blocks.{i}." for i in range(layers)]:
        yield from _block(prefix, state, cross=True)


def _block(prefix: str, state: int, cross: bool) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield prefix + "mlp_ln.weight", (state,)
    yield prefix + "mlp_ln.bias", (state,)
    yield prefix + "mlp.0.weight", (state, 4 * state)
    yield prefix + "mlp.0.bias", (4 * state,)
    yield prefix + "mlp.2.weight", (4 * state, state)
    yield prefix + "mlp.2.bias", (state,)
    for attention in ("attn", "cross_attn") if cross else ("attn",):
        yield prefix + attention + "_ln.weight", (state,)
        yield prefix + attention + "_ln.bias", (state,)
        yield prefix + attention + ".query.weight", (state, state)
        yield prefix + attention + ".query.bias", (state,)
        yield prefix + attention + ".key.weight", (state, state)
        yield prefix + attention + ".value.weight", (state, state)
        yield prefix + attention + ".value.bias", (state,)
        yield prefix + attention + ".out.weight", (state, state)
        yield prefix + attention + ".out.bias", (state,)


def write_tiny_whisper(
    path: Path, state: int = 64, heads: int = 2, layers: int = 4, seed: int = 0, f16: bool = True
) -> Path:
    rng = np.random.default_rng(seed)
    partial = path.with_name(path.name + f".part{os.getpid()}")
    with open(partial, "wb") as out:
        hparams = (
            N_VOCAB,
            N_AUDIO_CTX,
            state,
            heads,
            layers,
            N_TEXT_CTX,
            state,
            heads,
            layers,
            N_MELS,
            F16 if f16 else F32,
        )
        out.write(struct.pack("<I11i", MAGIC, *hparams))
        out.write(struct.pack("<ii", N_MELS, N_FFT))
        out.write(np.abs(rng.standard_normal(N_MELS * N_FFT)).astype("<f4").tobytes())
        out.write(struct.pack("<i", BASE_VOCAB))
        for token in range(BASE_VOCAB):
            # whisper.cpp looks " " up by text (suppress_blank); 220 is its GPT-2 id. Words start
            # with a space, as GPT-2's do, so segment texts have whisper's leading space.
            word = b" " if token == 220 else f" w{token}".encode()
            out.write(struct.pack("<I", len(word)) + word)
        for name, ne in _shapes(state, layers):
            raw = name.encode()
            # an F16 model: matrices and convolutions in F16 (whisper.cpp's convolution needs
            # it), vectors and positional embeddings in F32
            half = f16 and len(ne) >= 2 and "positional" not in name and not name.endswith(".bias")
            out.write(struct.pack(f"<iii{len(ne)}i", len(ne), len(raw), F16 if half else F32, *ne) + raw)
            ones = name.endswith("ln.weight") or name.endswith("ln_post.weight")
            values = np.ones(ne[::-1]) if ones else rng.standard_normal(ne[::-1]) * 0.02
            out.write(values.astype("<f2" if half else "<f4").tobytes())
    partial.replace(path)
    return path


def tiny_whisper() -> Path:
    """The tiny whisper model, written once into the user cache."""
    path = user_cache_dir() / "testing" / "tiny-whisper-v5.bin"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_whisper(path)
    return path
