"""One policy for what a host call raised, shared by every front-end (docs/architecture.md,
"Unexpected exceptions in host calls").

- An :class:`~wasinn.core.NNError` is an answer: the guest gets its errno (WIT: the
  ``error-code`` of that errno).
- A *stop* ends the guest, never answered: a :class:`~wasinn.core.GuestTrap` (limits,
  :class:`~wasinn.core.GuestCancelled`), :class:`~wasinn.core.GuestExit`, and every
  ``BaseException`` that is no ``Exception`` (``KeyboardInterrupt``, ``SystemExit``), which
  the front-ends never catch.
- Anything else is *unexpected* (a framework exception a backend let through, or a wasinn
  bug): the guest gets its front-end's failure code, the one its spec gives a failed
  framework call (legacy ``runtime_error`` 5, WIT ``runtime-error``, ``wasmedge_tensorflow``
  and ``wasmedge_tensorflowlite`` 4, ``wasmedge_image`` 1), the traceback is logged on the
  ``wasinn`` logger and the exception is counted. The guest is not trapped for it, and the
  host stays usable: one guest's bad input must not look like a crash, and a server must not
  lose the instance's handles to it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from wasinn.core import Errno, GuestExit, GuestTrap, NNError

log = logging.getLogger("wasinn")

# What stops a guest instead of answering it (BaseExceptions are never caught at all).
STOPS: tuple[type[Exception], ...] = (GuestTrap, GuestExit)

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def answer(error: Exception, front_end: str, operation: str, failure: Errno) -> NNError:
    """The :class:`NNError` a guest gets for ``error``, raised by ``front_end``'s ``operation``.

    Re-raises a stop; returns an NNError unchanged; for anything else logs the traceback,
    counts it and returns an NNError of ``failure`` whose message names the exception and its
    first line (the traceback is in the log). Call it from an ``except Exception`` block.
    """
    if isinstance(error, NNError):
        return error
    if isinstance(error, STOPS):
        raise error
    with _lock:
        _counts[front_end] += 1
    log.error(
        "%s %s: unexpected %s, answered with %s",
        front_end,
        operation,
        type(error).__name__,
        failure.name.lower(),
        exc_info=error,
    )
    lines = str(error).splitlines()
    detail = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return NNError(f"internal error in {front_end} {operation}: {detail}", failure)


def unexpected_counts() -> dict[str, int]:
    """Unexpected exceptions answered so far in this process, by front-end (a snapshot)."""
    with _lock:
        return dict(_counts)
