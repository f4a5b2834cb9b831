"""What the warm host keeps between runs: compiled guests and loaded models, LRU.

Models are evicted least recently used first once their bytes pass the budget, but never
while a run uses them. A file is known by path, size, mtime and inode (a rewritten file
is a new entry); model bytes a guest hands to ``load`` by their SHA-256.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
BUDGET_ENV = "WASINN_HOST_MODEL_BUDGET_MB"
DEFAULT_BUDGET = 4096 << 20


def file_identity(path: str | os.PathLike[str]) -> tuple[str, int, int, int] | None:
    """(absolute path, size, mtime_ns, inode), or None when it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), info.st_size, info.st_mtime_ns, info.st_ino)


def budget_from_env() -> int:
    text = os.environ.get(BUDGET_ENV)
    return int(text) << 20 if text and text.isdecimal() else DEFAULT_BUDGET


@dataclass(eq=False)
class _Entry(Generic[T]):
    value: T
    size: int
    release: Callable[[T], object]
    users: int = 0


class LruCache(Generic[T]):
    """Values built once per key, shared while in use, evicted LRU past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def acquire(self, key: Hashable, build: Callable[[], tuple[T, int]], release: Callable[[T], object]) -> T:
        """The value of ``key`` (built by ``build`` → (value, bytes) on a miss), in use until
        :meth:`release_key`."""
        with self._lock:
            entry = self._use(key)
            if entry is not None:
                return entry.value
            gate = self._building.setdefault(key, threading.Lock())
        with gate:  # one build per key; a second caller waits for the first
            with self._lock:
                entry = self._use(key)
                if entry is not None:
                    return entry.value
            try:
                value, size = build()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self.misses += 1
                self._entries[key] = _Entry(value, size, release, users=1)
                victims = self._evict()
        for victim in victims:
            victim.release(victim.value)
        return value

    def _use(self, key: Hashable) -> _Entry[T] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            entry.users += 1
            self._entries.move_to_end(key)
        return entry

    def release_key(self, key: Hashable) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users -= 1
            victims = self._evict()
        for victim in victims:
            victim.release(victim.value)

    def _evict(self) -> list[_Entry[T]]:
        """Entries to release (the caller does, outside the lock) to get under the budget."""
        total = sum(entry.size for entry in self._entries.values())
        victims = []
        for key in list(self._entries):
            if total <= self.budget:
                break
            entry = self._entries[key]
            if entry.users == 0:
                del self._entries[key]
                total -= entry.size
                victims.append(entry)
        return victims

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(entry.size for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
        for entry in entries:
            entry.release(entry.value)
