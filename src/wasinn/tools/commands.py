"""The ``im2tensor`` and ``visualize`` commands, for the ``wasinn`` command group.

Options mirror the seed's ``im2tensor --image IMG --dims 512x896x3xfp32 --tensor OUT``;
choices come from the tables in :mod:`wasinn.tools.im2tensor`. A bad input ends the command
with exit code 2 and one ``wasinn: error: ...`` line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from wasinn.cli_errors import CommandUsageError
from wasinn.tools.im2tensor import (
    COLOR_ORDERS,
    LAYOUTS,
    RESIZE_MODES,
    ColorOrder,
    Layout,
    ResizeMode,
    ToolError,
    im2tensor,
    parse_dims,
    write_tensor,
)
from wasinn.tools.visualize import visualize


def _float_list(_context: click.Context, parameter: click.Parameter, value: str | None) -> list[float] | None:
    """``--mean 103.9,116.8,123.7`` → [103.9, 116.8, 123.7]; a single number is a scalar."""
    if value is None:
        return None
    try:
        return [float(item) for item in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not comma-separated numbers, e.g. 0.5,0.5,0.5") from None


@click.command("im2tensor")
@click.option(
    "--image", "image_path", required=True, type=click.Path(path_type=Path), help="Picture to convert."
)
@click.option(
    "--dims",
    required=True,
    metavar="HxWxCxTYPE",
    help="Tensor size and element type, e.g. 512x896x3xfp32 (TYPE: fp32, fp16, u8, i32).",
)
@click.option(
    "--tensor", "tensor_path", required=True, type=click.Path(path_type=Path), help="File to write."
)
@click.option(
    "--layout", type=click.Choice(LAYOUTS), default="nhwc", show_default=True, help="HxWxC or CxHxW order."
)
@click.option(
    "--color", type=click.Choice(COLOR_ORDERS), default="bgr", show_default=True, help="Channel order."
)
@click.option("--mean", callback=_float_list, metavar="M[,M,M]", help="Subtract, per channel or one for all.")
@click.option(
    "--std", callback=_float_list, metavar="S[,S,S]", help="Then divide, per channel or one for all."
)
@click.option(
    "--resize",
    type=click.Choice(RESIZE_MODES),
    default="stretch",
    show_default=True,
    help="Stretch to HxW, or keep the aspect ratio and pad with 0.",
)
def im2tensor_command(
    image_path: Path,
    dims: str,
    tensor_path: Path,
    layout: Layout,
    color: ColorOrder,
    mean: list[float] | None,
    std: list[float] | None,
    resize: ResizeMode,
) -> None:
    """Decode and resize a picture into a raw tensor file for a WASI-NN guest."""
    try:
        spec = parse_dims(dims)
        tensor = im2tensor(image_path, spec, layout=layout, color=color, mean=mean, std=std, resize=resize)
        size = write_tensor(tensor, tensor_path)
    except ToolError as exc:
        raise CommandUsageError(str(exc)) from exc
    shape = "x".join(map(str, tensor.shape))
    click.echo(f"wrote {tensor_path}: {shape} {spec.dtype} ({layout}, {color}), {size} bytes")


@click.command("visualize")
@click.option(
    "--image", "image_path", required=True, type=click.Path(path_type=Path), help="The input picture."
)
@click.option(
    "--tensor",
    "tensor_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The segmentation output, e.g. wasinn-openvino-inference-output-1x4x512x896xf32.tensor.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Picture to write (.png, .jpg).",
)
@click.option(
    "--dims", metavar="NxCxHxWxTYPE", help="Tensor shape when its file name has none, e.g. 1x4x512x896xf32."
)
def visualize_command(image_path: Path, tensor_path: Path, output_path: Path, dims: str | None) -> None:
    """Draw a road-segmentation result: photo, classes and overlay, with a legend."""
    try:
        picture = visualize(image_path, tensor_path, dims=dims, output_path=output_path)
    except ToolError as exc:
        raise CommandUsageError(str(exc)) from exc
    click.echo(f"wrote {output_path}: {picture.width}x{picture.height} picture")
