"""The tiny random llama quantised with llama.cpp's own ``llama_model_quantize`` (Q8_0 etc.).

llm-serving spec §2.8: with Q8_0 weights on the CPU and a KV area per sequence, llama.cpp's
logits for a sequence decoded in a batch with others are bit-identical to its logits alone
(F32 weights take another matmul path for one row than for many, and differ slightly), so
tests of continuous batching compare batched and solo text byte for byte on this model.
"""

from __future__ import annotations

import os
from pathlib import Path

from wasinn.testing.tiny_gguf import TinyLlamaShape, cached, tiny_llama

# llama.h's llama_ftype values
Q8_0, Q4_0 = 7, 2
TINY = TinyLlamaShape()


def quantize(source: Path, path: Path, ftype: int = Q8_0) -> Path:
    import llama_cpp

    from wasinn.backends._llama import ensure_backend

    ensure_backend(False)  # llama.cpp's log off: quantising prints a line per tensor
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 1
    partial = path.with_name(path.name + f".part{os.getpid()}")
    status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(partial), params)
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({source}) failed with status {status}")
    partial.replace(path)
    return path


def tiny_llama_quantized(shape: TinyLlamaShape = TINY, ftype: int = Q8_0) -> Path:
    """The tiny model for ``shape`` quantised to ``ftype``, written once into the user cache."""
    source = tiny_llama(shape)
    return cached(f"tiny-llama-{shape.tag}-ftype{ftype}.gguf", lambda path: quantize(source, path, ftype))
