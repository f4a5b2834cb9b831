"""Host functions of ``(i32 …) -> i32`` through wasmtime's unchecked C callback.

wasmtime-py's ``Linker.define_func`` boxes every parameter and result in ``Val`` objects
and costs ~40 µs per call; a raw callback that reads the i32 slots directly costs ~3 µs
(measured with ``wasinn bench``, call-overhead). This reaches into wasmtime-py's private
``_bindings`` module (through abi/_ffi.py), so the package pins wasmtime below 51 and falls back to
``define_func`` when those names are missing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import wasmtime

from wasinn.abi._ffi import DEFINE_UNCHECKED as _DEFINE
from wasinn.abi._ffi import UNCHECKED_CALLBACK as _CALLBACK_TYPE
from wasinn.abi._ffi import raise_error, trap_pointer

_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)


def define_i32_func(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    arity: int,
    func: Callable[..., int | None],
    park: Callable[[BaseException], None],
    *,
    returns: bool = True,
) -> Any:
    """Define ``module.name`` taking ``arity`` i32s and returning one i32 (or nothing).

    An exception from ``func`` traps the guest after ``park(exception)`` hands it to the
    instance that made the call, so that the instance re-raises its own exception; the
    process-wide slot wasmtime-py uses would mix up exceptions of guests in other threads.
    Returns the native callback, which the caller must keep alive as long as the linker
    and any instance made from it.
    """
    i32 = wasmtime.ValType.i32()
    func_type = wasmtime.FuncType([i32] * arity, [i32] if returns else [])
    if _DEFINE is None:

        def parked(*params: int) -> int | None:
            # wasmtime-py also keeps the exception, but in one slot for every thread.
            try:
                return func(*params)
            except BaseException as err:
                park(err)
                raise

        linker.define_func(module, name, func_type, parked)
        return parked

    def callback(_env: Any, _caller: Any, slots: Any, _count: int) -> int:
        try:
            result = func(*[slots[i].i32 for i in range(arity)])
            if returns:
                slots[0].i32 = result
            return 0
        except BaseException as err:
            park(err)
            return trap_pointer("python exception")

    native = _CALLBACK_TYPE(callback)
    module_bytes, name_bytes = module.encode(), name.encode()
    error = _DEFINE(
        linker.ptr(),
        ctypes.create_string_buffer(module_bytes),
        len(module_bytes),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        func_type.ptr(),
        native,
        None,
        _NO_FINALIZER,  # the returned callback's owner keeps it alive instead
    )
    if error:
        raise_error(error)
    return native
