"""Safe first use of a framework when many threads arrive at once.

Native bindings (pybind11 and the like) keep function-local C++ statics that are built on
their first call, some of which touch Python objects. When two threads make that first call
together, one can hold the static's guard (``__cxa_guard_acquire``) and wait for the GIL
while the other holds the GIL and waits for the guard: both wait forever (OpenVINO's
``available_devices``, ``read_model`` and ``to_dtype`` on a cold ``wasinn serve``, issue 16).
Python's own import lock does not help: the statics are built by calls, not imports.

So every framework has one :class:`FirstUse` gate (``first_use(name)``):

- model loads and context creation always go through it one at a time (``serial``): they
  are where most statics are built, and each is rare next to inference;
- inputs, compute and outputs go through it one at a time only until the framework has
  finished one compute (``until_warm``); after that every static its binding needed for a
  whole inference exists, and inference runs in parallel as before.

The gate is per framework, not per model: a second model's first compute runs in parallel
with the first model's, since the binding's statics are the framework's. A thread waits for
the gate at most :data:`WAIT_SECONDS` and then gets :class:`~wasinn.core.Busy` (errno 6): a
first use stuck in native code must not take every later caller with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from wasinn.core._errors import Busy

# Longer than any first load or compute we know of (a multi-GB GGUF, a first TensorFlow
# graph); past it, something is stuck, and the caller hears so instead of waiting forever.
WAIT_SECONDS = 300.0


class FirstUse:
    """One framework's gate; see the module's docstring."""

    def __init__(self, framework: str, wait_seconds: float = WAIT_SECONDS) -> None:
        self.framework = framework
        self.wait_seconds = wait_seconds
        self._lock = threading.RLock()  # re-entrant: autodetect's load calls the real backend's
        self._warm = False

    @property
    def warm(self) -> bool:
        """True once one compute of this framework has finished."""
        return self._warm

    @contextmanager
    def serial(self) -> Iterator[None]:
        """One thread at a time (loads, context creation)."""
        with self._held():
            yield

    @contextmanager
    def until_warm(self) -> Iterator[None]:
        """One thread at a time until :meth:`mark_warm`; then no lock at all."""
        if self._warm:
            yield
            return
        with self._held():
            yield

    @contextmanager
    def _held(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self.wait_seconds):
            raise Busy(
                f"{self.framework}: its first use on another thread has not finished "
                f"in {self.wait_seconds:.0f} s"
            )
        try:
            yield
        finally:
            self._lock.release()

    def mark_warm(self) -> None:
        self._warm = True


_gates: dict[str, FirstUse] = {}
_gates_lock = threading.Lock()


def first_use(framework: str) -> FirstUse:
    """The process-wide gate of ``framework`` (a backend's :attr:`Backend.framework`)."""
    with _gates_lock:
        gate = _gates.get(framework)
        if gate is None:
            gate = _gates[framework] = FirstUse(framework)
        return gate
