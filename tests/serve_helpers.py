"""Starting ``wasinn serve`` as a person does: a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

from wasinn.bench.loadtest import free_port, stop_server
from wasinn.bench.loadtest import start_server as _start
from wasinn.serve.config import ServeConfig

__all__ = ["free_port", "serving_on_ray", "start_server", "stop_server"]


def start_server(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``wasinn serve`` in a subprocess on a free loopback port, once /healthz answers (120 s)."""
    return _start(*args, env=env, wait=120, log=log)


@contextlib.contextmanager
def serving_on_ray(config: ServeConfig, replicas: int) -> Iterator[str]:
    """``serve_on_ray`` in a thread (a local cluster must be up) until the block ends; yields
    the base URL once it is ready (every replica running). Its failure fails the caller."""
    from wasinn.serve.ray import serve_on_ray

    port = free_port()
    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            serve_on_ray(config, port=port, until=stop, ready=ready, replicas=replicas)
        except BaseException as err:  # noqa: BLE001  (reported in the caller's thread below)
            failures.append(err)

    server = threading.Thread(target=run)
    server.start()
    try:
        while not ready.wait(0.5):
            assert server.is_alive() and not failures, "".join(traceback.format_exception(*failures[:1]))
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.join(timeout=120)
    assert not server.is_alive() and not failures, "".join(traceback.format_exception(*failures[:1]))
