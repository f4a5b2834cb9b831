"""Draw a road-segmentation result: the picture, its classes, and the two blended.

The seed is ``visualize_inference_result.ipynb`` in second-state/WasmEdge-WASINN-examples
(``openvino-road-segmentation-adas``): it reads the 1x4x512x896 float32 output, takes the
argmax over the 4 classes, colours them with the viridis-like map below, scales the colour
mask up to the photo's size, blends it over the photo with ``addWeighted(mask, 0.3, photo,
0.7)`` and shows three matplotlib panels titled "Base Photo", "Segmentation" and "Masked
Photo".

Here the photo is scaled down to the tensor's HxW instead, with the same bilinear filter
im2tensor uses, so that all three panels line up pixel for pixel with what the network
saw and each segmentation pixel is exactly one class colour. The picture is drawn with
Pillow alone (no matplotlib) and adds a legend with each class's share of the pixels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from wasinn.tools.im2tensor import (
    TYPE_SPELLINGS,
    ImageSource,
    ToolError,
    image_pixels,
    load_image,
    parse_tensor_dims,
    require_pillow,
    resize_bilinear,
)

if TYPE_CHECKING:
    from PIL import Image, ImageFont

# The seed's classes and colours (RGB), in the order of the model's output channels.
CLASS_NAMES: tuple[str, ...] = ("BG", "road", "curb", "mark")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((68, 1, 84), (48, 103, 141), (53, 183, 120), (199, 216, 52))
OVERLAY_ALPHA = 0.3
PANEL_TITLES: tuple[str, str, str] = ("Base Photo", "Segmentation", "Masked Photo")

# Picture geometry in pixels, around panels of the tensor's own size.
MARGIN = 16  # outside edge, all four sides
PANEL_GAP = 16  # between two panels
TITLE_HEIGHT = 40  # band above the panels holding their titles
LEGEND_HEIGHT = 48  # band below the panels holding the legend
# Font sizes in pixels; text shrinks (down to MIN_FONT_SIZE) when small panels leave no room.
# A legend entry is a swatch as tall as its text, 0.4 of that size apart from its text, and
# entries are twice that size apart.
TITLE_FONT_SIZE = 24
LEGEND_FONT_SIZE = 20
MIN_FONT_SIZE = 8
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)

# "...-1x4x512x896xf32.tensor" or "...-512x896x3xf32-bgr.tensor": sizes then a type, not
# glued to other letters or digits. Longest spellings first, so "fp32" wins over a shorter one.
_TYPE_PATTERN = "|".join(sorted(TYPE_SPELLINGS, key=len, reverse=True))
_DIMS_IN_NAME = re.compile(rf"(?<![0-9a-z])((?:[0-9]+x)+(?:{_TYPE_PATTERN}))(?![0-9a-z])", re.IGNORECASE)


class VisualizeError(ToolError):
    """An output tensor or picture that cannot be drawn."""


@dataclass(frozen=True)
class ResultLayout:
    """Where everything goes in the result picture, for panels of ``panel_height x panel_width``.

    The three panels sit side by side ``PANEL_GAP`` apart, inside a ``MARGIN`` on every side,
    under a ``TITLE_HEIGHT`` band for their titles and over a ``LEGEND_HEIGHT`` band for the
    legend.
    """

    panel_height: int
    panel_width: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole picture."""
        width = 2 * MARGIN + 3 * self.panel_width + 2 * PANEL_GAP
        height = 2 * MARGIN + TITLE_HEIGHT + self.panel_height + LEGEND_HEIGHT
        return width, height

    @property
    def panels_top(self) -> int:
        return MARGIN + TITLE_HEIGHT

    @property
    def legend_top(self) -> int:
        return self.panels_top + self.panel_height

    def panel_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of panel 0, 1 or 2; right and bottom are exclusive."""
        left = MARGIN + index * (self.panel_width + PANEL_GAP)
        return left, self.panels_top, left + self.panel_width, self.panels_top + self.panel_height


def dims_from_filename(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype[Any]] | None:
    """The shape and type a tensor file's name states, or None when it states none."""
    matches = _DIMS_IN_NAME.findall(Path(path).name)
    return parse_tensor_dims(matches[-1]) if matches else None


def read_tensor(path: str | os.PathLike[str], dims: str | None = None) -> npt.NDArray[Any]:
    """Read a raw little-endian tensor file, its shape and type taken from ``dims`` when given
    (``1x4x512x896xf32``), otherwise from the file name (``...-1x4x512x896xf32.tensor``)."""
    path = Path(path)
    found = parse_tensor_dims(dims) if dims is not None else dims_from_filename(path)
    if found is None:
        raise VisualizeError(
            f"cannot tell the shape of {path}: its name has no dims like '-1x4x512x896xf32.tensor'; "
            "give them, e.g. dims='1x4x512x896xf32'"
        )
    shape, dtype = found
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VisualizeError(f"cannot read tensor file {path}: {exc.strerror or exc}") from exc
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        dims_text = "x".join(map(str, shape))
        raise VisualizeError(f"{path} holds {len(data)} bytes, but {dims_text} {dtype.name} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def segmentation_labels(scores: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """The class of each pixel: argmax over the class axis of 1xCxHxW or CxHxW scores."""
    if scores.ndim == 4:
        if scores.shape[0] != 1:
            raise VisualizeError(f"a batch of {scores.shape[0]} results; one picture's result is 1xCxHxW")
        scores = scores[0]
    if scores.ndim != 3:
        raise VisualizeError(f"scores of shape {scores.shape}; expected 1xCxHxW or CxHxW (NCHW)")
    if scores.shape[0] != len(CLASS_NAMES):
        raise VisualizeError(
            f"{scores.shape[0]} classes along the channel axis of {scores.shape}; "
            f"road segmentation has {len(CLASS_NAMES)} ({', '.join(CLASS_NAMES)})"
        )
    labels: npt.NDArray[np.intp] = np.argmax(scores, axis=0)
    return labels


def _check_labels(labels: npt.NDArray[np.integer[Any]]) -> None:
    if labels.size == 0:
        raise VisualizeError("an empty label map")
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise VisualizeError(f"labels must lie in 0..{len(CLASS_NAMES) - 1}")


def colorize(labels: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """HxW class labels → HxWx3 RGB picture in the seed's class colours."""
    _check_labels(labels)
    colored: npt.NDArray[np.uint8] = np.asarray(CLASS_COLORS, dtype=np.uint8)[labels]
    return colored


def class_shares(labels: npt.NDArray[np.integer[Any]]) -> dict[str, float]:
    """Each class's share of the pixels, in percent (0..100), for every class name."""
    _check_labels(labels)
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES))
    return {name: 100.0 * int(count) / labels.size for name, count in zip(CLASS_NAMES, counts, strict=True)}


def overlay(
    base: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8], alpha: float = OVERLAY_ALPHA
) -> npt.NDArray[np.uint8]:
    """``alpha * mask + (1 - alpha) * base``, rounded, as the seed's ``cv2.addWeighted``."""
    blended = mask.astype(np.float32) * np.float32(alpha) + base.astype(np.float32) * np.float32(1 - alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _fitting_size(width_at: Callable[[int], float], size: int, room: int) -> int:
    """The largest font size up to ``size`` (and no smaller than MIN_FONT_SIZE) whose text fits."""
    while size > MIN_FONT_SIZE and width_at(size) > room:
        size -= 1
    return size


def render_result(base: npt.NDArray[np.uint8], labels: npt.NDArray[np.integer[Any]]) -> Image.Image:
    """The three titled panels (photo, classes, blend) and a legend, on white.

    ``base`` is the HxWx3 RGB photo at the labels' HxW; see :class:`ResultLayout` for the
    geometry.
    """
    require_pillow()
    from PIL import Image, ImageDraw

    if base.shape != (*labels.shape, 3):
        raise VisualizeError(f"a photo of shape {base.shape} for labels of shape {labels.shape}")
    mask = colorize(labels)
    layout = ResultLayout(*labels.shape)
    picture = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(picture)

    def text_width(text: str, size: int) -> float:
        return draw.textlength(text, font=_font(size))

    # One title size for all three, the largest at which the longest fits over its panel.
    title_size = _fitting_size(
        lambda size: max(text_width(title, size) for title in PANEL_TITLES),
        TITLE_FONT_SIZE,
        layout.panel_width,
    )
    for index, (title, panel) in enumerate(zip(PANEL_TITLES, (base, mask, overlay(base, mask)), strict=True)):
        left, top, right, _ = layout.panel_box(index)
        picture.paste(Image.fromarray(panel, "RGB"), (left, top))
        text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), title, font=_font(title_size))
        x = (left + right - (text_right - text_left)) // 2 - text_left
        y = MARGIN + (TITLE_HEIGHT - (text_bottom - text_top)) // 2 - text_top
        draw.text((x, y), title, fill=INK, font=_font(title_size))

    # One entry per class (swatch, name, share), packed in a row centred under the panels.
    texts = [f"{name} {share:.1f} %" for name, share in class_shares(labels).items()]

    def entry_widths(size: int) -> list[int]:
        return [size + size * 2 // 5 + int(text_width(text, size)) for text in texts]

    size = _fitting_size(
        lambda size: sum(entry_widths(size)) + 2 * size * (len(texts) - 1),
        LEGEND_FONT_SIZE,
        layout.size[0] - 2 * MARGIN,
    )
    widths = entry_widths(size)
    x = (layout.size[0] - sum(widths) - 2 * size * (len(texts) - 1)) // 2
    swatch_top = layout.legend_top + (LEGEND_HEIGHT - size) // 2
    for color, text, width in zip(CLASS_COLORS, texts, widths, strict=True):
        draw.rectangle((x, swatch_top, x + size - 1, swatch_top + size - 1), fill=color, outline=INK)
        _, text_top, _, text_bottom = draw.textbbox((0, 0), text, font=_font(size))
        y = swatch_top + (size - (text_bottom - text_top)) // 2 - text_top
        draw.text((x + size + size * 2 // 5, y), text, fill=INK, font=_font(size))
        x += width + 2 * size
    return picture


def visualize(
    image: ImageSource,
    output_tensor: npt.NDArray[Any] | str | os.PathLike[str],
    *,
    dims: str | None = None,
    output_path: str | os.PathLike[str] | None = None,
) -> Image.Image:
    """Draw the segmentation in ``output_tensor`` (an array, or a file read by :func:`read_tensor`)
    over ``image``, save it to ``output_path`` when given (format from its suffix), and return it.

    ``dims`` gives the shape of a tensor file, or reshapes a flat array. The photo is scaled to
    the tensor's HxW, as im2tensor's default (stretch) fed it to the network.
    """
    if isinstance(output_tensor, np.ndarray):
        scores = output_tensor
        if dims is not None:
            shape, _ = parse_tensor_dims(dims)
            if int(np.prod(shape)) != scores.size:
                raise VisualizeError(f"an array of {scores.size} elements cannot take dims {dims!r}")
            scores = scores.reshape(shape)
    else:
        scores = read_tensor(output_tensor, dims)
    labels = segmentation_labels(scores)
    photo = image_pixels(load_image(image), 3, "rgb")
    picture = render_result(resize_bilinear(photo, *labels.shape), labels)
    if output_path is not None:
        try:
            picture.save(output_path)
        except (OSError, ValueError) as exc:  # ValueError: a suffix Pillow knows no format for
            raise VisualizeError(f"cannot write {os.fspath(output_path)}: {exc}") from exc
    return picture
