"""Integer handles for guest-visible objects: counted from 0, only up, never reused (spec §4.0)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from wasinn.core import Lifecycle

MAX_HANDLE = 0xFFFFFFFF

T = TypeVar("T")


class HandleTable(Generic[T]):
    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._entries: dict[int, T] = {}
        self._next = 0

    def add(self, entry: T) -> int:
        if self._next >= MAX_HANDLE:
            raise Lifecycle.HANDLE_SPACE.error(f"{self._kind} handle space exhausted")
        handle = self._next
        self._next += 1
        self._entries[handle] = entry
        return handle

    def get(self, handle: int) -> T:
        try:
            return self._entries[handle]
        except KeyError:
            raise Lifecycle.UNKNOWN_HANDLE.error(f"unknown {self._kind} handle {handle}") from None

    def pop(self, handle: int) -> T:
        entry = self.get(handle)
        del self._entries[handle]
        return entry

    def values(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
