"""What WasmEdge's non-WASI-NN plug-in modules share: i32-only imports, errno results,
bounds checks, session tables, and guest paths resolved through the ``--dir`` mappings.

See shared spec ``wasmedge-tensorflow.md`` §1.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Generic, TypeVar

import wasmtime

from wasinn.abi._errors import answer
from wasinn.abi._fastcall import define_i32_func
from wasinn.abi.ephemeral import U32, GuestMemory
from wasinn.core import UNGATED, Errno, InvalidArgument, NNError, first_use

log = logging.getLogger("wasinn.plugin")

T = TypeVar("T")


class PluginModule:
    """One host import module of one instance: every import takes u32s and returns an errno."""

    NAME: ClassVar[str]
    SIGNATURES: ClassVar[dict[str, int]]  # import name → number of i32 parameters
    OUT_OF_BOUNDS: ClassVar[Errno]  # the errno of a guest range past the memory (and of no memory)
    # The errno of a failed framework call, and so of an unexpected exception (abi/_errors.py):
    # WasmEdge's TF and TFLite plug-ins answer every failed run 4 (named BUSY in their headers,
    # meaning "the work failed"; they never return 5), its image plug-in 1 (spec
    # wasmedge-tensorflow.md §1, §9.2 "any exception → 4").
    FAILURE: ClassVar[Errno] = Errno.BUSY
    # The native library behind the module, whose first-use gate its calls pass through
    # (wasinn.core._first_use): sessions are made one at a time, and every call is one at a
    # time until a run has finished. "" for a module that calls no framework.
    FRAMEWORK: ClassVar[str] = ""
    CREATING_CALLS: ClassVar[frozenset[str]] = frozenset({"create_session", "create_session_saved_model"})
    WARMING_CALL: ClassVar[str] = "run_session"

    def __init__(self, park: Callable[[BaseException], None]) -> None:
        self._park = park
        self._memory: GuestMemory | None = None
        self._callbacks: list[object] = []  # native callbacks the linker points at

    def define(self, linker: wasmtime.Linker) -> None:
        for name, arity in self.SIGNATURES.items():
            implementation = getattr(self, "_" + name)
            self._callbacks.append(
                define_i32_func(
                    linker, self.NAME, name, arity, self._errno_of(name, implementation), self._park
                )
            )

    def attach(self, store: wasmtime.Store, memory: wasmtime.Memory | None) -> None:
        self._memory = GuestMemory(store, memory) if memory is not None else None

    def close(self) -> None:
        """Release what the guest left open."""

    def _errno_of(self, name: str, implementation: Callable[..., None]) -> Callable[..., int]:
        gate = first_use(self.FRAMEWORK) if self.FRAMEWORK else UNGATED
        enter = gate.serial if name in self.CREATING_CALLS else gate.until_warm
        warms = name == self.WARMING_CALL

        def call(*params: int) -> int:
            try:
                with enter():
                    implementation(*[param & U32 for param in params])  # the ABI reads every i32 as u32
                    if warms:
                        gate.mark_warm()
            except NNError as err:
                log.warning("%s.%s: %s", self.NAME, name, err)
                return int(err.errno)
            except Exception as err:  # a stop re-raises; anything else is FAILURE (abi/_errors.py)
                return int(answer(err, self.NAME, name, self.FAILURE).errno)
            return int(Errno.SUCCESS)

        return call

    def _mem(self) -> memoryview:
        if self._memory is None:
            raise NNError(f"{self.NAME}: the guest exports no linear memory", self.OUT_OF_BOUNDS)
        return self._memory.view()

    def _check(self, memory: memoryview, ptr: int, length: int, what: str) -> None:
        """``ptr + length <= mem_size``; a zero-length range passes wherever it points."""
        if length and ptr + length > memory.nbytes:
            raise NNError(
                f"{what} (pointer {ptr:#x}, {length} bytes) lies outside guest memory "
                f"({memory.nbytes} bytes)",
                self.OUT_OF_BOUNDS,
            )


class SessionTable(Generic[T]):
    """Ids 0, 1, 2 …; a deleted id is reused before the table grows, the lowest first."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._entries: dict[int, T] = {}

    def add(self, entry: T) -> int:
        handle = next(i for i in range(len(self._entries) + 1) if i not in self._entries)
        self._entries[handle] = entry
        return handle

    def get(self, handle: int) -> T:
        entry = self._entries.get(handle)
        if entry is None:
            raise InvalidArgument(f"{self._kind}: invalid session id {handle}")
        return entry

    def pop(self, handle: int) -> T | None:
        return self._entries.pop(handle, None)

    def drain(self) -> Iterator[T]:
        while self._entries:
            yield self._entries.pop(next(iter(self._entries)))


def import_backend(module: str, requirement: str, extra: str) -> ModuleType:
    """The framework-touching module, imported on first use; errno 1 when its framework is absent."""
    if importlib.util.find_spec(requirement) is None:
        raise InvalidArgument(f"the '{requirement}' package is not installed: pip install 'wasinn[{extra}]'")
    return importlib.import_module(module)


def resolve_guest_path(mappings: Sequence[tuple[str, Path]], guest_path: str) -> Path:
    """The host path of ``guest_path`` through the ``--dir`` mappings, as WASI would open it.

    The longest mapping whose guest name prefixes the path wins; ``.`` maps relative paths.
    ``..`` that climbs out of a mapping, or a symlink that leads out of it, is errno 1, so a
    guest reaches no host file it could not open through WASI.
    """
    normal = posixpath.normpath(guest_path) if guest_path else ""
    best: tuple[int, Path, str] | None = None
    for guest, host in mappings:
        prefix = posixpath.normpath(guest)
        if prefix == ".":
            if normal and not normal.startswith("/") and normal != ".." and not normal.startswith("../"):
                rest = "" if normal == "." else normal
                candidate = (0, host, rest)
            else:
                continue
        elif normal == prefix or normal.startswith(prefix.rstrip("/") + "/"):
            candidate = (len(prefix), host, normal[len(prefix) :].lstrip("/"))
        else:
            continue
        if best is None or candidate[0] > best[0]:
            best = candidate
    if best is None:
        raise InvalidArgument(f"path {guest_path!r} is not inside any --dir mapping")
    _, host, rest = best
    root = os.path.realpath(host)
    target = os.path.realpath(os.path.join(root, rest))
    if os.path.commonpath([root, target]) != root:
        raise InvalidArgument(f"path {guest_path!r} leads outside its --dir mapping")
    return Path(target)
