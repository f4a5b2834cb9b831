"""The legacy ``wasi_ephemeral_nn`` ABI: guest memory in, :mod:`wasinn.core` calls out.

This layer decodes and bounds-checks guest memory (spec §2) in the order of spec §4, keeps
WasmEdge's integer handles and numbering, and maps errors to errno. It never imports a
framework: tensors reach the backends as numpy views of guest memory that live for one
call, and outputs come back as arrays that are copied straight into the guest's buffer
(one copy each way).
"""

from __future__ import annotations

import ctypes
import logging
import struct
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import wasmtime

from wasinn.abi._errors import answer
from wasinn.abi._fastcall import define_i32_func
from wasinn.abi._handles import HandleTable
from wasinn.abi._wasmedge import encoding_from_code, target_from_code, tensor_type_from_code
from wasinn.core import (
    Errno,
    ExecutionContext,
    Graph,
    GuestTrap,
    InvalidArgument,
    NNError,
    NNSession,
    Tensor,
    TensorKey,
    TooLarge,
)

MODULE = "wasi_ephemeral_nn"
TENSOR_RECORD_SIZE = 20
BUILDER_ENTRY_SIZE = 8
MAX_BUILDERS = 64  # far above any backend's count; bounds the host work for one call
U32 = 0xFFFFFFFF

log = logging.getLogger("wasinn.nn")

_EMPTY = np.zeros(0, dtype=np.uint8)
_NO_MEMORY = memoryview(b"")
_u32 = struct.Struct("<I")
_tensor_record = struct.Struct("<IIIII")

# name → number of i32 parameters; every import returns one i32 errno (spec §1.2).
SIGNATURES: dict[str, int] = {
    "load": 5,
    "load_by_name": 3,
    "load_by_name_with_config": 5,
    "init_execution_context": 2,
    "set_input": 3,
    "compute": 1,
    "get_output": 5,
    "compute_single": 1,
    "get_output_single": 5,
    "fini_single": 1,
    "unload": 1,
    "finalize_execution_context": 1,
}


class GuestMemory:
    """A view of a wasm linear memory, rebuilt whenever its base or size changes.

    memory.grow may move or extend the memory, so the view is re-validated on every call
    and never kept by anyone beyond one host call.
    """

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._store = store
        self._memory = memory
        self._size = -1
        self._view = _NO_MEMORY

    def view(self) -> memoryview:
        # wasmtime moves a linear memory only when it grows, so an unchanged size means an
        # unchanged base: the base is re-read only after a grow.
        size = self._memory.data_len(self._store)
        if size != self._size:
            base = ctypes.cast(self._memory.data_ptr(self._store), ctypes.c_void_p).value or 0
            self._view = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
            self._size = size
        return self._view


def region(memory: memoryview, ptr: int, length: int) -> npt.NDArray[np.uint8]:
    """A numpy view (no copy) of checked guest bytes."""
    return np.frombuffer(memory, dtype=np.uint8, count=length, offset=ptr) if length else _EMPTY


def check_region(memory: memoryview, ptr: int, length: int, what: str, *, lax: bool) -> None:
    """Spec §2.1: ``ptr + length <= mem_size`` in unbounded integers.

    ``lax`` is WasmEdge's quirk for ``load`` and ``set_input``: a zero-length region passes
    wherever it points.
    """
    if lax and length == 0:
        return
    if ptr + length > memory.nbytes:
        raise InvalidArgument(
            f"{what} (pointer {ptr:#x}, {length} bytes) lies outside guest memory ({memory.nbytes} bytes)"
        )


def write_u32(memory: memoryview, ptr: int, value: int) -> None:
    _u32.pack_into(memory, ptr, value)


def decode_name(raw: bytes) -> str:
    # surrogateescape keeps byte-for-byte matching for names that are not UTF-8.
    return raw.decode("utf-8", "surrogateescape")


class EphemeralNN:
    """The ``wasi_ephemeral_nn`` import module of one instance."""

    def __init__(self, session: NNSession, park: Callable[[BaseException], None]) -> None:
        self.session = session
        self._graphs: HandleTable[Graph] = HandleTable("graph")
        self._contexts: HandleTable[ExecutionContext] = HandleTable("context")
        # load_by_name hands back the same handle for a name until it is unloaded (spec §4.2).
        self._by_name: dict[str, int] = {}
        self._park = park
        self._memory: GuestMemory | None = None
        self._callbacks: list[object] = []  # native callbacks the linker points at

    def attach(self, store: wasmtime.Store, memory: wasmtime.Memory | None) -> None:
        """Bind the guest's memory (its first exported memory), once the module is instantiated."""
        self._memory = GuestMemory(store, memory) if memory is not None else None

    def define(self, linker: wasmtime.Linker) -> None:
        for name, arity in SIGNATURES.items():
            implementation = getattr(self, "_" + name)
            callback = define_i32_func(
                linker, MODULE, name, arity, self._errno_of(name, implementation), self._park
            )
            self._callbacks.append(callback)

    def _errno_of(self, name: str, implementation: Callable[..., None]) -> Callable[..., int]:
        def call(*params: int) -> int:
            if self._memory is None:
                # WasmEdge traps for a guest without memory rather than returning errno 3 (spec §1.2).
                raise GuestTrap(f"{MODULE}.{name}: the guest has no exported linear memory")
            try:
                # wasmtime hands i32 parameters over signed; the ABI reads every one as u32.
                implementation(*[param & U32 for param in params])
            except TooLarge:
                return Errno.TOO_LARGE  # the size-probe protocol, not a failure worth a message
            except NNError as err:
                log.warning("%s: %s", name, err)
                return self._code(err)
            except Exception as err:  # a stop re-raises; anything else is runtime_error (abi/_errors.py)
                return int(answer(err, MODULE, name, Errno.RUNTIME_ERROR).errno)
            return Errno.SUCCESS

        return call

    def _code(self, error: NNError) -> int:
        """The i32 the guest gets for ``error``."""
        return int(error.errno)

    def _mem(self) -> memoryview:
        assert self._memory is not None  # checked before every call
        return self._memory.view()

    # -- graphs

    def _load(
        self, builders_ptr: int, builder_count: int, encoding: int, target: int, graph_out: int
    ) -> None:
        memory = self._mem()
        check_region(memory, graph_out, 4, "graph out-pointer", lax=False)
        execution_target = target_from_code(target)
        check_region(memory, builders_ptr, builder_count * BUILDER_ENTRY_SIZE, "builder array", lax=True)
        entries = struct.unpack_from(f"<{2 * builder_count}I", memory, builders_ptr) if builder_count else ()
        regions = list(zip(entries[0::2], entries[1::2], strict=True))
        for number, (ptr, length) in enumerate(regions):
            check_region(memory, ptr, length, f"builder {number}", lax=True)
        if builder_count > MAX_BUILDERS:
            encoding_from_code(encoding)  # an unknown encoding still answers 2, as in WasmEdge
            raise InvalidArgument(f"{builder_count} builders; no backend takes more than {MAX_BUILDERS}")
        total = sum(length for _, length in regions)
        if total > memory.nbytes:
            # Overlapping builders would make the host copy the same guest bytes many times.
            raise InvalidArgument(
                f"builders total {total} bytes, more than guest memory ({memory.nbytes} bytes)"
            )
        graph_encoding = encoding_from_code(encoding)
        builders = [bytes(memory[ptr : ptr + length]) for ptr, length in regions]
        graph = self.session.load(builders, graph_encoding, execution_target)
        write_u32(memory, graph_out, self._add_graph(graph))

    def _add_graph(self, graph: Graph) -> int:
        try:
            return self._graphs.add(graph)
        except NNError:
            graph.release()
            raise

    def _load_by_name(self, name_ptr: int, name_len: int, graph_out: int) -> None:
        self._load_by_name_with_config(name_ptr, name_len, 0, 0, graph_out)

    def _load_by_name_with_config(
        self, name_ptr: int, name_len: int, config_ptr: int, config_len: int, graph_out: int
    ) -> None:
        memory = self._mem()
        check_region(memory, graph_out, 4, "graph out-pointer", lax=False)
        check_region(memory, name_ptr, name_len, "name", lax=False)
        check_region(memory, config_ptr, config_len, "config", lax=False)
        name = decode_name(bytes(memory[name_ptr : name_ptr + name_len]))
        cached = self._by_name.get(name)
        if cached is None:
            config = bytes(memory[config_ptr : config_ptr + config_len])
            cached = self._by_name[name] = self._add_graph(self.session.load_by_name(name, config))
        # A cached name ignores the config (spec §4.3).
        write_u32(memory, graph_out, cached)

    def _unload(self, graph: int) -> None:
        entry = self._graphs.pop(graph)
        if entry.name and self._by_name.get(entry.name) == graph:
            del self._by_name[entry.name]
        entry.detach()

    # -- contexts

    def _init_execution_context(self, graph: int, context_out: int) -> None:
        memory = self._mem()
        check_region(memory, context_out, 4, "context out-pointer", lax=False)
        context = self._graphs.get(graph).init_execution_context()
        try:
            handle = self._contexts.add(context)
        except NNError:
            context.close()
            raise
        write_u32(memory, context_out, handle)

    def _finalize_execution_context(self, context: int) -> None:
        self._contexts.pop(context).close()

    def _set_input(self, context: int, index: int, tensor_ptr: int) -> None:
        memory = self._mem()
        check_region(memory, tensor_ptr, TENSOR_RECORD_SIZE, "tensor record", lax=False)
        dims_ptr, dims_len, type_word, data_ptr, data_len = _tensor_record.unpack_from(memory, tensor_ptr)
        check_region(memory, dims_ptr, dims_len * 4, "tensor dims", lax=True)
        check_region(memory, data_ptr, data_len, "tensor data", lax=True)
        tensor_type = tensor_type_from_code(type_word)
        dims = struct.unpack_from(f"<{dims_len}I", memory, dims_ptr) if dims_len else ()
        data = region(memory, data_ptr, data_len)
        self._contexts.get(context).set_input(index, Tensor(dims, tensor_type, data))

    def _compute(self, context: int) -> None:
        self._contexts.get(context).compute()

    def _get_output(self, context: int, index: int, out_ptr: int, out_max: int, written_ptr: int) -> None:
        self._copy_output(ExecutionContext.get_output, context, index, out_ptr, out_max, written_ptr)

    def _copy_output(
        self,
        fetch: Callable[[ExecutionContext, TensorKey], npt.NDArray[np.generic]],
        context: int,
        index: int,
        out_ptr: int,
        out_max: int,
        written_ptr: int,
    ) -> None:
        memory = self._mem()
        check_region(memory, out_ptr, out_max, "output buffer", lax=False)
        check_region(memory, written_ptr, 4, "bytes-written out-pointer", lax=False)
        payload = np.ascontiguousarray(fetch(self._contexts.get(context), index)).reshape(-1).view(np.uint8)
        size = payload.size
        if size > out_max:
            write_u32(memory, written_ptr, size)
            raise TooLarge(f"output {index} needs {size} bytes, the guest offered {out_max}", size)
        region(memory, out_ptr, size)[:] = payload  # the one copy: framework → guest memory
        write_u32(memory, written_ptr, size)

    # -- token streaming

    def _compute_single(self, context: int) -> None:
        self._contexts.get(context).compute_single()

    def _get_output_single(
        self, context: int, index: int, out_ptr: int, out_max: int, written_ptr: int
    ) -> None:
        self._copy_output(ExecutionContext.get_output_single, context, index, out_ptr, out_max, written_ptr)

    def _fini_single(self, context: int) -> None:
        self._contexts.get(context).fini_single()

    # -- lifetime

    @property
    def live_graphs(self) -> int:
        return len(self._graphs)

    @property
    def live_contexts(self) -> int:
        return len(self._contexts)

    def close(self) -> None:
        """Free every context and graph the guest still holds."""
        self.session.close()
        self._contexts.clear()
        self._graphs.clear()
        self._by_name.clear()
