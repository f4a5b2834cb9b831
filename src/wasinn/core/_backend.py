"""The interface every framework backend implements: load → graph → execution context.

Backends subclass the three ABCs below. :class:`BackendContext` owns the lifecycle guards
(a released context, an output asked for before any compute) so each backend implements
only the framework calls, and every backend answers the same misuse with the same errno
(:class:`Lifecycle`).
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from wasinn.core._errors import Errno, InvalidArgument, InvalidEncoding, NNError
from wasinn.core._first_use import FirstUse, first_use
from wasinn.core._types import ExecutionTarget, GraphEncoding, Tensor


class Lifecycle(enum.Enum):
    """Every misuse of a handle's lifetime: the errno it gets and the spec rule behind it."""

    UNKNOWN_HANDLE = Errno.INVALID_ARGUMENT, "abi §4.9/§4.10: a handle never issued or already released"
    GRAPH_DETACHED = Errno.INVALID_ARGUMENT, "abi §4.0: an unloaded graph only drains its outputs"
    GRAPH_RELEASED = Errno.INVALID_ARGUMENT, "abi §4.0: a graph whose model was released is not Ready"
    CONTEXT_RELEASED = Errno.INVALID_ARGUMENT, "abi §4.10: any use of a finalized context"
    OUTPUT_BEFORE_COMPUTE = Errno.RUNTIME_ERROR, "abi §4.7: backend-defined; wasinn answers runtime_error"
    NO_STREAMING = Errno.INVALID_ARGUMENT, "abi §4.8: token streaming needs a GGML context"
    HANDLE_SPACE = Errno.RUNTIME_ERROR, "abi §4.0: the handle counter reached 0xFFFFFFFF"
    TOO_MANY = Errno.RUNTIME_ERROR, "wasinn limits: max_graphs / max_contexts (docs/usage.md)"

    def __init__(self, errno: Errno, rule: str) -> None:
        self.errno = errno
        self.rule = rule

    def error(self, message: str, errno: Errno | None = None) -> NNError:
        return NNError(message, errno if errno is not None else self.errno)


@dataclass(frozen=True)
class ModelFiles:
    """How a backend takes a model's files: what ``--nn-preload`` reads at start, and whether a
    guest's ``preload:<path>`` builder (:data:`PATH_BUILDER`) names a file it opens itself.

    Declared per encoding by :func:`wasinn.backends.model_files`, without importing the
    framework, so the core needs no list of encodings.
    """

    # builder[0] is ``preload:<path>`` and the backend opens the file at load (GGML, BitNet:
    # multi-GB files are mapped, not read); a missing file is errno 103 (model_not_found).
    opened_at_load: bool = False
    # a preloaded directory goes as one packed blob (a TensorFlow SavedModel).
    directories: bool = False
    # For backends whose builders name files (OpenVINO GenAI's model directory, Piper's run
    # config): the builders with each guest path turned into its host path by ``resolve``
    # (through the guest's --dir mappings; outside them, InvalidArgument). WasmEdge opens
    # such paths on the host as given; wasinn lets a guest reach only what WASI lets it.
    guest_paths: Callable[[Sequence[bytes], Callable[[str], Path]], list[bytes]] | None = None


READS_BYTES = ModelFiles()
# A builder that names a file instead of holding the model (WasmEdge's GGML convention).
PATH_BUILDER = b"preload:"


@dataclass(frozen=True)
class ModelConfig:
    """Settings a guest passes to ``load_by_name_with_config`` as a JSON object.

    ``threads``: the framework's intra-op threads for this graph; ``device``: a target
    spelling (cpu, gpu, tpu, auto) that replaces the preloaded target. Any other key must be
    one of the backend's :attr:`Backend.config_keys` and lands in ``extra``; ``raw`` keeps
    the bytes for backends that read the JSON themselves (GGML's metadata).
    """

    threads: int | None = None
    device: ExecutionTarget | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: bytes = b""

    @classmethod
    def parse(cls, raw: bytes, backend: Backend | None = None) -> ModelConfig:
        if backend is not None and backend.parses_config:
            return cls(raw=bytes(raw))  # the backend applies its own JSON rules to ``raw``
        try:
            fields = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidEncoding(f"the model config is not valid JSON: {err}") from None
        if not isinstance(fields, dict):
            raise InvalidArgument(f"the model config must be a JSON object, got {type(fields).__name__}")
        known = {"threads", "device"} | (backend.config_keys if backend is not None else set())
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InvalidArgument(f"unknown model config key(s) {unknown}; known: {', '.join(sorted(known))}")
        threads = fields.pop("threads", None)
        if threads is not None and (type(threads) is not int or threads < 1):
            raise InvalidArgument(f"model config: threads must be a positive integer, got {threads!r}")
        device = fields.pop("device", None)
        if device is not None and not isinstance(device, str):
            raise InvalidArgument(f"model config: device must be a string, got {device!r}")
        try:
            target = ExecutionTarget(device.lower()) if device is not None else None
        except ValueError:
            raise InvalidArgument(
                f"model config: unknown device {device!r}; expected one of: cpu, gpu, tpu, auto"
            ) from None
        config = cls(threads, target, fields, bytes(raw))
        if backend is not None:
            config.require_honoured(backend)
        return config

    def require_honoured(self, backend: Backend) -> None:
        """Errno 1 when ``threads`` or ``device`` was given but ``backend`` does not apply it."""
        given = {key for key in ("threads", "device") if getattr(self, key) is not None}
        unhonoured = sorted(given - backend.config_keys)
        if unhonoured:
            honoured = ", ".join(sorted(backend.config_keys))
            raise InvalidArgument(
                f"{backend.name}: model config key(s) {unhonoured} not honoured (only {honoured})"
            )


# The gate of graphs and contexts made without Backend.load_graph (tests driving a backend
# directly, the WasmEdge plug-in modules, which hold their framework's gate themselves).
UNGATED = FirstUse("")
UNGATED.mark_warm()


class BackendContext(ABC):
    """One inference session on a graph.

    Subclasses implement ``_set_input``, ``_compute`` and ``_get_output`` (and ``_release``
    for resources); the public methods here guard the lifecycle first, and pass through the
    framework's first-use gate (:mod:`wasinn.core._first_use`): one thread at a time until
    the framework has finished one compute. ``_get_output`` is called only after a
    successful ``_compute``.
    """

    # What get_output answers before any successful compute, where the backend has no
    # better answer (override ``_output_before_compute`` for one).
    output_before_compute_errno: ClassVar[Errno] = Lifecycle.OUTPUT_BEFORE_COMPUTE.errno
    # Inputs that are settings rather than data (GGML's and whisper's metadata at index 1):
    # what they set lasts by design, so a WIT compute need not give them again.
    settings_inputs: ClassVar[frozenset[int]] = frozenset()
    # The host path of a file the guest names in a setting (GGML's mmproj and image): set by
    # the host for a guest's contexts, resolving through its --dir mappings (errno 1 outside
    # them); None when the host calls through the Python API, whose paths are its own.
    guest_path: Callable[[str], Path] | None = None
    # Set by BackendGraph.new_context to the framework's gate.
    first_use: FirstUse = UNGATED
    _released: bool = False
    _computed: bool = False

    def set_input(self, index: int, tensor: Tensor) -> None:
        self._require_live("set_input")
        with self.first_use.until_warm():
            self._set_input(index, tensor)

    def compute(self) -> None:
        self._require_live("compute")
        self._computed = False
        with self.first_use.until_warm():
            self._compute()
            self.first_use.mark_warm()
        self._computed = True

    def get_output(self, index: int) -> npt.NDArray[np.generic]:
        """The output's data, C-contiguous; the caller copies its bytes before the next call."""
        self._require_live("get_output")
        if not self._computed:
            return self._output_before_compute(index)
        with self.first_use.until_warm():
            return self._get_output(index)

    def output_count(self) -> int | None:
        """How many outputs a compute makes, for a graph that names none (its ``output_names``
        is None): every backend answers one or the other, so a caller can collect them all."""
        return None

    def compute_single(self) -> None:
        self._require_live("compute_single")
        with self.first_use.until_warm():
            self._compute_single()
            self.first_use.mark_warm()

    def get_output_single(self, index: int) -> npt.NDArray[np.generic]:
        self._require_live("get_output_single")
        with self.first_use.until_warm():
            return self._get_output_single(index)

    def fini_single(self) -> None:
        self._require_live("fini_single")
        with self.first_use.until_warm():
            self._fini_single()

    def cancel(self) -> None:  # noqa: B027 - optional hook
        """Stop a ``compute`` running on another thread, where the framework can; best effort."""

    def release(self) -> None:
        """Free the framework's resources for this context (:meth:`_release`); idempotent."""
        if not self._released:
            self._released = True
            with self.first_use.until_warm():
                self._release()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _hook_named(cls, "close", "_release")

    @property
    def released(self) -> bool:
        return self._released

    def _require_live(self, operation: str) -> None:
        if self._released:
            raise Lifecycle.CONTEXT_RELEASED.error(f"{operation}: this execution context was finalized")

    @abstractmethod
    def _set_input(self, index: int, tensor: Tensor) -> None: ...

    @abstractmethod
    def _compute(self) -> None: ...

    @abstractmethod
    def _get_output(self, index: int) -> npt.NDArray[np.generic]: ...

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        raise Lifecycle.OUTPUT_BEFORE_COMPUTE.error(
            f"get_output({index}) before a successful compute", self.output_before_compute_errno
        )

    def _release(self) -> None:  # noqa: B027 - optional hook
        """Free what the framework holds for this context."""

    def _compute_single(self) -> None:
        raise Lifecycle.NO_STREAMING.error("this backend has no token streaming (compute_single)")

    def _get_output_single(self, index: int) -> npt.NDArray[np.generic]:
        raise Lifecycle.NO_STREAMING.error("this backend has no token streaming (get_output_single)")

    def _fini_single(self) -> None:
        raise Lifecycle.NO_STREAMING.error("this backend has no token streaming (fini_single)")


class BackendGraph(ABC):
    """A loaded model; shared by its contexts (and by instances, for preloaded models).

    ``init_execution_context`` may be called from several threads at once for a preloaded
    model shared between instances; the host serialises those calls per graph.
    """

    # Set by Backend.load_graph to the framework's gate.
    first_use: FirstUse = UNGATED

    @abstractmethod
    def init_execution_context(self) -> BackendContext: ...

    def new_context(self) -> BackendContext:
        """``init_execution_context`` through the framework's gate (one thread at a time)."""
        with self.first_use.serial():
            context = self.init_execution_context()
        context.first_use = self.first_use
        return context

    @property
    def input_names(self) -> Sequence[str] | None:
        """The model's input names in index order, where the framework has them."""
        return None

    @property
    def output_names(self) -> Sequence[str] | None:
        """The model's output names in index order, where the framework has them."""
        return None

    def largest_tensor_bytes(self) -> int | None:
        """The byte size of the model's largest static input or output, when known before
        anything is allocated; lets the host refuse a tiny model that declares huge tensors."""
        return None

    _released: bool = False

    def release(self) -> None:
        """Free the model (:meth:`_release`) and mark the graph released, so that every later use
        gets :attr:`Lifecycle.GRAPH_RELEASED` from the core instead of a per-backend answer."""
        if not self._released:
            self._released = True
            with self.first_use.until_warm():
                self._release()

    @property
    def released(self) -> bool:
        return self._released

    def _release(self) -> None:  # noqa: B027 - optional hook
        """Free what the framework holds for this graph; called once, by :meth:`release`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _hook_named(cls, "close", "_release")


class Backend(ABC):
    """One framework. ``load`` turns builder blobs into a :class:`BackendGraph`."""

    encoding: ClassVar[GraphEncoding]
    name: ClassVar[str] = ""
    # The load_by_name_with_config keys this backend applies (``device`` is applied by the host).
    config_keys: ClassVar[frozenset[str]] = frozenset({"device"})
    # True for backends that read the config JSON themselves (GGML's metadata: unknown keys
    # ignored, a non-object a no-op, strict types); ModelConfig then carries only ``raw``.
    parses_config: ClassVar[bool] = False
    # The native library behind the backend: backends (and plug-in modules) over one library
    # share its first-use gate. Defaults to ``name``.
    framework: ClassVar[str] = ""

    @abstractmethod
    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> BackendGraph: ...

    @property
    def first_use(self) -> FirstUse:
        return first_use(self.framework or self.name)

    def load_graph(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> BackendGraph:
        """``load`` through the framework's gate (one load at a time); how the host loads.

        The graph (and its contexts, through :meth:`BackendGraph.new_context`) carry the gate.
        """
        gate = self.first_use
        with gate.serial():
            graph = self.load(builders, target, config)
        if graph.first_use is UNGATED:  # autodetect returns the real backend's graph, gated
            graph.first_use = gate
        return graph


def _hook_named(cls: type, old: str, hook: str) -> None:
    """Graphs and contexts alike: ``release()`` is public, ``_release()`` the backend's hook,
    ``released`` the state. A backend still defining the old name would never be called."""
    if old in cls.__dict__:
        raise TypeError(f"{cls.__qualname__}.{old}: a backend implements {hook}() (called by release())")
