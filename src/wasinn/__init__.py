"""wasinn: run WebAssembly programs that do neural-network inference through WASI-NN."""

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
