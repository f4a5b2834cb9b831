"""The command line's spellings, parsed: ``--dir``, ``--env`` and ``--nn-preload``.

They mirror WasmEdge's options (spec §5) and are shared by ``wasinn run``, ``wasinn serve``
and the keyword arguments of :class:`wasinn.Runtime`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from wasinn.core import ConfigError, ExecutionTarget, GraphEncoding, Preload

# WasmEdge's alias: its AOT-compiled PyTorch variant is read by the same backend here.
_ENCODING_ALIASES = {"pytorchaoti": GraphEncoding.PYTORCH}


def parse_encoding(name: str) -> GraphEncoding:
    """An ``--nn-preload`` encoding spelling (case-insensitive, spec §5)."""
    key = name.lower()
    if key in _ENCODING_ALIASES:
        return _ENCODING_ALIASES[key]
    try:
        return GraphEncoding(key)
    except ValueError:
        spellings = ", ".join(m.value for m in GraphEncoding)
        raise ConfigError(f"unknown encoding {name!r}; expected one of: {spellings}") from None


def parse_target(name: str) -> ExecutionTarget:
    try:
        return ExecutionTarget(name.lower())
    except ValueError:
        raise ConfigError(f"unknown target {name!r}; expected one of: cpu, gpu, tpu, auto") from None


def parse_preload(text: str) -> Preload:
    """``NAME:ENCODING:TARGET:PATH[:PATH...]``, e.g. ``default:openvino:cpu:model.xml:model.bin``."""
    fields = text.split(":")
    if len(fields) < 4 or not all(fields[:3]) or not any(fields[3:]):
        raise ConfigError(
            f"bad --nn-preload {text!r}: expected NAME:ENCODING:TARGET:PATH[:PATH...], "
            "e.g. default:openvino:cpu:model.xml:model.bin"
        )
    name, encoding, target, *paths = fields
    return Preload(name, parse_encoding(encoding), parse_target(target), tuple(paths))


@dataclass(frozen=True)
class DirMapping:
    """A host directory visible to the guest, as WasmEdge's ``--dir GUEST:HOST[:readonly]``."""

    guest: str
    host: Path
    readonly: bool = False

    @classmethod
    def parse(cls, text: str) -> DirMapping:
        fields = text.split(":")
        readonly = len(fields) > 1 and fields[-1] == "readonly"
        if readonly:
            fields = fields[:-1]
        if len(fields) == 1:
            guest = host = fields[0]  # a bare PATH maps to itself
        elif len(fields) == 2:
            guest, host = fields
        else:
            raise ConfigError(f"bad --dir {text!r}: expected GUEST:HOST, HOST or GUEST:HOST:readonly")
        if not guest or not host:
            raise ConfigError(f"bad --dir {text!r}: expected GUEST:HOST, HOST or GUEST:HOST:readonly")
        return cls(guest, Path(host), readonly)

    def check(self) -> None:
        if not self.host.is_dir():
            problem = "does not exist" if not self.host.exists() else "is not a directory"
            raise ConfigError(f"--dir {self.guest}:{self.host}: the host path {problem}")


def parse_env(items: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """Environment variables for the guest, from a mapping or ``NAME=VALUE`` strings."""
    if isinstance(items, Mapping):
        return dict(items)
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"bad --env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env
