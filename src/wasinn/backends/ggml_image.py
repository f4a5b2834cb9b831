"""Image prompts of the GGML backend (ggml-backend spec §6): the inline tag and decoding."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wasinn.backends._mtmd import MARKER, Chunks, VisionContext
from wasinn.core import InvalidArgument

# The inline image tag (spec §6): <img src="data:image/…;base64,…">
IMAGE_TAG, BASE64_AT, TAG_END = b'<img src="data:image/', b";base64,", b'">'


def inline_image(prompt: bytes) -> tuple[bytes, bytes] | None:
    """The prompt's first ``<img src="data:image/…;base64,…">`` tag (spec §6): the prompt with
    the whole tag replaced by the marker, and the decoded image bytes; None without a tag."""
    start = prompt.find(IMAGE_TAG)
    if start < 0:
        return None
    payload = prompt.find(BASE64_AT, start + len(IMAGE_TAG))
    end = prompt.find(TAG_END, payload + len(BASE64_AT)) if payload >= 0 else -1
    if end < 0:
        raise InvalidArgument('ggml: the inline image tag is not <img src="data:image/...;base64,...">')
    try:
        image = base64.b64decode(prompt[payload + len(BASE64_AT) : end], validate=True)
    except binascii.Error as err:
        raise InvalidArgument(f"ggml: the inline image's base64 does not decode: {err}") from None
    return prompt[:start] + MARKER + prompt[end + len(TAG_END) :], image


def decode_image(data: bytes, what: str) -> npt.NDArray[np.uint8]:
    """H×W×3 pixels as stb_image (which WasmEdge's mtmd uses) reads them, decoded in Python:
    mtmd's own loader hands bytes it cannot read as an image to ffmpeg, as a video."""
    from wasinn.backends.stb_image import DecodeError, decode_rgb8

    try:
        return decode_rgb8(data)  # imports Pillow
    except ImportError:
        raise InvalidArgument("ggml: image prompts need Pillow: pip install 'wasinn[ggml]'") from None
    except DecodeError as err:
        raise InvalidArgument(f"ggml: {what} is not an image: {err}") from None


@dataclass
class ImagePrompt:
    """A prompt with an image (spec §6), kept whole so that it can be tokenized again for a
    vision context rebuilt after a model reload."""

    text: bytes  # holding exactly one marker where the image goes
    pixels: npt.NDArray[np.uint8]
    mmproj: str  # the host path of the projector it was tokenized for
    chunks: Chunks
    vision: VisionContext  # the vision context that made ``chunks``
    text_tokens: int

    def close(self) -> None:
        self.chunks.close()
