"""Graphs, execution contexts, tensors and errors: the WASI-NN model with no wasm and no framework.

Private modules, one concept each, re-exported here: ``_errors`` (the exception hierarchy),
``_types`` (encodings, targets, tensors by name), ``_backend`` (the backend ABCs and the
lifecycle rules), ``_first_use`` (each framework's gate for safe concurrent first use),
``_registry`` (named models shared across instances) and ``_session``
(one instance's graphs and contexts). The ABI front-ends in :mod:`wasinn.abi` translate
guest calls into these objects; numbering and handles live there.
"""

from wasinn.core._backend import (
    PATH_BUILDER,
    READS_BYTES,
    UNGATED,
    Backend,
    BackendContext,
    BackendGraph,
    Lifecycle,
    ModelConfig,
    ModelFiles,
)
from wasinn.core._errors import (
    BackendError,
    Busy,
    ConfigError,
    Errno,
    GuestCancelled,
    GuestExit,
    GuestTrap,
    InvalidArgument,
    InvalidEncoding,
    LimitExceeded,
    ModelError,
    ModuleError,
    NNError,
    NotFound,
    TimeLimitExceeded,
    TooLarge,
    WasinnError,
)
from wasinn.core._first_use import FirstUse, first_use
from wasinn.core._interrupt import Interruption
from wasinn.core._registry import BackendResolver, ModelRegistry, Preload, SharedModel
from wasinn.core._session import ExecutionContext, Graph, NNSession, TensorKey, run_within
from wasinn.core._types import ExecutionTarget, GraphEncoding, Tensor, TensorType, format_dims

__all__ = [
    "PATH_BUILDER",
    "READS_BYTES",
    "ModelFiles",
    "Backend",
    "BackendContext",
    "BackendError",
    "BackendGraph",
    "BackendResolver",
    "Busy",
    "ConfigError",
    "Errno",
    "ExecutionContext",
    "ExecutionTarget",
    "FirstUse",
    "Graph",
    "GraphEncoding",
    "GuestCancelled",
    "GuestExit",
    "GuestTrap",
    "InvalidArgument",
    "Interruption",
    "InvalidEncoding",
    "Lifecycle",
    "LimitExceeded",
    "ModelConfig",
    "ModelError",
    "ModelRegistry",
    "ModuleError",
    "NNError",
    "NNSession",
    "NotFound",
    "Preload",
    "SharedModel",
    "Tensor",
    "TensorKey",
    "TensorType",
    "TimeLimitExceeded",
    "TooLarge",
    "UNGATED",
    "WasinnError",
    "first_use",
    "format_dims",
    "run_within",
]
