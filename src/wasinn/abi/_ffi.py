"""Every use of wasmtime-py's private API, in one place (checked on wasmtime-py 50).

wasinn reaches below wasmtime-py's public surface five times, each for a measured reason:
the unchecked i32 host-function callback (~3 µs a call instead of ~40 µs, abi/_fastcall.py),
the bulk ``list<u8>`` converter for components (abi/_bytelists.py), the per-store epoch
callback that stops a guest from another thread (host/_epoch.py), stdin given as bytes
(a server's request body, no file), and the pooling allocator for the warm host's engine
(a guest reading 14 MB through WASI: 11.7 ms into fresh memory, 3.9 ms into a kept slot).
Nothing else in the package imports ``wasmtime._*``
(tests/test_layout.py checks it); an upgrade of wasmtime-py is re-checked here.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import _types as component_types

try:  # absent from another wasmtime-py: abi/_fastcall.py falls back to the public path
    from wasmtime import _bindings as _wasmtime_bindings

    UNCHECKED_CALLBACK: Any = _wasmtime_bindings.wasmtime_func_unchecked_callback_t
    DEFINE_UNCHECKED: Any = _wasmtime_bindings.wasmtime_linker_define_func_unchecked
except (ImportError, AttributeError):
    UNCHECKED_CALLBACK = None
    DEFINE_UNCHECKED = None

ListType = component_types.ListType
COMPONENT_VAL = ffi.wasmtime_component_val_t

# wasmtime_error_t *(*)(wasmtime_context_t *, void *env, uint64_t *delta, uint8_t *kind)
EPOCH_CALLBACK: Any = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


def set_epoch_callback(store: wasmtime.Store, callback: Any) -> None:
    """``wasmtime_store_epoch_deadline_callback`` (wasmtime-py does not wrap it); the caller
    keeps ``callback`` (an :data:`EPOCH_CALLBACK`) alive as long as the store."""
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)


def error_pointer(message: str) -> int:
    """A new ``wasmtime_error_t *`` for a callback to return (wasmtime takes ownership)."""
    error = ffi.wasmtime_error_new(message.encode())
    return ctypes.cast(error, ctypes.c_void_p).value or 0


def trap_pointer(message: str) -> int:
    """A new ``wasm_trap_t *`` for an unchecked callback to return (wasmtime takes ownership)."""
    trap = wasmtime.Trap(message)._consume()
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


def use_pooling_allocator(
    config: wasmtime.Config, *, instances: int, keep_resident: int, warm_slots: int, max_memory: int = 4 << 30
) -> bool:
    """Instances of engines made from ``config`` take their memories, tables and instance
    state from pools of ``instances`` slots each, whose first ``keep_resident`` bytes of
    linear memory stay mapped between instances (zeroed, not given back to the kernel) in at
    most ``warm_slots`` unused slots: a guest that reads a large file pays no page faults for
    it. False where this wasmtime-py lacks the C API. More instances at once than the pools
    hold fail to instantiate."""
    try:
        pooling = _wasmtime_bindings.wasmtime_pooling_allocation_config_new()
    except (NameError, AttributeError):
        return False
    bindings = _wasmtime_bindings
    bindings.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pooling, keep_resident)
    bindings.wasmtime_pooling_allocation_config_max_memory_size_set(pooling, max_memory)
    bindings.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(pooling, warm_slots)
    for total in ("memories", "tables", "core_instances", "component_instances", "stacks"):
        getattr(bindings, f"wasmtime_pooling_allocation_config_total_{total}_set")(pooling, instances)
    # componentize-py guests hold tables of tens of thousands of functions
    bindings.wasmtime_pooling_allocation_config_table_elements_set(pooling, 1 << 20)
    bindings.wasmtime_pooling_allocation_strategy_set(config.ptr(), pooling)
    bindings.wasmtime_pooling_allocation_config_delete(pooling)  # the config copied it
    return True


def raise_error(error: Any) -> None:
    """Raise the ``wasmtime_error_t *`` a C call returned as wasmtime-py's exception."""
    raise wasmtime.WasmtimeError._from_ptr(error)


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """The guest reads ``data`` as its stdin, straight from memory (wasmtime-py exposes
    only files; a file's stream is read ahead in small pieces: 10 ms more for 5.5 MB)."""
    vector = ffi.wasm_byte_vec_t()
    # wasm_byte_vec_new copies data; the config then owns (and frees) the copy.
    source = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))  # no copy
    ffi.wasm_byte_vec_new(ctypes.byref(vector), len(data), source)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vector))


def vallist_delete(values: Any) -> None:
    ffi.wasmtime_component_vallist_delete(ctypes.byref(values))


def new_vallist(count: int) -> Any:
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, count)
    return raw


COMPONENT_U8: int = ffi.WASMTIME_COMPONENT_U8.value
COMPONENT_LIST: Any = ffi.WASMTIME_COMPONENT_LIST
