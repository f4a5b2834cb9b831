"""``wasinn batch --ray``: road-segment a folder of pictures with Ray Data, a guest per picture.

Beside the server (:mod:`wasinn.serve.ray`), whose Ray connection and demo route it shares:
each Ray Data actor holds one runtime with the road model and runs the demo's guest through
the same pool a served request uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasinn.core import ConfigError
from wasinn.serve.config import ServeConfig
from wasinn.serve.ray import _ray, connect
from wasinn.serve.server import ROAD_ROUTE, with_demo

PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class Segmenter:
    """A Ray Data worker: one runtime with the road model, one nn-pipe guest run per picture."""

    def __init__(self, guest: str, preload: tuple[str, ...], out: str) -> None:
        from wasinn.host import Runtime
        from wasinn.serve.pool import GuestPool

        self.pool = GuestPool(Runtime(preload=preload), Path(guest), 1, name="batch")
        self.out = Path(out)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from wasinn.serve.page import segment_photo

        path = Path(row["path"])
        png, shares, seconds = segment_photo(self.pool, path.read_bytes(), ROAD_ROUTE)
        (self.out / f"{path.stem}.png").write_bytes(png)
        return {"name": path.name, "guest_ms": round(seconds * 1000, 1), **shares}


def pictures_in(directory: Path) -> list[Path]:
    found = sorted(p for p in directory.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    if not found:
        raise ConfigError(f"{directory} holds no pictures ({', '.join(sorted(PICTURE_SUFFIXES))})")
    return found


def batch_segment(
    directory: Path,
    out: Path,
    *,
    address: str | None = None,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Segment every picture in ``directory`` on Ray Data: ``out``/NAME.png and ``out``/shares.jsonl.

    ``workers`` Ray Data actors each load the model once and segment their share of the
    pictures.
    """
    if workers < 1:
        raise ConfigError(f"a batch needs at least one worker, got {workers}")
    ray = _ray()
    pictures = pictures_in(directory)
    out.mkdir(parents=True, exist_ok=True)
    cluster = connect(address)
    if progress is not None:
        progress(f"Ray cluster at {cluster}, {workers} worker(s)")
    # The model and guest are found here, on the driver; workers get their paths.
    config = with_demo(ServeConfig(), download=False)
    settings = {"guest": str(config.routes[ROAD_ROUTE]), "preload": config.preload, "out": str(out.resolve())}
    dataset = ray.data.from_items([{"path": str(p.resolve())} for p in pictures])
    pool = ray.data.ActorPoolStrategy(size=workers)
    rows = dataset.map(Segmenter, fn_constructor_kwargs=settings, compute=pool).take_all()
    rows.sort(key=lambda row: str(row["name"]))
    with open(out / "shares.jsonl", "w") as lines:
        for row in rows:
            lines.write(json.dumps(row) + "\n")
            if progress is not None:
                progress(f"{row['name']}: road {row['road']:.1f} %")
    return len(rows)
