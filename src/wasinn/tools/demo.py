"""``wasinn demo road-segmentation``: the seed example end to end, from a JPEG to a picture.

The same steps a person types, done with wasinn's Python API: find (or download) the
model, turn the photo into a tensor, run the wasm guest, draw the result.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from wasinn.core import ModuleError, WasinnError

MODEL_ID = "road-segmentation-adas-0001"
IMAGE = "empty_road_mapillary.jpg"
GUEST = "road-segmentation.wasm"
OUTPUT_TENSOR = "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"
GUESTS_ENV = "WASINN_GUESTS"
# Where a wheel carries the example guests (setup.py builds them); absent in a checkout.
SHIPPED_GUESTS = Path(__file__).resolve().parents[1] / "_guests" / "wasm"


class ExampleNotBuilt(ModuleError):
    """An example's guest or sample is not where a checkout's ``make examples`` puts it."""


def find_guest(name: str) -> Path:
    """A built example guest: ``$WASINN_GUESTS``, then the ones a wheel ships (setup.py), then
    the checkout's ``build/wasm``."""
    candidates = []
    if explicit := os.environ.get(GUESTS_ENV):
        candidates.append(Path(explicit) / name)
    candidates.append(SHIPPED_GUESTS / name)
    candidates.append(Path(__file__).resolve().parents[3] / "build" / "wasm" / name)
    candidates.append(Path.cwd() / "build" / "wasm" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ExampleNotBuilt(
        f"the example guest {name} is not built; run `make examples` in a wasinn checkout "
        f"(or install a wheel built by `pip wheel .`, or set {GUESTS_ENV})"
    )


def find_sample(model_dir: Path, name: str) -> Path:
    from wasinn.tools.models import find_file

    beside = model_dir / name
    found = beside if beside.is_file() else find_file(name)
    if found is None:
        raise ExampleNotBuilt(f"sample image {name} not found next to the model or on the search path")
    return found


def road_segmentation(
    out: Path,
    *,
    image: Path | None = None,
    download: bool = True,
    progress: Callable[[str], object] = lambda line: None,
) -> Path:
    """Run the whole example into ``out``; returns the picture's path. ``progress`` is given
    one line per step, with its time."""
    from wasinn.host import Runtime
    from wasinn.tools import im2tensor, visualize, write_tensor
    from wasinn.tools.models import ensure_model

    out.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_model(MODEL_ID, download_missing=download)
    photo = image or find_sample(model_dir, IMAGE)
    guest = find_guest(GUEST)
    step = _Steps(progress)

    tensor = im2tensor(photo, "512x896x3xfp32")
    write_tensor(tensor, out / "input.tensor")
    step.done(f"im2tensor {photo.name} -> input.tensor (512x896x3 f32, BGR, HWC)")

    # WASI will not follow links out of a mapped directory, so the model is mapped as its own dir.
    runtime = Runtime(dirs=[f".:{out}", f"/model:{model_dir}"])
    code = runtime.run(guest, [f"/model/{MODEL_ID}.xml", f"/model/{MODEL_ID}.bin", "input.tensor"])
    if code != 0:
        raise WasinnError(f"the guest {guest.name} exited with code {code}")
    step.done(f"wasinn run {guest.name} -> {OUTPUT_TENSOR}")

    picture = out / "road-segmentation.png"
    visualize(photo, out / OUTPUT_TENSOR, output_path=picture)
    step.done(f"visualize -> {picture}")
    shutil.copy(photo, out / photo.name)
    return picture


class _Steps:
    def __init__(self, progress: Callable[[str], object]) -> None:
        self._progress = progress
        self._last = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        self._progress(f"  {what}  ({now - self._last:.2f} s)")
        self._last = now
