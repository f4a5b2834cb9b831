"""One engine per process, and compiled modules and components cached on disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component

from wasinn.abi._ffi import use_pooling_allocator
from wasinn.core import ModuleError

# Bump when the engine configuration below changes: it is part of the cache key.
ENGINE_FINGERPRINT = "cranelift-epoch-v2"
WASM_MAGIC = b"\0asm"
COMPONENT_LAYER = b"\x01\x00"  # bytes 6-7 of the header: 0 for a core module, 1 for a component

_lock = threading.Lock()
_versions: dict[str, str] = {}
_engines: dict[bool, wasmtime.Engine] = {}
_pooling: tuple[int, int, int] | None = None  # see pool_instances


def wasmtime_version() -> str:
    with _lock:
        if "wasmtime" not in _versions:
            _versions["wasmtime"] = metadata.version("wasmtime")
        return _versions["wasmtime"]


def shared_engine(*, fuel: bool = False) -> wasmtime.Engine:
    """One engine per process (and fuel setting): compiled modules belong to their engine.

    Epoch interruption is always on, so a time limit costs nothing to switch on; fuel
    metering slows every guest, so it has its own engine, used only with a gas limit.
    """
    with _lock:
        engine = _engines.get(fuel)
        if engine is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            if _pooling is not None:
                instances, keep_resident, warm_slots = _pooling
                use_pooling_allocator(
                    config, instances=instances, keep_resident=keep_resident, warm_slots=warm_slots
                )
            engine = _engines[fuel] = wasmtime.Engine(config)
        return engine


def pool_instances(instances: int, keep_resident: int, warm_slots: int) -> bool:
    """Make this process's engines with wasmtime's pooling allocator (before the first is
    made): at most ``instances`` instances (and memories, tables) at once, and the first
    ``keep_resident`` bytes of each memory slot kept mapped for the next instance, in at most
    ``warm_slots`` idle slots (so at most warm_slots × keep_resident bytes stay resident). For
    a long-lived process whose concurrency is bounded, the warm host: runs that read or write
    megabytes through WASI save their page faults (mobilenet-raw's 14 MB model: 8 ms a run).
    False, and nothing changes, once an engine exists (a daemon made inside a process that
    already runs guests, as a test does: its engine stays as it is)."""
    global _pooling
    with _lock:
        if _engines:
            return False
        _pooling = (instances, keep_resident, warm_slots)
        return True


def first_line(err: BaseException) -> str:
    """The informative line of a wasmtime error: its cause, not the backtrace header."""
    text = str(err).strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1].strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def is_component(path: str | Path) -> bool:
    """Whether ``path`` holds a component (rather than a core module), by its 8-byte header."""
    try:
        with open(path, "rb") as file:
            header = file.read(8)
    except OSError:
        return False
    return header[:4] == WASM_MAGIC and header[6:8] == COMPONENT_LAYER


class ModuleCache:
    """Compiled modules serialized under a cache directory, keyed by content and engine."""

    kind = "module"

    def __init__(self, engine: wasmtime.Engine, directory: Path | None, fingerprint: str = "") -> None:
        self.engine = engine
        self.directory = directory
        self.fingerprint = fingerprint  # what else about the engine changes compiled code

    def load(self, path: Path) -> Any:
        try:
            wasm = path.read_bytes()
        except OSError as err:
            raise ModuleError(f"cannot read {path}: {err.strerror or err}") from None
        if self.directory is None:
            return self._compile(path, wasm)
        cached = self.directory / f"{self._key(wasm)}.cwasm"
        if cached.is_file():
            try:
                return self._deserialize(cached)
            except wasmtime.WasmtimeError:
                pass  # stale or damaged: compile again and overwrite
        compiled = self._compile(path, wasm)
        self._store(cached, compiled)
        return compiled

    def sibling(self, cls: type[ModuleCache]) -> ModuleCache:
        """A cache of another kind in the same directory, with the same engine and key."""
        return cls(self.engine, self.directory, self.fingerprint)

    def _deserialize(self, cached: Path) -> Any:
        return wasmtime.Module.deserialize_file(self.engine, str(cached))

    def _compile(self, path: Path, wasm: bytes) -> Any:
        try:
            return wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "invalid module"
            raise ModuleError(f"{path} is not a valid WebAssembly module: {reason}") from None

    def _key(self, wasm: bytes) -> str:
        digest = hashlib.sha256(wasm)
        digest.update(f"\0{wasmtime_version()}\0{ENGINE_FINGERPRINT}\0{self.fingerprint}".encode())
        return digest.hexdigest()

    @staticmethod
    def _store(target: Path, compiled: Any) -> None:
        # A cache that cannot be written only costs speed, never the run.
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                file.write(compiled.serialize())
            os.replace(temporary, target)
        except OSError:
            pass


class ComponentCache(ModuleCache):
    """Compiled components, serialized like modules and keyed by content hash."""

    kind = "component"

    def _deserialize(self, cached: Path) -> component.Component:
        return component.Component.deserialize_file(self.engine, str(cached))

    def _compile(self, path: Path, wasm: bytes) -> component.Component:
        try:
            return component.Component(self.engine, wasm)
        except wasmtime.WasmtimeError as err:
            raise ModuleError(f"{path} is not a valid WebAssembly component: {first_line(err)}") from None
