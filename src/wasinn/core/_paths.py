"""Where wasinn keeps its caches (compiled modules, downloaded models)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "WASINN_CACHE_DIR"


def user_cache_dir() -> Path:
    """``$WASINN_CACHE_DIR``, else ``$XDG_CACHE_HOME/wasinn``, else ``~/.cache/wasinn``."""
    if explicit := os.environ.get(CACHE_ENV):
        return Path(explicit).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg_cache and Path(xdg_cache).is_absolute():
        return Path(xdg_cache) / "wasinn"
    return Path.home() / ".cache" / "wasinn"
