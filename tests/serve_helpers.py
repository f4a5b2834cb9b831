"""Starting ``wasinn serve`` as a person does: a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
from pathlib import Path

from wasinn.serve.loadtest import free_port, stop_server
from wasinn.serve.loadtest import start_server as _start

__all__ = ["free_port", "start_server", "stop_server"]


def start_server(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``wasinn serve`` in a subprocess on a free loopback port, once /healthz answers (120 s)."""
    return _start(*args, env=env, wait=120, log=log)
