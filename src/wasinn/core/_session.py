"""The WASI-NN state of one guest instance: its graphs and execution contexts.

Both ABI front-ends drive these objects: the legacy one through integer handles, the WIT one
through resources. Inputs and outputs are addressed by index or by name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wasinn.core._backend import PATH_BUILDER, READS_BYTES, Backend, BackendContext, BackendGraph, Lifecycle
from wasinn.core._errors import (
    BackendError,
    Errno,
    GuestCancelled,
    InvalidArgument,
    NNError,
    NotFound,
    TimeLimitExceeded,
)
from wasinn.core._interrupt import Interruption
from wasinn.core._registry import ModelFilesLookup, ModelRegistry, SharedModel
from wasinn.core._types import ExecutionTarget, GraphEncoding, Tensor

CANCEL_GRACE_SECONDS = 10.0
# WasmEdge's builder that names a model file instead of carrying its bytes (GGML, whisper).

TensorKey = int | str


class Graph:
    """A loaded model as one instance holds it.

    A graph stays alive while the guest holds it or any of its contexts lives (contexts hold
    a strong reference, spec §4.0). ``detach`` is the legacy ``unload``: the graph's contexts
    may then only drain outputs. ``release`` is a WIT drop: its contexts keep working.
    """

    def __init__(
        self,
        session: NNSession,
        backend_graph: BackendGraph,
        encoding: GraphEncoding,
        *,
        shared: SharedModel | None = None,
    ) -> None:
        self.session = session
        self.backend_graph = backend_graph
        self.encoding = encoding
        self.name = shared.name if shared is not None else ""
        self._shared = shared
        # Serialises every operation on the graph across its contexts (spec §4.0).
        self.lock = threading.Lock()
        self.detached = False
        self._held = True
        self._contexts = 0

    @property
    def input_names(self) -> list[str]:
        return _names(self.backend_graph.input_names)

    @property
    def output_names(self) -> list[str]:
        return _names(self.backend_graph.output_names)

    def init_execution_context(self) -> ExecutionContext:
        self.require_live("init_execution_context")
        self.session.count_context()
        try:
            with self._shared.lock if self._shared is not None else self.lock:
                backend_context = self.backend_graph.new_context()
        except BaseException:
            self.session.uncount_context()
            raise
        self._contexts += 1
        backend_context.guest_path = self.session.guest_path
        context = ExecutionContext(self, backend_context)
        self.session.adopt_context(context)
        return context

    def detach(self) -> None:
        """The legacy ``unload``: final; contexts can still drain their outputs."""
        self.detached = True
        self.release()

    def release(self) -> None:
        """The guest no longer holds the graph; it is freed with its last context."""
        if self._held:
            self._held = False
            self.session.forget_graph(self)
            self._free_if_unused()

    def context_closed(self) -> None:
        self._contexts -= 1
        self._free_if_unused()

    def _free_if_unused(self) -> None:
        if not self._held and self._contexts == 0 and self._shared is None:
            self.backend_graph.release()  # a shared graph belongs to the registry

    def require_live(self, operation: str, *, by_context: bool = False) -> None:
        """The one liveness check of a graph, for itself and for its contexts: not unloaded
        (a context outlives its graph's release by the guest, not its ``unload``), and its
        model still loaded (a preloaded one is released when its registry closes, possibly
        under a running instance: the same answer for every backend)."""
        if self.detached or (not by_context and not self._held):
            whose = "the context's graph" if by_context else "the graph"
            raise Lifecycle.GRAPH_DETACHED.error(f"{operation}: {whose} was unloaded")
        if self.backend_graph.released:
            raise Lifecycle.GRAPH_RELEASED.error(f"{operation}: the graph's model was released")

    def index_of(self, kind: str, key: TensorKey) -> int:
        """The position of input/output ``key``: an index, a model name, or a decimal string."""
        if isinstance(key, int):
            return key
        names = self.input_names if kind == "input" else self.output_names
        if key in names:
            return names.index(key)
        if key.isdecimal() and (not names or int(key) < len(names)):
            return int(key)  # models without names are addressed "0", "1" … (WIT spec §7)
        shown = ", ".join(names) if names else "none"
        raise InvalidArgument(f"the model has no {kind} named {key!r} ({kind}s: {shown})")


def _names(names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else []


class ExecutionContext:
    """One inference session of a guest on a :class:`Graph`."""

    def __init__(self, graph: Graph, backend_context: BackendContext) -> None:
        self.graph = graph
        self.backend_context = backend_context
        self._closed = False
        # Every input index ever bound: the backends keep inputs between computes.
        self._bound: set[int] = set()

    def _guard(self, operation: str, *, ready: bool) -> BackendContext:
        if self._closed:
            raise Lifecycle.CONTEXT_RELEASED.error(f"{operation}: this execution context was finalized")
        if ready:
            self.graph.require_live(operation, by_context=True)
        return self.backend_context

    def set_input(self, key: TensorKey, tensor: Tensor) -> int:
        """Bind ``tensor`` to input ``key``; the index it bound."""
        context = self._guard("set_input", ready=True)
        index = self.graph.index_of("input", key)
        self.graph.session.check_tensor_size(f"input {key}", tensor.data.nbytes)
        with self.graph.lock:
            context.set_input(index, tensor)
        self._bound.add(index)
        return index

    def compute(self, interruption: Interruption | None = None) -> None:
        """``interruption`` stops this one compute (an nn-rpc server's: its client left),
        in place of the session's."""
        context = self._guard("compute", ready=True)
        session = self.graph.session
        stop = interruption or session.interruption
        with self.graph.lock:
            remaining = session.check_running()
            if interruption is not None:
                interruption.check()
            if remaining is None and stop is None:
                context.compute()
            else:
                run_within(context, remaining, stop)

    def get_output(self, key: TensorKey) -> npt.NDArray[np.generic]:
        context = self._guard("get_output", ready=False)
        index = self.graph.index_of("output", key)
        with self.graph.lock:
            return context.get_output(index)

    def compute_with_io(
        self, inputs: Sequence[tuple[TensorKey, Tensor]]
    ) -> list[tuple[str, npt.NDArray[np.generic]]]:
        """Bind every input, run, and collect every output in model order (WIT 10-28 ``compute``).

        Each call starts clean (WIT spec §3.3, §11 cases 19 and 21): the backends keep inputs
        between computes, as the legacy ABI needs, so every input the model has, or, where it
        names none, every data input bound before, must be bound again here; otherwise a result
        would silently mix in an earlier call's tensor. Settings inputs (GGML's metadata) last.
        """
        bound = {self.set_input(key, tensor) for key, tensor in inputs}
        declared = self.graph.input_names
        if declared:
            required = set(range(len(declared)))
        else:
            required = self._bound - self.backend_context.settings_inputs
        missing = sorted(required - bound)
        if missing:
            shown = ", ".join(declared[i] if declared else str(i) for i in missing)
            # runtime-error, as wasmtime's "missing input tensor" (§11 case 21 accepts either).
            raise NNError(f"compute: input(s) {shown} not given; every compute takes all its inputs anew")
        self.compute()
        return self.outputs()

    def outputs(self) -> list[tuple[str, npt.NDArray[np.generic]]]:
        """Every output of the last compute, under the model's names or "0", "1", …"""
        names = self.graph.output_names
        if names:
            return [(name, self.get_output(index)) for index, name in enumerate(names)]
        count = self._guard("outputs", ready=False).output_count()
        if count is None:  # a backend that declares neither: a wasinn bug, not the guest's
            raise RuntimeError(f"{type(self.backend_context).__name__} declares no outputs")
        return [(str(index), self.get_output(index)) for index in range(count)]

    def compute_single(self) -> None:
        context = self._guard("compute_single", ready=True)
        with self.graph.lock:
            # One token per call: checked here, a stream stops between two tokens.
            self.graph.session.check_running()
            context.compute_single()

    def get_output_single(self, key: TensorKey) -> npt.NDArray[np.generic]:
        context = self._guard("get_output_single", ready=False)
        with self.graph.lock:
            return context.get_output_single(self.graph.index_of("output", key))

    def fini_single(self) -> None:
        context = self._guard("fini_single", ready=False)
        with self.graph.lock:
            context.fini_single()

    def close(self) -> None:
        """Free the context; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.backend_context.release()
        finally:
            self.graph.session.forget_context(self)
            self.graph.context_closed()


class NNSession:
    """The WASI-NN state of one instance: loads graphs and enforces the host's caps.

    Every method raises :class:`NNError` (or a subclass) on failure; the ABI layer turns
    that into the guest's errno or error resource.
    """

    def __init__(
        self,
        resolve_backend: Callable[[GraphEncoding], Backend],
        registry: ModelRegistry | None = None,
        *,
        max_graphs: int | None = None,
        max_contexts: int | None = None,
        max_model_bytes: int | None = None,
        max_tensor_bytes: int | None = None,
        deadline: Callable[[], float | None] = lambda: None,
        guest_path: Callable[[str], Path] | None = None,
        interruption: Interruption | None = None,
        model_files: ModelFilesLookup | None = None,
    ) -> None:
        self._resolve_backend = resolve_backend
        # How each encoding takes its files: the registry's, else bytes for every backend.
        self._model_files = model_files or (registry.model_files if registry else lambda _e: READS_BYTES)
        # Host path of a file the guest names; raises InvalidArgument outside its --dir mappings.
        self._guest_path = guest_path
        self.registry = registry
        self._max_graphs = max_graphs
        self._max_contexts = max_contexts
        self._max_model_bytes = max_model_bytes
        self._max_tensor_bytes = max_tensor_bytes
        self.time_left = deadline
        self.interruption = interruption
        self._graphs: set[Graph] = set()
        self._contexts: set[ExecutionContext] = set()
        self._pending_contexts = 0
        self._lock = threading.Lock()

    def check_running(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); raises once the guest was
        interrupted (:class:`GuestCancelled`) or its time is up (:class:`TimeLimitExceeded`)."""
        if self.interruption is not None:
            self.interruption.check()
        remaining = self.time_left()
        if remaining is not None and remaining <= 0:
            raise TimeLimitExceeded("time limit exceeded during native inference")
        return remaining

    @property
    def guest_path(self) -> Callable[[str], Path] | None:
        """Resolves a path the guest names to a host path through its --dir mappings."""
        return self._guest_path

    def load(self, builders: Sequence[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> Graph:
        self._check_model_size(sum(len(blob) for blob in builders))
        backend = self._resolve_backend(encoding)
        builders = self._sandboxed(builders, encoding)
        return self._adopt(backend.load_graph(builders, target), backend.encoding, None)

    def _sandboxed(self, builders: Sequence[bytes], encoding: GraphEncoding) -> Sequence[bytes]:
        """A guest's ``preload:<path>`` builder names a *guest* file (WasmEdge opens it as a host
        path, outside the sandbox): resolve it through the guest's --dir mappings, or refuse.
        So are the paths a backend's builders name (``ModelFiles.guest_paths``)."""
        if self._guest_path is None:  # the host itself calls (Python API): its paths are its own
            return builders
        rewrite = self._model_files(encoding).guest_paths
        if rewrite is not None:
            return rewrite(builders, self._guest_path)
        if not builders or bytes(builders[0][: len(PATH_BUILDER)]) != PATH_BUILDER:
            return builders
        guest_path = os.fsdecode(bytes(builders[0][len(PATH_BUILDER) :]))
        errno = Errno.MODEL_NOT_FOUND if self._model_files(encoding).opened_at_load else None
        try:
            host_path = self._guest_path(guest_path)
        except InvalidArgument as err:
            raise InvalidArgument(f"model file not found: {err}", errno) from None
        return [PATH_BUILDER + os.fsencode(host_path), *builders[1:]]

    def load_by_name(self, name: str, config: bytes = b"") -> Graph:
        if self.registry is None:
            raise NotFound(f"no preloaded model named {name!r} (preloaded: none)")
        self._check_model_size(self.registry.model_bytes(name))
        shared = self.registry.get(name, config)
        return self._adopt(shared.graph, shared.encoding, shared)

    def _check_model_size(self, size: int) -> None:
        if self._max_model_bytes is not None and size > self._max_model_bytes:
            raise BackendError(f"the model's {size} bytes exceed the limit of {self._max_model_bytes} bytes")

    def _adopt(
        self, backend_graph: BackendGraph, encoding: GraphEncoding, shared: SharedModel | None
    ) -> Graph:
        def refuse(error: NNError) -> NNError:
            if shared is None:
                backend_graph.release()
            return error

        declared, limit = backend_graph.largest_tensor_bytes(), self._max_tensor_bytes
        if limit is not None and declared is not None and declared > limit:
            raise refuse(
                BackendError(f"the model declares a {declared}-byte tensor, over the {limit}-byte limit")
            )
        with self._lock:
            if self._max_graphs is not None and len(self._graphs) >= self._max_graphs:
                raise refuse(Lifecycle.TOO_MANY.error(f"too many live graphs (limit {self._max_graphs})"))
            graph = Graph(self, backend_graph, encoding, shared=shared)
            self._graphs.add(graph)
        return graph

    def count_context(self) -> None:
        with self._lock:
            live = len(self._contexts) + self._pending_contexts
            if self._max_contexts is not None and live >= self._max_contexts:
                raise Lifecycle.TOO_MANY.error(f"too many live contexts (limit {self._max_contexts})")
            self._pending_contexts += 1

    def uncount_context(self) -> None:
        with self._lock:
            self._pending_contexts -= 1

    def adopt_context(self, context: ExecutionContext) -> None:
        with self._lock:
            self._pending_contexts -= 1
            self._contexts.add(context)

    def forget_context(self, context: ExecutionContext) -> None:
        with self._lock:
            self._contexts.discard(context)

    def forget_graph(self, graph: Graph) -> None:
        with self._lock:
            self._graphs.discard(graph)

    @property
    def buffer_limit(self) -> int | None:
        """The most bytes one buffer a guest builds on the host side may hold (a WIT tensor,
        which ``load-parts`` may also take as a model part): the larger cap, if any is set."""
        limits = [limit for limit in (self._max_tensor_bytes, self._max_model_bytes) if limit is not None]
        return max(limits) if limits else None

    def check_tensor_size(self, what: str, size: int) -> None:
        if self._max_tensor_bytes is not None and size > self._max_tensor_bytes:
            raise BackendError(f"{what}: {size} bytes exceed the limit of {self._max_tensor_bytes} bytes")

    @property
    def live_graphs(self) -> int:
        return len(self._graphs)

    @property
    def live_contexts(self) -> int:
        return len(self._contexts)

    def close(self) -> None:
        """Free every context and graph this instance still holds."""
        with self._lock:
            contexts, graphs = list(self._contexts), list(self._graphs)
        for context in contexts:
            context.close()
        for graph in graphs:
            graph.detach()


def run_within(
    context: BackendContext, seconds: float | None, interruption: Interruption | None = None
) -> None:
    """Run ``compute`` on a worker thread and stop waiting after ``seconds`` (None: no
    limit), or as soon as ``interruption`` is set.

    A guest must not escape its time limit, nor a server's interruption (its client left),
    through one long native inference: the framework is then asked to cancel and the guest
    is stopped.
    """
    outcome: list[BaseException | None] = []
    wake = threading.Event()

    def work() -> None:
        try:
            context.compute()
            outcome.append(None)
        except BaseException as err:  # handed to the waiting thread below
            outcome.append(err)
        finally:
            wake.set()

    worker = threading.Thread(target=work, name="wasinn-compute", daemon=True)
    worker.start()
    if interruption is None:
        wake.wait(None if seconds is None else max(seconds, 0.0))
    else:
        with interruption.waking(wake):
            wake.wait(None if seconds is None else max(seconds, 0.0))
    if not outcome:  # still computing: past the limit, or interrupted
        context.cancel()
        # A framework thread still running at interpreter exit aborts the process.
        worker.join(CANCEL_GRACE_SECONDS)
        if interruption is not None and interruption.reason is not None:
            raise GuestCancelled(interruption.reason)
        raise TimeLimitExceeded("time limit exceeded during native inference")
    error = outcome[0] if outcome else None
    if error is not None:
        raise error
