"""The tools' commands: ``im2tensor``, ``visualize``, ``demo`` and ``build``.

Options mirror the seed's ``im2tensor --image IMG --dims 512x896x3xfp32 --tensor OUT``;
choices come from the tables in :mod:`wasinn.tools.im2tensor`. A bad input ends the command
with exit code 2 and one ``wasinn: error: ...`` line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from wasinn.cli._errors import CommandError, CommandUsageError
from wasinn.tools.build import NN_VERSIONS, build
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


@click.command("demo")
@click.argument("example", type=click.Choice(["road-segmentation"]))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build/demo"),
    show_default=True,
    help="Directory for the tensors and the picture.",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use this photo instead of the sample.",
)
@click.option("--no-download", is_flag=True, help="Fail instead of downloading a missing model.")
def demo_command(example: str, out: Path, image: Path | None, no_download: bool) -> None:
    """Run an example end to end: road-segmentation turns a photo into a segmentation picture."""
    from wasinn.core import WasinnError
    from wasinn.tools.demo import road_segmentation

    click.echo(f"wasinn demo {example}", err=True)
    try:
        picture = road_segmentation(
            out, image=image, download=not no_download, progress=lambda line: click.echo(line, err=True)
        )
    except ToolError as err:  # a photo that cannot be read
        raise CommandUsageError(str(err)) from None
    except WasinnError as err:  # no model (and no download), a trapping guest
        raise CommandError(str(err)) from None
    click.echo(f"picture written to {picture}")


@click.command("build")
@click.argument("app", metavar="APP.py", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, metavar="APP.wasm", help="Where to write the component.")
@click.option(
    "-p",
    "--path",
    "paths",
    multiple=True,
    metavar="DIR",
    help="One more directory to import Python modules from.",
)
@click.option(
    "--nn-version",
    "versions",
    multiple=True,
    type=click.Choice(NN_VERSIONS),
    help="wasi:nn version(s) to import (default 0.2.0-rc-2024-10-28, which wasinn_guest uses).",
)
@click.option("--no-cache", is_flag=True, help="Build even when the same sources were built before.")
def build_command(
    app: str, output: str, paths: tuple[str, ...], versions: tuple[str, ...], no_cache: bool
) -> None:
    """Build APP.py (which defines the wasi:cli Run class) into a wasi:nn component."""
    from wasinn.core import ConfigError, ModuleError

    try:
        reused = build(app, output, paths=paths, versions=versions or (NN_VERSIONS[0],), cache=not no_cache)
    except (ConfigError, ModuleError) as err:
        raise CommandUsageError(str(err)) from None
    click.echo(f"{output}: {'reused a cached build' if reused else 'built'}", err=True)
