"""llama.cpp's multimodal library (libmtmd) through ``llama_cpp.mtmd_cpp``: the GGML backend's
vision path (ggml-backend spec §6), as WasmEdge drives it for the llava, gemma-3 and qwen2vl
guests.

Only :mod:`wasinn.backends.ggml` imports this module, and only when an image prompt arrives:
a llama-cpp-python built without libmtmd (``-DLLAVA_BUILD=OFF``) still serves text, and its
image prompts get errno 1. What llama.cpp would abort the process on is checked here before
it reaches C, where Python can know it (not a crafted projector's tensor shapes).
"""

from __future__ import annotations

import ctypes
import os
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.backends._llama import LlamaContext, LlamaModel
from wasinn.core import BackendError, InvalidArgument

MARKER = b"<image>"  # WasmEdge's media marker; mtmd's own default is <__media__>


def mtmd_library() -> ModuleType:
    """``llama_cpp.mtmd_cpp``, which loads libmtmd when imported; errno 1 when the installed
    llama-cpp-python was built without it."""
    try:
        import llama_cpp.mtmd_cpp as mtmd
    except (OSError, RuntimeError, AttributeError) as err:
        raise InvalidArgument(
            "ggml: image prompts need llama.cpp's vision library (libmtmd), which this "
            f"llama-cpp-python build lacks ({err}); rebuild it without -DLLAVA_BUILD=OFF "
            "(docs/backends/ggml.md)"
        ) from None
    import llama_cpp._logger as llama_logger

    # mtmd prints to stderr on its own; llama-cpp-python's logger shows only errors unless
    # the graph has enable-log (ensure_backend), as for llama.cpp's own lines
    mtmd.mtmd_helper_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    module: ModuleType = mtmd
    return module


def check_projector(path: str) -> None:
    """The vision hyperparameters clip.cpp divides and reshapes by, checked before it reads
    them: it asserts (aborting the host) where they do not fit, and a guest can write such a
    file into a writable --dir. Tensor shapes are not checked: clip.cpp trusts them too."""
    import gguf

    try:
        fields = gguf.GGUFReader(path).fields
    except (OSError, ValueError, IndexError, KeyError) as err:
        raise InvalidArgument(f"ggml: the mmproj {path!r} is not a GGUF file ({err})") from None

    def value(key: str) -> Any:
        field = fields.get(key)
        return field.contents() if field is not None else None

    if value("clip.has_vision_encoder") is not True:
        raise InvalidArgument(f"ggml: the mmproj {path!r} has no vision encoder")
    image, patch = value("clip.vision.image_size"), value("clip.vision.patch_size")
    width, heads = value("clip.vision.embedding_length"), value("clip.vision.attention.head_count")
    head_width = value("clip.vision.attention.head_dim")
    if not (isinstance(image, int) and isinstance(patch, int) and 0 < patch <= image):
        raise InvalidArgument(f"ggml: the mmproj's patch size {patch} does not fit its image size {image}")
    if not (isinstance(width, int) and isinstance(heads, int) and heads > 0 and width > 0):
        raise InvalidArgument(f"ggml: the mmproj's width {width} or head count {heads} is not positive")
    if head_width is None and width % heads:
        raise InvalidArgument(f"ggml: the mmproj's width {width} does not divide into {heads} heads")


class VisionContext:
    """One mtmd context: the mmproj (CLIP encoder and projector) bound to a text model."""

    def __init__(self, model: LlamaModel, mmproj: str, threads: int, flash_attn: int) -> None:
        mtmd = self.mtmd = mtmd_library()
        if not os.path.isfile(mmproj):
            raise InvalidArgument(f"ggml: the mmproj file {mmproj!r} does not exist")
        check_projector(mmproj)
        params = mtmd.mtmd_context_params_default()
        params.print_timings = False
        params.n_threads = threads
        params.media_marker = MARKER
        params.flash_attn_type = flash_attn
        params.warmup = False  # a warm-up encode costs time and changes no result
        self.ctx = mtmd.mtmd_init_from_file(os.fsencode(mmproj), model.model, params)
        if not self.ctx:
            raise InvalidArgument(
                f"ggml: llama.cpp cannot load the mmproj {mmproj!r} for this model "
                "(not a CLIP projector GGUF, or its output width differs from the model's)"
            )
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise InvalidArgument(f"ggml: the mmproj {mmproj!r} has no vision encoder")

    def tokenize(self, text: bytes, pixels: npt.NDArray[np.uint8]) -> Chunks:
        """The prompt as mtmd chunks: text with special tokens, and the image at its marker."""
        mtmd = self.mtmd
        height, width, channels = pixels.shape
        if channels != 3 or width < 1 or height < 1:
            raise InvalidArgument(f"ggml: an image must be RGB with pixels, got {width}x{height}x{channels}")
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        bitmap = mtmd.mtmd_bitmap_init(width, height, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        if not bitmap:
            raise BackendError("ggml: mtmd could not allocate the image bitmap")
        chunks = Chunks(mtmd)
        try:
            text_input = mtmd.mtmd_input_text(text, len(text), True, True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = int(mtmd.mtmd_tokenize(self.ctx, chunks.chunks, ctypes.byref(text_input), bitmaps, 1))
        except BaseException:
            chunks.close()
            raise
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        if status != 0:
            chunks.close()
            if status == 1:
                raise InvalidArgument(
                    f"ggml: an image prompt must hold exactly one {MARKER.decode()} marker "
                    f"(found {text.count(MARKER)})"
                )
            raise InvalidArgument(f"ggml: mtmd could not preprocess the image (status {status})")
        if not chunks.ends_with_text:
            # the image's embeddings give no logits: sampling would abort llama.cpp
            chunks.close()
            raise InvalidArgument("ggml: an image prompt must go on with text after the image")
        return chunks

    def evaluate(self, chunks: Chunks, context: LlamaContext) -> int:
        """Decode every chunk from position 0, logits on the last token; the next position."""
        mtmd = self.mtmd
        if chunks.n_pos > context.n_ctx:
            raise InvalidArgument(
                f"ggml: the image prompt takes {chunks.n_pos} positions, more than n_ctx {context.n_ctx}"
            )
        for index in range(chunks.count):
            chunk = mtmd.mtmd_input_chunks_get(chunks.chunks, index)
            non_causal = not context.causal or bool(mtmd.mtmd_decode_use_non_causal(self.ctx, chunk))
            batch = min(int(mtmd.mtmd_input_chunk_get_n_tokens(chunk)), context.n_batch)
            if non_causal and batch > context.n_ubatch:
                # llama.cpp aborts (the host process) on a non-causal batch over n_ubatch tokens
                raise InvalidArgument(
                    f"ggml: a part of the image prompt decodes {batch} tokens at once without causal "
                    f"attention, more than the ubatch-size {context.n_ubatch}"
                )
        position = ctypes.c_int32(0)  # llama_pos
        status = int(
            mtmd.mtmd_helper_eval_chunks(
                self.ctx, context.ctx, chunks.chunks, 0, 0, context.n_batch, True, ctypes.byref(position)
            )
        )
        if status != 0:
            raise InvalidArgument(f"ggml: evaluating the image prompt failed (mtmd status {status})")
        return int(position.value)

    def close(self) -> None:
        if self.ctx:
            self.mtmd.mtmd_free(self.ctx)
            self.ctx = None


class Chunks:
    """An ``mtmd_input_chunks``: the tokenized text parts and the image's embedding slots."""

    def __init__(self, mtmd: ModuleType) -> None:
        self.mtmd = mtmd
        self.chunks = mtmd.mtmd_input_chunks_init()
        if not self.chunks:
            raise BackendError("ggml: mtmd could not allocate input chunks")

    @property
    def count(self) -> int:
        return int(self.mtmd.mtmd_input_chunks_size(self.chunks))

    @property
    def n_pos(self) -> int:
        return int(self.mtmd.mtmd_helper_get_n_pos(self.chunks))

    @property
    def ends_with_text(self) -> bool:
        mtmd, count = self.mtmd, self.count
        last = mtmd.mtmd_input_chunks_get(self.chunks, count - 1) if count else None
        return bool(
            last
            and int(mtmd.mtmd_input_chunk_get_type(last)) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
            and int(mtmd.mtmd_input_chunk_get_n_tokens(last)) > 0
        )

    @property
    def text_tokens(self) -> int:
        """The text tokens only: what WasmEdge reports as input_tokens for an image prompt."""
        mtmd = self.mtmd
        total = 0
        for index in range(self.count):
            chunk = mtmd.mtmd_input_chunks_get(self.chunks, index)
            if int(mtmd.mtmd_input_chunk_get_type(chunk)) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                total += int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        return total

    def close(self) -> None:
        if self.chunks:
            self.mtmd.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
