"""Keep wasmtime's fault handlers when another native library installs its own.

wasmtime turns a guest's trap into a SIGILL/SIGSEGV/SIGBUS/SIGFPE that its signal handler
catches and reports as a trap. A library that installs handlers for those signals later
without chaining (Ray's raylet does, and ``ray.shutdown`` resets them to the default) makes
the next trap of any guest in the process kill the whole host with "Illegal instruction".
Code that starts such a library wraps it in :func:`keep_fault_handlers`.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

FAULT_SIGNALS = (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE)


class _SigAction(ctypes.Structure):
    """glibc's ``struct sigaction`` (x86-64 and aarch64)."""

    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_ulong * 16),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


@contextmanager
def keep_fault_handlers() -> Iterator[None]:
    """Restore the fault signals' handlers, as they were on entry, when the block ends."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved: dict[int, _SigAction] = {}
    for fault in FAULT_SIGNALS:
        action = _SigAction()
        if libc.sigaction(int(fault), None, ctypes.byref(action)) == 0:
            saved[int(fault)] = action
    try:
        yield
    finally:
        for signum, action in saved.items():
            libc.sigaction(signum, ctypes.byref(action), None)


def fault_handler(signum: int) -> int:
    """The address of the handler installed for ``signum`` (0 for the default); for tests."""
    action = _SigAction()
    ctypes.CDLL(None).sigaction(signum, None, ctypes.byref(action))
    return int(action.handler or 0)
