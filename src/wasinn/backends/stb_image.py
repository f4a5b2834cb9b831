"""The image pipeline of WasmEdge's ``wasmedge_image`` plug-in, in Pillow + numpy.

WasmEdge decodes with stb_image v2.30 (3 channels) and resizes with stb_image_resize2 v2.18
(``*_linear``, edge clamp, default filters); shared spec ``wasmedge-tensorflow.md`` §4.3–4.4.
Pillow's decoders differ from stb's by a few grey levels on JPEG (libjpeg-turbo's IDCT and
upsampling); the channel rules and the resampler below follow stb exactly.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
LDR_TO_HDR_GAMMA = np.float32(2.2)  # stb's default, never changed by WasmEdge


class DecodeError(Exception):
    """The bytes are no image stb_image would read (or Pillow, standing in for it, cannot)."""


# The Pillow readers of the formats stb_image v2.30 reads (spec §4.3); Pillow names the PNM
# family PPM. stb's PIC and Radiance HDR have no Pillow reader. Every other Pillow reader is
# kept away from guest bytes: WasmEdge answers 1 for TIFF, WebP and the rest, and EPS would
# start Ghostscript.
STB_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TGA", "PSD", "PPM")
_STB_PNM_MAGIC = (b"P5", b"P6")  # stb reads binary PGM/PPM only: not P1-P4, PAM or PFM
_PSD_RGB_MODES = ("RGB", "RGBA")  # stb reads PSD colour mode 3 (RGB) only


def decode_rgb8(data: bytes) -> npt.NDArray[np.uint8]:
    """H×W×3 u8 as ``stbi_load(..., 3)`` gives: grey replicated, alpha dropped (not
    composited), 16-bit samples reduced to their high byte, GIF's first frame, PSD's composite."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Image.open leaves every format at its first image: GIF's frame 0 and PSD's
        # composite (Pillow counts PSD layers from 1, so seek(0) would fail there).
        with Image.open(io.BytesIO(data), formats=STB_FORMATS) as image:
            _check_stb_reads(image.format, image.mode, data)
            image.load()
            pixels = _to_rgb(image)
    except UnidentifiedImageError:
        raise DecodeError(
            f"{len(data)} bytes are no {', '.join(STB_FORMATS)} image (the formats stb_image reads)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, KeyError) as err:
        raise DecodeError(f"cannot decode {len(data)} image bytes: {err}") from None
    return np.ascontiguousarray(pixels)


def _check_stb_reads(fmt: str | None, mode: str, data: bytes) -> None:
    """Refuse the variants of stb's formats that Pillow reads and stb does not."""
    if fmt == "PPM" and data[:2] not in _STB_PNM_MAGIC:
        raise DecodeError(f"stb_image reads binary PGM/PPM (P5, P6) only, not {data[:2]!r}")
    if fmt == "PSD" and mode not in _PSD_RGB_MODES:
        raise DecodeError(f"stb_image reads RGB PSD files only, this one is {mode}")


def _psd_unmatte(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """stb's "remove weird white matte from PSD": colour stored blended over white is
    un-blended, ``(uint8)(c / a + 255 (1 - 1/a))`` in f32 with a = alpha / 255, for
    0 < alpha < 255. A colour below the matte (negative, an undefined C cast) is clamped."""
    alpha = rgba[:, :, 3:4]
    partial = (alpha != 0) & (alpha != 255)
    a = np.where(partial, alpha, 255).astype(np.float32) / np.float32(255.0)  # 1: unchanged
    ra = np.float32(1.0) / a
    inv_a = np.float32(255.0) * (np.float32(1.0) - ra)
    unmatted = np.clip(rgba[:, :, :3].astype(np.float32) * ra + inv_a, 0, 255)
    out: npt.NDArray[np.uint8] = np.where(partial, unmatted.astype(np.uint8), rgba[:, :, :3])
    return out


def _to_rgb(image: Any) -> npt.NDArray[np.uint8]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow keeps 16-bit grey as integers; stb keeps the high byte.
        grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("L", "LA", "La"):
        grey = np.asarray(image)
        grey = grey if grey.ndim == 2 else grey[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "RGBA" and image.format == "PSD":
        return _psd_unmatte(np.asarray(image))
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(image)[:, :, :3]
    # Palette (tRNS ignored), bilevel, CMYK, YCbCr …: Pillow's own conversion.
    return np.asarray(image.convert("RGB"))


def ldr_to_float(pixels: npt.NDArray[np.uint8]) -> F32:
    """``stbi_loadf`` on an 8-bit image: ``(v/255)^2.2`` per channel, in stb's float/double mix."""
    normalised = (pixels.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    return np.power(normalised, np.float64(LDR_TO_HDR_GAMMA)).astype(np.float32)


# --------------------------------------------------------------------------- resize


def _catmull_rom(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x = np.abs(x)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _mitchell(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x = np.abs(x)
    near = (7.0 * x - 12.0) * x * x + 16.0 / 3.0
    far = ((-7.0 / 3.0 * x + 12.0) * x - 20.0) * x + 32.0 / 3.0
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0)) / 6.0


def axis_taps(in_size: int, out_size: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Per output pixel, the (edge-clamped) input indices and normalised weights."""
    scale = out_size / in_size
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) / scale
    radius = 2.0 if scale > 1 else 2.0 / scale
    first = np.floor(centres - radius - 0.5).astype(np.int64)
    count = int(math.ceil(2 * radius)) + 2
    positions = first[:, None] + np.arange(count)[None, :]
    distance = positions + 0.5 - centres[:, None]
    weights = _catmull_rom(distance) if scale > 1 else _mitchell(distance * scale)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(positions, 0, in_size - 1).astype(np.intp), weights.astype(np.float32)


def _resize_axis(pixels: F32, out_size: int, axis: int) -> F32:
    in_size = pixels.shape[axis]
    if out_size == in_size:
        return pixels
    indices, weights = axis_taps(in_size, out_size)
    shape = [1, 1, 1]
    shape[axis] = out_size
    result = np.zeros(pixels.shape[:axis] + (out_size,) + pixels.shape[axis + 1 :], dtype=np.float32)
    for tap in range(indices.shape[1]):
        result += np.take(pixels, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return result


def resize(pixels: F32, width: int, height: int) -> F32:
    """stb_image_resize2's default filters on an H×W×3 float image (no clamping)."""
    return _resize_axis(_resize_axis(pixels, width, 1), height, 0)


def to_u8(pixels: F32) -> npt.NDArray[np.uint8]:
    rounded: npt.NDArray[np.uint8] = np.clip(np.floor(pixels + np.float32(0.5)), 0, 255).astype(np.uint8)
    return rounded


def load(data: bytes, width: int, height: int, *, floats: bool, bgr: bool) -> npt.NDArray[Any]:
    """``wasmedge_image``'s whole pipeline: decode, resize to ``width``×``height``, RGB or BGR."""
    decoded = decode_rgb8(data)
    same_size = decoded.shape[0] == height and decoded.shape[1] == width
    if floats:
        out: npt.NDArray[Any] = resize(ldr_to_float(decoded), width, height)
    elif same_size:
        out = decoded
    else:
        out = to_u8(resize(decoded.astype(np.float32), width, height))
    return np.ascontiguousarray(out[:, :, ::-1] if bgr else out)
