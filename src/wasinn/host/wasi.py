"""A guest's WASI view: argv, environment, preopened directories and standard streams."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import wasmtime

from wasinn.abi._ffi import set_stdin_bytes
from wasinn.host.options import DirMapping

# A file for a guest output stream, or a callable given each chunk the guest writes.
OutputStream = str | Path | Callable[[bytes], object]
# A file for a guest's stdin, or the bytes themselves (a server's request body: no file).
InputStream = str | Path | bytes
Stdio = tuple[InputStream | None, OutputStream | None, OutputStream | None]


def wasi_config(
    argv: Sequence[str], env: Mapping[str, str], dirs: Sequence[DirMapping], stdio: Stdio
) -> wasmtime.WasiConfig:
    """WASI for one guest (preview 1 for modules, preview 2 for components); a ``None``
    stream is this process's own."""
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(argv)
    wasi.env = list(env.items())
    for mapping in dirs:
        wasi.preopen_dir(str(mapping.host), mapping.guest, not mapping.readonly)
    stdin, stdout, stderr = stdio
    if stdin is None:
        wasi.inherit_stdin()
    elif isinstance(stdin, bytes):
        set_stdin_bytes(wasi, stdin)
    else:
        wasi.stdin_file = str(stdin)
    _set_output(wasi, "stdout", stdout)
    _set_output(wasi, "stderr", stderr)
    return wasi


def _set_output(wasi: wasmtime.WasiConfig, name: str, stream: OutputStream | None) -> None:
    """``stdout``/``stderr``: inherited, a callable given each chunk, or a file."""
    if stream is None:
        getattr(wasi, f"inherit_{name}")()
    elif callable(stream):
        setattr(wasi, f"{name}_custom", stream)
    else:
        setattr(wasi, f"{name}_file", str(stream))
