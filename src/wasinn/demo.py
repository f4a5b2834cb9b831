"""``wasinn demo road-segmentation``: the seed example end to end, from a JPEG to a picture.

The same steps a person types, done with wasinn's Python API: find (or download) the
model, turn the photo into a tensor, run the wasm guest, draw the result.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import click

MODEL_ID = "road-segmentation-adas-0001"
IMAGE = "empty_road_mapillary.jpg"
GUEST = "road-segmentation.wasm"
OUTPUT_TENSOR = "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"
GUESTS_ENV = "WASINN_GUESTS"


def find_guest(name: str) -> Path:
    """A built example guest: ``$WASINN_GUESTS``, then the checkout's ``build/wasm``."""
    candidates = []
    if explicit := os.environ.get(GUESTS_ENV):
        candidates.append(Path(explicit) / name)
    candidates.append(Path(__file__).resolve().parents[2] / "build" / "wasm" / name)
    candidates.append(Path.cwd() / "build" / "wasm" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise click.ClickException(
        f"the example guest {name} is not built; run `make examples` (or set {GUESTS_ENV})"
    )


def find_sample(model_dir: Path, name: str) -> Path:
    from wasinn.models import find_file

    beside = model_dir / name
    found = beside if beside.is_file() else find_file(name)
    if found is None:
        raise click.ClickException(f"sample image {name} not found next to the model or on the search path")
    return found


def road_segmentation(out: Path, *, image: Path | None = None, download: bool = True) -> Path:
    """Run the whole example into ``out``; returns the picture's path."""
    from wasinn.core import ModelError
    from wasinn.models import ensure_model
    from wasinn.runtime import Runtime
    from wasinn.tools import im2tensor, visualize, write_tensor

    out.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = ensure_model(MODEL_ID, download_missing=download)
    except ModelError as err:
        raise click.ClickException(str(err)) from None
    photo = image or find_sample(model_dir, IMAGE)
    guest = find_guest(GUEST)
    step = _Steps()

    tensor = im2tensor(photo, "512x896x3xfp32")
    write_tensor(tensor, out / "input.tensor")
    step.done(f"im2tensor {photo.name} -> input.tensor (512x896x3 f32, BGR, HWC)")

    # WASI will not follow links out of a mapped directory, so the model is mapped as its own dir.
    runtime = Runtime(dirs=[f".:{out}", f"/model:{model_dir}"])
    code = runtime.run(guest, [f"/model/{MODEL_ID}.xml", f"/model/{MODEL_ID}.bin", "input.tensor"])
    if code != 0:
        raise click.ClickException(f"the guest {guest.name} exited with code {code}")
    step.done(f"wasinn run {guest.name} -> {OUTPUT_TENSOR}")

    picture = out / "road-segmentation.png"
    visualize(photo, out / OUTPUT_TENSOR, output_path=picture)
    step.done(f"visualize -> {picture}")
    shutil.copy(photo, out / photo.name)
    return picture


class _Steps:
    def __init__(self) -> None:
        self._last = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        click.echo(f"  {what}  ({now - self._last:.2f} s)", err=True)
        self._last = now


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
    click.echo(f"wasinn demo {example}", err=True)
    picture = road_segmentation(out, image=image, download=not no_download)
    click.echo(f"picture written to {picture}")
