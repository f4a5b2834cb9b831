"""``wasinn serve --demo``: a page where a photo becomes a road-segmentation overlay.

The browser posts the photo's bytes to ``/demo/segment``; the host turns it into the
model's tensor (im2tensor), the request runs the same guest route every client uses
(nn-pipe with the preloaded road-segmentation model, ``--argmax 4`` for the label map), and
the host draws the classes over the photo (visualize's colours and blend) and returns the
picture with each class's share of the pixels.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from wasinn.serve.app import GuestRoute, HTTPFailure, RouteHandler, ServerState, guest_status, read_body
from wasinn.serve.app import run_guest as run_route_guest
from wasinn.serve.pool import GuestPool

HEIGHT, WIDTH = 512, 896
CLASSES = 4
# The guest returns the u8 label map (argmax over the classes), not the 16x larger scores.
GUEST_ARGS = ["--dims", f"1x{HEIGHT}x{WIDTH}x3", "--type", "f32", "--argmax", str(CLASSES)]
Pixels = np.ndarray[Any, np.dtype[np.uint8]]


def photo_tensor(photo: bytes) -> tuple[bytes, Pixels]:
    """The model's input bytes (512x896 BGR f32, as the seed's im2tensor) and the RGB pixels."""
    from PIL import Image, UnidentifiedImageError

    from wasinn.tools.im2tensor import im2tensor, image_pixels, load_image, resize_bilinear

    try:
        with Image.open(io.BytesIO(photo)) as opened:
            opened.load()
            picture = load_image(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise HTTPFailure(400, f"the body is not a picture Pillow can read: {err}") from None
    tensor = im2tensor(picture, f"{HEIGHT}x{WIDTH}x3xfp32")
    rgb = resize_bilinear(image_pixels(picture, 3, "rgb"), HEIGHT, WIDTH)
    return tensor.tobytes(), rgb


def overlay_picture(labels: bytes | memoryview, rgb: Pixels) -> tuple[bytes, dict[str, float]]:
    """PNG of the classes blended over the photo, and each class's share in percent."""
    from PIL import Image

    from wasinn.tools.visualize import class_shares, colorize, overlay

    if len(labels) != HEIGHT * WIDTH:
        raise HTTPFailure(
            500, f"the guest wrote {len(labels)} bytes; a 512x896 label map is {HEIGHT * WIDTH}"
        )
    label_map = np.frombuffer(labels, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    if label_map.max() >= CLASSES:
        raise HTTPFailure(500, f"the guest wrote class {label_map.max()}; road segmentation has {CLASSES}")
    blended = overlay(rgb, colorize(label_map))
    png = io.BytesIO()
    Image.fromarray(blended).save(png, format="PNG")
    return png.getvalue(), class_shares(label_map)


def segment_photo(pool: GuestPool, photo: bytes, model: str) -> tuple[bytes, dict[str, float], float]:
    """Outside a server (batch jobs): the overlay PNG, class shares and guest seconds of a photo."""
    tensor, rgb = photo_tensor(photo)
    result = pool.run(tensor, ["--name", model, *GUEST_ARGS])
    guest_status(result)
    png, shares = overlay_picture(result.stdout, rgb)
    return png, shares, result.seconds


@dataclass
class SegmentRoute:
    """``POST /demo/segment``: a photo in, ``{picture, shares, guest_ms, total_ms}`` out."""

    road: GuestRoute
    state: ServerState
    path: str = "/demo/segment"
    methods: Sequence[str] = ("POST",)
    metric_name: str = "demo-segment"

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        photo = await read_body(request, self.state)
        if not photo:
            raise HTTPFailure(400, "the body is empty; post the photo's bytes")
        tensor, rgb = await anyio.to_thread.run_sync(photo_tensor, photo)
        args = ["--name", self.road.name, *GUEST_ARGS]
        result = await run_route_guest(self.state, self.road.pool, tensor, args, request=request)
        guest_status(result)
        png, shares = await anyio.to_thread.run_sync(overlay_picture, result.stdout, rgb)
        return JSONResponse(
            {
                "picture": "data:image/png;base64," + base64.b64encode(png).decode(),
                "shares": {name: round(share, 2) for name, share in shares.items()},
                "guest_ms": round(result.seconds * 1000, 1),
                "total_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )


@dataclass
class PageRoute:
    path: str = "/"
    methods: Sequence[str] = ("GET",)
    metric_name: str = "demo-page"

    async def handle(self, request: Request) -> Response:
        return HTMLResponse(PAGE)


def demo_handlers(road: GuestRoute, state: ServerState) -> list[RouteHandler]:
    return [PageRoute(), SegmentRoute(road, state)]


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wasinn road segmentation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 960px; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  p.lead { color: #555; margin-top: 0; }
  #picture { max-width: 100%; border-radius: 6px; display: block; margin-top: 1rem; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td, th { padding: .25rem .8rem; text-align: left; }
  td.share { text-align: right; font-variant-numeric: tabular-nums; }
  .swatch { display: inline-block; width: 1em; height: 1em; vertical-align: -2px; margin-right: .4em; }
  #status { margin-top: .8rem; color: #555; }
  #status.error { color: #b00020; }
</style>
</head>
<body>
<h1>Road segmentation in WebAssembly</h1>
<p class="lead">The photo is run through a WASI-NN guest (nn-pipe) on wasinn, with the
road-segmentation-adas-0001 model preloaded once for every request.</p>
<form id="form">
  <input id="photo" type="file" accept="image/*" required>
  <button id="segment" type="submit">Segment</button>
</form>
<div id="status"></div>
<img id="picture" alt="" hidden>
<table id="shares" hidden><thead><tr><th>class</th><th>share of pixels</th></tr></thead>
<tbody></tbody></table>
<script>
const COLORS = {BG: "rgb(68,1,84)", road: "rgb(48,103,141)", curb: "rgb(53,183,120)",
                mark: "rgb(199,216,52)"};
const form = document.getElementById("form");
const status = document.getElementById("status");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("photo").files[0];
  if (!file) return;
  status.className = ""; status.textContent = "segmenting " + file.name + " …";
  const response = await fetch("demo/segment", {method: "POST", body: file,
                                                headers: {"content-type": file.type || "image/jpeg"}});
  const result = await response.json();
  if (!response.ok) {
    status.className = "error"; status.textContent = "error: " + result.error; return;
  }
  const picture = document.getElementById("picture");
  picture.src = result.picture; picture.alt = "segmentation of " + file.name; picture.hidden = false;
  const body = document.querySelector("#shares tbody");
  body.replaceChildren();
  for (const [name, share] of Object.entries(result.shares)) {
    const row = body.insertRow();
    row.dataset.cls = name;
    const swatch = '<span class="swatch" style="background:' + COLORS[name] + '"></span>';
    row.insertCell().innerHTML = swatch + name;
    const cell = row.insertCell(); cell.className = "share"; cell.textContent = share.toFixed(2) + " %";
  }
  document.getElementById("shares").hidden = false;
  status.textContent = "done: guest " + result.guest_ms + " ms, whole request " + result.total_ms + " ms";
  status.dataset.done = "1";
});
</script>
</body>
</html>
"""
