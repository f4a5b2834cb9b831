"""The server's WASI-NN state: what WasmEdge's ``wasi_nn_rpcserver`` keeps in its one plugin
instance, on :mod:`wasinn.core` objects.

Each RPC arrives with its arguments already decoded, so there is no guest memory: the
operations below are the legacy ABI front-end's (:mod:`wasinn.abi.ephemeral`) after its
pointer checks, with the same core calls, per-graph locks and errno. Handles are global to
the process (spec nn-rpc §3): every client sees every graph and context, counters start at
0 and are never reused. WasmEdge's clients have no call that ends a context, so theirs live
until the server exits (§5.2); wasinn's client ends its own through an extension service.
"""

from __future__ import annotations

import threading

import numpy as np

from wasinn.abi._handles import HandleTable
from wasinn.abi._nnrpc_wire import WireTensor
from wasinn.abi._wasmedge import tensor_type_from_code
from wasinn.core import ExecutionContext, Graph, Interruption, ModelRegistry, NNSession, Tensor


class RemoteHost:
    """One model server's graphs and contexts, shared by all its clients; thread-safe."""

    def __init__(self, registry: ModelRegistry, session: NNSession) -> None:
        self.registry = registry
        # Host-side paths (GGML output files, mmproj) are the server's own, relative to its
        # working directory: there is no guest filesystem here (§3, §5.13).
        self.session = session
        self._graphs: HandleTable[Graph] = HandleTable("graph")
        self._contexts: HandleTable[ExecutionContext] = HandleTable("context")
        self._by_name: dict[str, int] = {}
        self._name_gates: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # the tables; never held across a framework call

    def load_by_name(self, name: str, config: bytes) -> int:
        """The graph handle of ``name``: the first load's, whoever asks and with what config."""
        with self._lock:
            cached = self._by_name.get(name)
            if cached is not None:
                return cached
            gate = self._name_gates.setdefault(name, threading.Lock())
        with gate:  # two clients loading one name at once get one handle
            with self._lock:
                cached = self._by_name.get(name)
            if cached is not None:
                return cached
            graph = self.session.load_by_name(name, config)
            with self._lock:
                handle = self._by_name[name] = self._graphs.add(graph)
            return handle

    def init_execution_context(self, graph: int) -> int:
        with self._lock:
            entry = self._graphs.get(graph)
        context = entry.init_execution_context()
        with self._lock:
            return self._contexts.add(context)

    def _context(self, handle: int) -> ExecutionContext:
        with self._lock:
            return self._contexts.get(handle)

    def set_input(self, context: int, index: int, tensor: WireTensor) -> None:
        entry = self._context(context)
        # The number is WasmEdge's tensor type, as a guest's set_input would pass it (§2).
        kind = tensor_type_from_code(tensor.ty)
        data = np.frombuffer(tensor.data, dtype=np.uint8)
        entry.set_input(index, Tensor(tensor.dims, kind, data))

    def compute(self, context: int, interruption: Interruption | None = None) -> None:
        """``interruption`` is set when the caller leaves: the framework is asked to cancel
        and the graph's lock is released, where WasmEdge's server computes on (§5.12)."""
        self._context(context).compute(interruption)

    def compute_single(self, context: int) -> None:
        self._context(context).compute_single()

    def fini_single(self, context: int) -> None:
        self._context(context).fini_single()

    def get_output(self, context: int, index: int, *, single: bool = False) -> bytes:
        """The whole output, whatever its size: the client compares it with its guest's buffer."""
        entry = self._context(context)
        array = entry.get_output_single(index) if single else entry.get_output(index)
        return np.ascontiguousarray(array).reshape(-1).view(np.uint8).tobytes()

    # -- wasinn's extension (§5.2); WasmEdge's clients never call these

    def unload(self, graph: int) -> None:
        """A known graph stays: graphs are shared by name between clients, which the server
        cannot tell apart, so one client's unload must not pull a graph from under another's.
        Its models are released when the server stops."""
        with self._lock:
            self._graphs.get(graph)

    def finalize_execution_context(self, context: int) -> None:
        with self._lock:
            entry = self._contexts.pop(context)
        entry.close()

    @property
    def live_contexts(self) -> int:
        return len(self._contexts)

    def close(self) -> None:
        """Free every context and graph, then the preloaded models."""
        self.session.close()
        self.registry.close()
