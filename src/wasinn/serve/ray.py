"""Scale-out on Ray: the same routes as a Ray Serve deployment, and batch segmentation on Ray Data.

Each Serve replica (and each Ray Data worker) builds its own :class:`~wasinn.runtime.Runtime`
from the :class:`~wasinn.serve.server.ServeConfig`: compiled modules and loaded models do not
travel between processes, the config does. ``ray`` is imported only here (the ``ray`` extra).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasinn.core import ConfigError
from wasinn.faults import keep_fault_handlers
from wasinn.serve.server import ROAD_ROUTE, ServeConfig, build_app, with_demo

PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def _ray() -> Any:
    try:
        with keep_fault_handlers():
            import ray
    except ImportError:
        raise ConfigError("ray is not installed; pip install 'wasinn[ray]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local one addressed as 127.0.0.1.

    Ray's own gRPC servers still listen on every interface (docs/serving.md).
    """
    ray = _ray()
    local = {"_node_ip_address": "127.0.0.1", "include_dashboard": False} if address is None else {}
    with keep_fault_handlers():  # Ray's crash handlers would turn every guest trap into a host crash
        ray.init(address=address, ignore_reinit_error=True, **local)


def deployment(config: ServeConfig, *, replicas: int = 1) -> Any:
    """A bound Ray Serve application serving ``config``'s routes (and page, with ``demo``)."""
    _ray()
    from ray import serve

    def app_builder() -> Any:
        return build_app(config)

    class WasinnServe:
        pass

    wrapped = serve.ingress(app_builder)(WasinnServe)
    options = {"name": "wasinn", "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0}}
    return serve.deployment(**options)(wrapped).bind()


def serve_on_ray(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    replicas: int = 1,
    until: threading.Event | None = None,
) -> None:
    """Run ``config`` on Ray Serve at http://host:port/ until SIGTERM/SIGINT (or ``until`` is set)."""
    _ray()
    from ray import serve

    connect(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(config, replicas=replicas), name="wasinn", route_prefix="/")
    stop = until or threading.Event()
    if until is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        with keep_fault_handlers():
            serve.shutdown()


class Segmenter:
    """A Ray Data worker: one runtime with the road model, one nn-pipe guest run per picture."""

    def __init__(self, guest: str, preload: tuple[str, ...], out: str) -> None:
        from wasinn.runtime import Runtime
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
    """Segment every picture in ``directory`` on Ray Data: ``out``/NAME.png and ``out``/shares.jsonl."""
    ray = _ray()
    pictures = pictures_in(directory)
    out.mkdir(parents=True, exist_ok=True)
    with keep_fault_handlers():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    # The model and guest are found here, on the driver; workers get their paths.
    config = with_demo(ServeConfig(), download=False)
    settings = {"guest": str(config.routes[ROAD_ROUTE]), "preload": config.preload, "out": str(out.resolve())}
    dataset = ray.data.from_items([{"path": str(p.resolve())} for p in pictures])
    rows = dataset.map(Segmenter, fn_constructor_kwargs=settings, concurrency=workers).take_all()
    rows.sort(key=lambda row: str(row["name"]))
    with open(out / "shares.jsonl", "w") as lines:
        for row in rows:
            lines.write(json.dumps(row) + "\n")
            if progress is not None:
                progress(f"{row['name']}: road {row['road']:.1f} %")
    return len(rows)
