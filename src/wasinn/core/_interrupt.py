"""Stopping one guest run from another thread: its client left, or the server is going down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from wasinn.core._errors import GuestCancelled


class Interruption:
    """Set once, from any thread, to stop the guest run it was given to.

    The guest's wasm code sees it at its next epoch tick (10 ms; ``Runtime.instantiate(
    interruption=...)``), its WASI-NN calls at their next ``compute`` or ``compute_single``
    (so a GGML stream stops between two tokens), and a native ``compute`` waiting in
    :func:`~wasinn.core.run_within` at once (the framework is then asked to cancel). A host
    call that ignores it, like a framework that ignores ``cancel()``, runs on to its end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._wakers: set[threading.Event] = set()

    @property
    def reason(self) -> str | None:
        """Why the guest must stop; None while it may run."""
        return self._reason

    def interrupt(self, reason: str) -> None:
        """Stop the guest; the first reason given is the one it reports."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            wakers = list(self._wakers)
        for event in wakers:
            event.set()

    def check(self) -> None:
        """Raise :class:`GuestCancelled` once interrupted."""
        reason = self._reason
        if reason is not None:
            raise GuestCancelled(reason)

    @contextmanager
    def waking(self, event: threading.Event) -> Iterator[None]:
        """While inside, an interruption also sets ``event`` (a thread waiting on it wakes)."""
        with self._lock:
            self._wakers.add(event)
            if self._reason is not None:
                event.set()
        try:
            yield
        finally:
            with self._lock:
                self._wakers.discard(event)
