"""One exception hierarchy for everything wasinn raises on purpose.

:class:`NNError` carries the errno a guest sees. The numbers are the legacy
``wasi_ephemeral_nn`` contract (spec §3.1); the WIT front-end maps them onto its
``error-code`` cases.
"""

from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """The i32 a ``wasi_ephemeral_nn`` call returns (spec §3.1, WasmEdge 0.14+ numbering)."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_ENCODING = 2
    MISSING_MEMORY = 3
    BUSY = 4
    RUNTIME_ERROR = 5
    UNSUPPORTED_OPERATION = 6
    TOO_LARGE = 7
    NOT_FOUND = 8
    END_OF_SEQUENCE = 100
    CONTEXT_FULL = 101
    PROMPT_TOO_LONG = 102
    MODEL_NOT_FOUND = 103


class WasinnError(Exception):
    """Root of every error wasinn raises on purpose."""


class ConfigError(WasinnError):
    """A bad option from the person running wasinn: a --dir, --env or --nn-preload string."""


class ModuleError(WasinnError):
    """A WebAssembly module that cannot be read, compiled or linked."""


class ModelError(WasinnError):
    """A model file that cannot be found, downloaded or verified (:mod:`wasinn.tools.models`)."""


class GuestTrap(WasinnError):
    """The guest trapped (unreachable, out-of-bounds access, …) or broke the host's rules."""


class LimitExceeded(GuestTrap):
    """The guest ran past a limit it was given: time, gas (fuel) or memory."""


class TimeLimitExceeded(LimitExceeded):
    """The guest ran past its time limit: unlike gas, a slow host can be the cause (HTTP 504)."""


class GuestCancelled(GuestTrap):
    """The host stopped the guest before its end: its client left, or the server is going down."""


class GuestExit(WasinnError):
    """The guest called ``proc_exit``; carries its exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with code {code}")
        self.code = code


class NNError(WasinnError):
    """A WASI-NN failure reported to the guest as ``errno``; the message is for the person."""

    errno: Errno = Errno.RUNTIME_ERROR

    def __init__(self, message: str, errno: Errno | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class InvalidArgument(NNError):
    errno = Errno.INVALID_ARGUMENT


class InvalidEncoding(NNError):
    errno = Errno.INVALID_ENCODING


class Busy(NNError):
    errno = Errno.BUSY


class BackendError(NNError):
    """The framework failed while loading or running a model (``runtime_error``)."""

    errno = Errno.RUNTIME_ERROR


class TooLarge(NNError):
    """The guest's output buffer is smaller than the output; ``needed`` is its byte size."""

    errno = Errno.TOO_LARGE

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class NotFound(NNError):
    errno = Errno.NOT_FOUND
