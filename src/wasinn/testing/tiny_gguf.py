"""A tiny random-weight llama GGUF on the real llama SPM vocabulary (ggml-backend spec §15).

The vocabulary comes from ``vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf``, a vocab-only
file inside the llama-cpp-python sdist that ``make setup`` downloads to ``build/sdist`` (the
same tarball it builds llama-cpp-python from). The weights are N(0, 1) × 0.02 from a fixed
seed: the text is babble, but greedy decoding (temp 0) is deterministic, which is what the
tests and benchmarks compare. The file is written with the PyPI ``gguf`` package.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wasinn.core._paths import user_cache_dir

SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
VOCAB_MEMBER = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
VOCAB_ENV = "WASINN_LLAMA_VOCAB"
SDIST_ENV = "WASINN_LLAMA_SDIST"
REPO = Path(__file__).resolve().parents[3]
TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
)


class VocabUnavailable(Exception):
    """The vocab-only GGUF could not be found; the message says how to get it."""


@dataclass(frozen=True)
class TinyLlamaShape:
    context_length: int = 256
    embedding_length: int = 64
    block_count: int = 2
    feed_forward_length: int = 128
    head_count: int = 4
    head_count_kv: int = 4
    seed: int = 0
    # A positive value raises the EOS row of the output matrix, so greedy decoding ends early.
    eos_boost: float = 0.0
    # A tokenizer.chat_template to write ("" writes none: the vocab GGUF has none).
    chat_template: str = ""

    @property
    def tag(self) -> str:
        return shape_tag(self)


def _sdist_candidates() -> Iterator[Path]:
    if explicit := os.environ.get(SDIST_ENV):
        yield Path(explicit)
    for base in (Path.cwd(), REPO):
        yield base / "build" / "sdist" / SDIST_NAME


def vocab_path() -> Path:
    """The vocab-only llama SPM GGUF, extracted once from the sdist into the user cache."""
    if explicit := os.environ.get(VOCAB_ENV):
        return Path(explicit)
    cached = user_cache_dir() / "testing" / "ggml-vocab-llama-spm.gguf"
    if cached.is_file():
        return cached
    for sdist in _sdist_candidates():
        if sdist.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist) as archive:
                member = archive.extractfile(VOCAB_MEMBER)
                if member is None:
                    raise VocabUnavailable(f"{sdist} has no {VOCAB_MEMBER}")
                partial = cached.with_suffix(f".part{os.getpid()}")
                partial.write_bytes(member.read())
                partial.replace(cached)
            return cached
    raise VocabUnavailable(
        f"no llama vocab GGUF: set {VOCAB_ENV}, or put the sdist at build/sdist/{SDIST_NAME} "
        "(`make setup` does: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36)"
    )


def _plain(value: Any) -> Any:
    """GGUFWriter rejects numpy scalars; hand it Python ones."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_tiny_llama(path: Path, shape: TinyLlamaShape = TinyLlamaShape(), vocab: Path | None = None) -> Path:
    import gguf

    reader = gguf.GGUFReader(str(vocab or vocab_path()))
    tokenizer = {key: _plain(reader.fields[key].contents()) for key in TOKENIZER_KEYS}
    n_vocab = len(tokenizer["tokenizer.ggml.tokens"])
    embd, ff, heads, kv_heads = (
        shape.embedding_length,
        shape.feed_forward_length,
        shape.head_count,
        shape.head_count_kv,
    )

    partial = path.with_name(path.name + f".part{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name("wasinn-tiny-llama")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(embd)
    writer.add_block_count(shape.block_count)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(embd // heads)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(0)
    writer.add_tokenizer_model(tokenizer["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(tokenizer["tokenizer.ggml.pre"])
    writer.add_token_list(tokenizer["tokenizer.ggml.tokens"])
    writer.add_token_scores(tokenizer["tokenizer.ggml.scores"])
    writer.add_token_types(tokenizer["tokenizer.ggml.token_type"])
    writer.add_bos_token_id(tokenizer["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(tokenizer["tokenizer.ggml.eos_token_id"])
    writer.add_unk_token_id(tokenizer["tokenizer.ggml.unknown_token_id"])
    writer.add_add_bos_token(tokenizer["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(tokenizer["tokenizer.ggml.add_eos_token"])
    if shape.chat_template:
        writer.add_chat_template(shape.chat_template)

    weights = random_weights(shape.seed)
    ones = np.ones(embd, dtype=np.float32)
    kv_width = embd * kv_heads // heads
    writer.add_tensor("token_embd.weight", weights(n_vocab, embd))
    writer.add_tensor("output_norm.weight", ones)
    output = weights(n_vocab, embd)
    if shape.eos_boost:
        eos = tokenizer["tokenizer.ggml.eos_token_id"]
        output[eos] += np.float32(shape.eos_boost)
    writer.add_tensor("output.weight", output)
    for block in range(shape.block_count):
        prefix = f"blk.{block}."
        writer.add_tensor(prefix + "attn_norm.weight", ones)
        writer.add_tensor(prefix + "attn_q.weight", weights(embd, embd))
        writer.add_tensor(prefix + "attn_k.weight", weights(kv_width, embd))
        writer.add_tensor(prefix + "attn_v.weight", weights(kv_width, embd))
        writer.add_tensor(prefix + "attn_output.weight", weights(embd, embd))
        writer.add_tensor(prefix + "ffn_norm.weight", ones)
        writer.add_tensor(prefix + "ffn_gate.weight", weights(ff, embd))
        writer.add_tensor(prefix + "ffn_up.weight", weights(ff, embd))
        writer.add_tensor(prefix + "ffn_down.weight", weights(embd, ff))

    return finish(writer, partial, path)


def tiny_llama(shape: TinyLlamaShape = TinyLlamaShape()) -> Path:
    """The tiny model for ``shape``, written once into the user cache and reused."""
    return cached(f"tiny-llama-{shape.tag}.gguf", lambda path: write_tiny_llama(path, shape))


# -- shared by the tiny GGUF writers (this module's llama, tiny_mmproj's projector)


def shape_tag(shape: object) -> str:
    """A short hash of a shape dataclass: the cached file's name changes with any field."""
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:12]


def random_weights(seed: int) -> Callable[..., np.ndarray[Any, np.dtype[np.float32]]]:
    """N(0, 1) × 0.02 float32 tensors of the given numpy shape, from one seeded stream."""
    rng = np.random.default_rng(seed)

    def weights(*dims: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        return (rng.standard_normal(dims) * 0.02).astype(np.float32)

    return weights


def finish(writer: Any, partial: Path, path: Path) -> Path:
    """Write the GGUF to ``partial`` and move it into place, so readers never see half a file."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path


def cached(name: str, write: Callable[[Path], Path]) -> Path:
    """``name`` in the user cache's testing folder, written by ``write`` the first time."""
    path = user_cache_dir() / "testing" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    return path
