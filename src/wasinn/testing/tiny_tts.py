"""Tiny random-weight stand-ins for GGML text-to-speech (ggml-backend spec §8).

* :func:`tiny_outetts` — a llama GGUF shaped like OuteTTS 0.2 where it matters to the TTS
  path: the llama SPM vocabulary (:mod:`wasinn.testing.tiny_gguf`) padded with unused tokens
  so that the audio codes ``<|0|>``…``<|4100|>`` sit at ids 151672…155772 as in OuteTTS, plus
  its special tokens (``<|im_start|>``, ``<|text_sep|>``, ``<|t_0.36|>``, …). Only the code
  rows of the output matrix are non-zero, so every sampled token is an audio code (top-k 4
  over codes whose logits are all far above the zero logits of the rest).
* :func:`tiny_wavtokenizer` — a ``wavtokenizer-dec`` GGUF (posnet of 6 blocks, one ConvNeXt
  block) whose output width is 1282 (n_fft 1280 + 2), the width WasmEdge's inverse STFT reads.

Both are written with the PyPI ``gguf`` package and cached in the user cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wasinn.testing.tiny_gguf import (
    TOKENIZER_KEYS,
    _plain,
    cached,
    finish,
    random_weights,
    shape_tag,
    vocab_path,
)

CODE_BASE = 151672  # OuteTTS 0.2: <|0|> is token 151672 (WasmEdge keeps 151672..155772)
N_CODES = 4101
SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|text_start|>",
    "<|text_sep|>",
    "<|text_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|code_start|>",
    "<|code_end|>",
)
DURATIONS = tuple(f"<|t_{tenths / 100:.2f}|>" for tenths in range(1000))  # <|t_0.00|>…<|t_9.99|>
NORMAL, CONTROL, UNUSED = 1, 3, 5  # llama.cpp token types
VOCODER_WIDTH = 1282  # n_fft 1280 → 641 magnitudes + 641 phases


@dataclass(frozen=True)
class TinyOuteTtsShape:
    embedding_length: int = 32
    block_count: int = 1
    feed_forward_length: int = 64
    head_count: int = 4
    context_length: int = 4096
    seed: int = 1
    code_scale: float = 1.0  # the std of the code rows of the output matrix

    @property
    def tag(self) -> str:
        return shape_tag(self)


@dataclass(frozen=True)
class TinyWavTokenizerShape:
    features: int = 16  # token embedding width (WavTokenizer's features_length)
    hidden: int = 16  # posnet and ConvNeXt width
    groups: int = 4  # group-norm groups of the posnet
    feed_forward_length: int = 32
    convnext_blocks: int = 1
    seed: int = 2
    vocab: int = 4096
    width: int = VOCODER_WIDTH  # another width tests the backend's check

    @property
    def tag(self) -> str:
        return shape_tag(self)


def code_token(code: int) -> int:
    return CODE_BASE + code


def write_tiny_outetts(path: Path, shape: TinyOuteTtsShape = TinyOuteTtsShape()) -> Path:
    import gguf

    reader = gguf.GGUFReader(str(vocab_path()))
    tokenizer = {key: _plain(reader.fields[key].contents()) for key in TOKENIZER_KEYS}
    tokens: list[str] = list(tokenizer["tokenizer.ggml.tokens"])
    scores: list[float] = list(tokenizer["tokenizer.ggml.scores"])
    types: list[int] = list(tokenizer["tokenizer.ggml.token_type"])
    # Unused fillers up to the first code: llama.cpp's special-token scan skips UNUSED tokens.
    fillers = CODE_BASE - len(tokens)
    tokens += [f"<|unused_{i}|>" for i in range(fillers)]
    scores += [0.0] * fillers
    types += [UNUSED] * fillers
    extra = [f"<|{code}|>" for code in range(N_CODES)] + list(SPECIALS) + list(DURATIONS)
    tokens += extra
    scores += [0.0] * len(extra)
    types += [CONTROL] * len(extra)
    n_vocab = len(tokens)
    embd, ff, heads = shape.embedding_length, shape.feed_forward_length, shape.head_count

    partial = path.with_name(path.name + f".part{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name("wasinn-tiny-outetts")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(embd)
    writer.add_block_count(shape.block_count)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(embd // heads)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(1)
    writer.add_tokenizer_model(tokenizer["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(tokenizer["tokenizer.ggml.pre"])
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(tokenizer["tokenizer.ggml.eos_token_id"])
    writer.add_unk_token_id(tokenizer["tokenizer.ggml.unknown_token_id"])
    writer.add_add_bos_token(tokenizer["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(tokenizer["tokenizer.ggml.add_eos_token"])

    weights = random_weights(shape.seed)
    ones = np.ones(embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights(n_vocab, embd).astype(np.float16))
    writer.add_tensor("output_norm.weight", ones)
    output = np.zeros((n_vocab, embd), dtype=np.float16)
    rows = weights(N_CODES, embd) * np.float32(shape.code_scale / 0.02)
    output[CODE_BASE : CODE_BASE + N_CODES] = rows.astype(np.float16)
    writer.add_tensor("output.weight", output)
    for block in range(shape.block_count):
        prefix = f"blk.{block}."
        writer.add_tensor(prefix + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weights(embd, embd))
        writer.add_tensor(prefix + "ffn_norm.weight", ones)
        writer.add_tensor(prefix + "ffn_gate.weight", weights(ff, embd))
        writer.add_tensor(prefix + "ffn_up.weight", weights(ff, embd))
        writer.add_tensor(prefix + "ffn_down.weight", weights(embd, ff))
    return finish(writer, partial, path)


def write_tiny_wavtokenizer(path: Path, shape: TinyWavTokenizerShape = TinyWavTokenizerShape()) -> Path:
    """numpy shapes are ggml's ``ne`` reversed (llama.cpp's ``create_tensor`` dims)."""
    import gguf

    feat, hidden, ff = shape.features, shape.hidden, shape.feed_forward_length
    posnet_blocks = 6  # llama.cpp's graph hard-codes resnet, resnet, attn, resnet, resnet, norm
    partial = path.with_name(path.name + f".part{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), "wavtokenizer-dec")
    writer.add_name("wasinn-tiny-wavtokenizer")
    writer.add_context_length(8192)
    writer.add_vocab_size(shape.vocab)
    writer.add_features_length(feat)
    writer.add_embedding_length(shape.width)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(max(posnet_blocks, shape.convnext_blocks))
    writer.add_layer_norm_eps(1e-6)
    writer.add_group_norm_eps(1e-6)
    writer.add_group_norm_groups(shape.groups)
    writer.add_posnet_embedding_length(hidden)
    writer.add_posnet_block_count(posnet_blocks)
    writer.add_convnext_embedding_length(hidden)
    writer.add_convnext_block_count(shape.convnext_blocks)
    writer.add_causal_attention(False)
    writer.add_file_type(0)
    writer.add_tokenizer_model("none")

    weights = random_weights(shape.seed)

    def scaled(scale: float, *dims: int) -> np.ndarray:
        return weights(*dims) * np.float32(scale / 0.02)

    ones = np.ones((hidden,), dtype=np.float32)
    column = np.ones((hidden, 1), dtype=np.float32)
    writer.add_tensor("token_embd.weight", scaled(1.0, shape.vocab, feat))
    writer.add_tensor("conv1d.weight", scaled(0.1, hidden, feat, 7))
    writer.add_tensor("conv1d.bias", scaled(0.1, hidden, 1))
    for block in range(posnet_blocks):
        prefix = f"posnet.{block}."
        if block in (0, 1, 3, 4):
            for norm in ("norm1", "norm2"):
                writer.add_tensor(prefix + norm + ".weight", column)
                writer.add_tensor(prefix + norm + ".bias", scaled(0.1, hidden, 1))
            for conv in ("conv1", "conv2"):
                writer.add_tensor(prefix + conv + ".weight", scaled(0.1, hidden, hidden, 3))
                writer.add_tensor(prefix + conv + ".bias", scaled(0.1, hidden, 1))
        elif block == 2:
            writer.add_tensor(prefix + "attn_norm.weight", column)
            writer.add_tensor(prefix + "attn_norm.bias", scaled(0.1, hidden, 1))
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                writer.add_tensor(prefix + name + ".weight", scaled(0.2, hidden, hidden, 1))
                writer.add_tensor(prefix + name + ".bias", scaled(0.1, hidden, 1))
        else:
            writer.add_tensor(prefix + "attn_norm.weight", column)
            writer.add_tensor(prefix + "attn_norm.bias", scaled(0.1, hidden, 1))
    writer.add_tensor("token_embd_norm.weight", ones)
    writer.add_tensor("token_embd_norm.bias", scaled(0.1, hidden))
    for block in range(shape.convnext_blocks):
        prefix = f"convnext.{block}."
        writer.add_tensor(prefix + "dw.weight", scaled(0.2, hidden, 1, 7))
        writer.add_tensor(prefix + "dw.bias", scaled(0.1, hidden, 1))
        writer.add_tensor(prefix + "norm.weight", ones)
        writer.add_tensor(prefix + "norm.bias", scaled(0.1, hidden))
        writer.add_tensor(prefix + "pw1.weight", scaled(0.2, ff, hidden))
        writer.add_tensor(prefix + "pw1.bias", scaled(0.1, ff))
        writer.add_tensor(prefix + "pw2.weight", scaled(0.2, hidden, ff))
        writer.add_tensor(prefix + "pw2.bias", scaled(0.1, hidden))
        writer.add_tensor(prefix + "gamma.weight", scaled(0.5, hidden))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output_norm.bias", scaled(0.1, hidden))
    # magnitudes exp(x) of order 1, phases spread over a few radians
    writer.add_tensor("output.weight", scaled(0.3, shape.width, hidden))
    writer.add_tensor("output.bias", scaled(0.5, shape.width))
    return finish(writer, partial, path)


def tiny_outetts(shape: TinyOuteTtsShape = TinyOuteTtsShape()) -> Path:
    return cached(f"tiny-outetts-{shape.tag}.gguf", lambda path: write_tiny_outetts(path, shape))


def tiny_wavtokenizer(shape: TinyWavTokenizerShape = TinyWavTokenizerShape()) -> Path:
    return cached(f"tiny-wavtokenizer-{shape.tag}.gguf", lambda path: write_tiny_wavtokenizer(path, shape))
