"""WasmEdge's ``wasmedge_image`` plug-in module: decode an image, resize it, write RGB/BGR.

Validation in the order of shared spec ``wasmedge-tensorflow.md`` §4.2, every failure 1; the
pixel work is :mod:`wasinn.backends.stb_image` (Pillow is imported by the first call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wasinn.abi._plugin import PluginModule, import_backend
from wasinn.abi.ephemeral import region
from wasinn.core import Errno, InvalidArgument

IMAGE_MODULE = "wasmedge_image"
I32_MAX = 2**31 - 1
# out_type → (float output, BGR order, bytes per pixel)
OUTPUT_TYPES: dict[int, tuple[bool, bool, int]] = {
    0: (False, False, 3),
    1: (False, True, 3),
    2: (True, False, 12),
    3: (True, True, 12),
}


def _pipeline() -> Any:
    return import_backend("wasinn.backends.stb_image", "PIL", "tensorflow")


class WasmEdgeImage(PluginModule):
    NAME = IMAGE_MODULE
    # load_jpg and load_png decode any format, as WasmEdge 0.15+ does (the format is sniffed).
    SIGNATURES = {"load_jpg": 7, "load_png": 7, "load_image": 7}
    OUT_OF_BOUNDS = Errno.INVALID_ARGUMENT
    FAILURE = Errno.INVALID_ARGUMENT

    def __init__(self, park: Callable[[BaseException], None]) -> None:
        super().__init__(park)

    def _load_jpg(self, *params: int) -> None:
        self._load_image(*params)

    def _load_png(self, *params: int) -> None:
        self._load_image(*params)

    def _load_image(
        self, img_ptr: int, img_len: int, width: int, height: int, out_type: int, out_ptr: int, out_len: int
    ) -> None:
        memory = self._mem()
        self._check(memory, img_ptr, img_len, "image")
        self._check(memory, out_ptr, out_len, "output buffer")
        if out_type not in OUTPUT_TYPES:
            raise InvalidArgument(f"image: output type {out_type}; expected 0 (RGB8) to 3 (BGR32F)")
        floats, bgr, bpp = OUTPUT_TYPES[out_type]
        if img_len > I32_MAX:
            raise InvalidArgument(f"image: {img_len} input bytes, more than 2^31-1")
        if width == 0 or height == 0:
            raise InvalidArgument(f"image: output size {width}x{height} is empty")
        if width > I32_MAX // bpp or height > I32_MAX:
            raise InvalidArgument(f"image: output size {width}x{height} is too large")
        if out_len // bpp < width * height:
            raise InvalidArgument(
                f"image: {width}x{height} needs {width * height * bpp} bytes, the buffer has {out_len}"
            )
        pipeline = _pipeline()
        try:
            pixels = pipeline.load(
                bytes(memory[img_ptr : img_ptr + img_len]), width, height, floats=floats, bgr=bgr
            )
        except pipeline.DecodeError as err:
            raise InvalidArgument(f"image: {err}") from None
        payload = pixels.reshape(-1).view(np.uint8)
        region(self._mem(), out_ptr, payload.size)[:] = payload
