"""The files a guest names inside its builders, turned into host paths through its ``--dir``
mappings (``ModelFiles.guest_paths``). Imported without the frameworks: the table in
``wasinn.backends`` names these functions.

WasmEdge opens such paths on the host as given (relative to its working directory), so a guest
could make the host read any file; here a path outside the guest's mappings is errno 1, and a
guest run with ``--dir .:.`` in the model's directory (as WasmEdge's examples are) sees no
difference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

Resolve = Callable[[str], Path]

# Keys of Piper's run config that name files (genai-tts spec §4.1).
PIPER_PATH_KEYS = ("model", "config", "espeak_data")


def genai_model_directory(builders: Sequence[bytes], resolve: Resolve) -> list[bytes]:
    """OpenVINO GenAI: builder 1 is the model directory."""
    out = [bytes(b) for b in builders]
    if len(out) >= 2:
        out[1] = os.fsencode(resolve(os.fsdecode(out[1])))
    return out


def piper_run_config(builders: Sequence[bytes], resolve: Resolve) -> list[bytes]:
    """Piper: the run config's ``model``, ``config`` and ``espeak_data``. A config that does not
    parse is passed on unchanged: the backend refuses it with the same parse (errno 2 or 1)."""
    out = [bytes(b) for b in builders]
    if not out:
        return out
    try:
        fields = json.loads(out[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return out
    if not isinstance(fields, dict):
        return out
    for key in PIPER_PATH_KEYS:
        value = fields.get(key)
        if isinstance(value, str):
            fields[key] = str(resolve(value))
    out[0] = json.dumps(fields).encode()
    return out
