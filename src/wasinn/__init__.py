"""wasinn: run WebAssembly programs that do neural-network inference through WASI-NN.

The names below are imported on first use (PEP 562), so that ``import wasinn.<module>``
stays cheap: the warm host's client (:mod:`wasinn.warm.client`) must start without numpy
or wasmtime.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the warm client ~10 ms
if TYPE_CHECKING:
    from typing import Any

    from wasinn.backends import BackendInfo, backends
    from wasinn.core import (
        ConfigError,
        Errno,
        ExecutionTarget,
        GraphEncoding,
        GuestExit,
        GuestTrap,
        LimitExceeded,
        ModelError,
        ModuleError,
        NNError,
        Preload,
        Tensor,
        TensorType,
        TimeLimitExceeded,
        WasinnError,
    )
    from wasinn.host import Instance, Limits, Runtime
    from wasinn.host.options import DirMapping

__version__ = "0.1.0"

_HOMES = {
    "BackendInfo": "wasinn.backends",
    "backends": "wasinn.backends",
    "DirMapping": "wasinn.host.options",
    "Instance": "wasinn.host",
    "Limits": "wasinn.host",
    "Runtime": "wasinn.host",
    **{
        name: "wasinn.core"
        for name in (
            "ConfigError",
            "Errno",
            "ExecutionTarget",
            "GraphEncoding",
            "GuestExit",
            "GuestTrap",
            "LimitExceeded",
            "ModelError",
            "ModuleError",
            "NNError",
            "Preload",
            "Tensor",
            "TensorType",
            "TimeLimitExceeded",
            "WasinnError",
        )
    },
}


def __getattr__(name: str) -> Any:
    import importlib

    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
    else:
        try:  # `import wasinn; wasinn.runtime` worked while this module imported it eagerly
            value = importlib.import_module(f"wasinn.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'wasinn' has no attribute {name!r}") from None
    globals()[name] = value
    return value


class _Package(type(sys)):  # type: ignore[misc]  # ModuleType, without importing types
    """``wasinn.backends`` is the function :func:`backends`, as when this module imported it
    eagerly: importing the submodule of that name must not replace it here."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "backends" and isinstance(value, type(sys)):
            return  # the submodule itself stays in sys.modules["wasinn.backends"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "BackendInfo",
    "ConfigError",
    "DirMapping",
    "Errno",
    "ExecutionTarget",
    "GraphEncoding",
    "GuestExit",
    "GuestTrap",
    "Instance",
    "LimitExceeded",
    "Limits",
    "ModelError",
    "ModuleError",
    "NNError",
    "Preload",
    "Runtime",
    "Tensor",
    "TensorType",
    "TimeLimitExceeded",
    "WasinnError",
    "__version__",
    "backends",
]
