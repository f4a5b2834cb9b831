"""A tiny random-weight CLIP projector (mmproj) GGUF for the tiny llama (ggml-backend spec §6).

llama.cpp's vision library (libmtmd, ``tools/mtmd/clip.cpp``) reads it as a LLaVA-1.5 style
projector (``clip.projector_type`` ``mlp``): a ViT of ``block_count`` blocks over
``image_size``² pixels in ``patch_size``² patches, with a class embedding and a pre-layernorm,
then the two-layer MLP ``mm.0`` → GELU → ``mm.2`` whose output width must equal the text
model's ``n_embd``. LLaVA reads the second-to-last block, so the last block is loaded but not
run. The weights are N(0, 1) × 0.02 from a fixed seed: an image changes the greedy text
deterministically, which is what the tests compare. The file is written with the PyPI
``gguf`` package, at test time, into the user cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wasinn.testing.tiny_gguf import TinyLlamaShape, cached, finish, random_weights, shape_tag


@dataclass(frozen=True)
class TinyMmprojShape:
    text_embedding_length: int = TinyLlamaShape().embedding_length  # the projector's output width
    image_size: int = 56
    patch_size: int = 14  # (56 / 14)² = 16 image tokens
    embedding_length: int = 32
    # clip.cpp swaps ffn_up/ffn_down of LLaVA files whose ffn_down has n_embd rows (an old
    # converter's mistake); a width other than embedding_length keeps the names as written.
    feed_forward_length: int = 48
    block_count: int = 2
    head_count: int = 2
    projector_hidden: int = 64
    seed: int = 1

    @property
    def tag(self) -> str:
        return shape_tag(self)


def write_tiny_mmproj(path: Path, shape: TinyMmprojShape = TinyMmprojShape()) -> Path:
    import gguf

    embd, ff, hidden = shape.embedding_length, shape.feed_forward_length, shape.projector_hidden
    n_pos = (shape.image_size // shape.patch_size) ** 2 + 1  # the patches and the class token

    partial = path.with_name(path.name + f".part{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), "clip")
    writer.add_name("wasinn-tiny-mmproj")
    writer.add_file_type(0)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", shape.image_size)
    writer.add_uint32("clip.vision.patch_size", shape.patch_size)
    writer.add_uint32("clip.vision.embedding_length", embd)
    writer.add_uint32("clip.vision.feed_forward_length", ff)
    writer.add_uint32("clip.vision.block_count", shape.block_count)
    writer.add_uint32("clip.vision.projection_dim", shape.text_embedding_length)
    writer.add_uint32("clip.vision.attention.head_count", shape.head_count)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    weights = random_weights(shape.seed)
    ones, zeros = np.ones(embd, dtype=np.float32), np.zeros(embd, dtype=np.float32)
    # numpy shapes are ggml's ne reversed: the patch convolution is ne [p, p, 3, embd]
    writer.add_tensor("v.patch_embd.weight", weights(embd, 3, shape.patch_size, shape.patch_size))
    writer.add_tensor("v.class_embd", weights(embd))
    writer.add_tensor("v.position_embd.weight", weights(n_pos, embd))
    writer.add_tensor("v.pre_ln.weight", ones)
    writer.add_tensor("v.pre_ln.bias", zeros)
    for block in range(shape.block_count):
        prefix = f"v.blk.{block}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(prefix + name + ".weight", weights(embd, embd))
            writer.add_tensor(prefix + name + ".bias", weights(embd))
        for norm in ("ln1", "ln2"):
            writer.add_tensor(prefix + norm + ".weight", ones)
            writer.add_tensor(prefix + norm + ".bias", zeros)
        writer.add_tensor(prefix + "ffn_up.weight", weights(ff, embd))
        writer.add_tensor(prefix + "ffn_up.bias", weights(ff))
        writer.add_tensor(prefix + "ffn_down.weight", weights(embd, ff))
        writer.add_tensor(prefix + "ffn_down.bias", weights(embd))
    writer.add_tensor("mm.0.weight", weights(hidden, embd))
    writer.add_tensor("mm.0.bias", weights(hidden))
    # scaled up so that the image tokens move the text model's greedy choices
    writer.add_tensor("mm.2.weight", weights(shape.text_embedding_length, hidden) * 50)
    writer.add_tensor("mm.2.bias", weights(shape.text_embedding_length))

    return finish(writer, partial, path)


def tiny_mmproj(shape: TinyMmprojShape = TinyMmprojShape()) -> Path:
    """The tiny projector for ``shape``, written once into the user cache and reused."""
    return cached(f"tiny-mmproj-{shape.tag}.gguf", lambda path: write_tiny_mmproj(path, shape))
