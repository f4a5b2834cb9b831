"""Helpers around a WASI-NN guest: picture → tensor file (im2tensor) and result → picture (visualize).

Pillow (the ``tools`` extra) is imported only when a picture is read or drawn.
"""

from wasinn.tools.im2tensor import (
    Im2TensorError,
    LetterboxBox,
    TensorSpec,
    ToolError,
    im2tensor,
    letterbox_box,
    load_image,
    parse_dims,
    parse_tensor_dims,
    resize_bilinear,
    write_tensor,
)
from wasinn.tools.visualize import (
    CLASS_COLORS,
    CLASS_NAMES,
    ResultLayout,
    VisualizeError,
    class_shares,
    colorize,
    dims_from_filename,
    overlay,
    read_tensor,
    render_result,
    segmentation_labels,
    visualize,
)

__all__ = [
    "CLASS_COLORS",
    "CLASS_NAMES",
    "Im2TensorError",
    "LetterboxBox",
    "ResultLayout",
    "TensorSpec",
    "ToolError",
    "VisualizeError",
    "class_shares",
    "colorize",
    "dims_from_filename",
    "im2tensor",
    "letterbox_box",
    "load_image",
    "overlay",
    "parse_dims",
    "parse_tensor_dims",
    "read_tensor",
    "render_result",
    "resize_bilinear",
    "segmentation_labels",
    "visualize",
    "write_tensor",
]
