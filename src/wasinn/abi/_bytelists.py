"""A fast ``list<u8>`` conversion for wasmtime-py components (spec wit-wasi-nn.md §9.4).

wasmtime-py converts a component ``list<u8>`` one element at a time, one Python call per
byte: about 1 µs per byte each way, 0.5 s for one 224×224 image. The C API hands the list
over as an array of ``wasmtime_component_val_t`` (32 bytes each, the kind byte first and the
payload at offset 8), so a strided copy moves all bytes at once.

This replaces two methods of wasmtime-py's private ``ListType``, for byte lists only, and
only when the value layout is the one measured on wasmtime-py 50; otherwise the stock
converter stays. Re-check it on every wasmtime upgrade (tests/test_wit.py covers both ways).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.abi import _ffi

_VAL = _ffi.COMPONENT_VAL
_STRIDE = 32
_PAYLOAD = 8

_lock = threading.Lock()
_stock: dict[str, Callable[..., Any]] = {}


def layout_matches() -> bool:
    """Whether the C value layout is the one this fast path was written for."""
    payload = getattr(_VAL, "of", None)
    return ctypes.sizeof(_VAL) == _STRIDE and payload is not None and payload.offset == _PAYLOAD


def _elements(data: Any, count: int) -> npt.NDArray[np.uint8]:
    """The ``count`` values at ``data`` as rows of 32 bytes (no copy)."""
    raw = (ctypes.c_ubyte * (count * _STRIDE)).from_address(ctypes.addressof(data.contents))
    return np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8).reshape(count, _STRIDE)


def _from_c(self: _ffi.ListType, c: Any) -> Any:
    if not self._is_bytes():
        return _stock["from"](self, c)
    try:
        count = int(c.of.list.size)
        return _elements(c.of.list.data, count)[:, _PAYLOAD].tobytes() if count else b""
    finally:
        _ffi.vallist_delete(c.of.list)


def _to_c(self: _ffi.ListType, store: Any, val: Any, ptr: Any) -> None:
    if not self._is_bytes():
        _stock["to"](self, store, val, ptr)
        return
    if not isinstance(val, bytes):
        raise TypeError("expected bytes value")
    raw = _ffi.new_vallist(len(val))
    if val:
        elements = _elements(raw.data, len(val))
        elements[:, 0] = _ffi.COMPONENT_U8
        elements[:, _PAYLOAD] = np.frombuffer(val, dtype=np.uint8)
    ptr.contents.kind = _ffi.COMPONENT_LIST
    ptr.contents.of.list = raw


_wanted = [True]  # False after enable(False): stay on the stock converter


def install() -> bool:
    """Switch byte lists to the fast path, once per process; False if the layout differs
    or the fast path was switched off with :func:`enable`."""
    with _lock:
        if _stock:
            return True
        if not _wanted[0] or not layout_matches():
            return False
        _stock["from"] = _ffi.ListType.convert_from_c
        _stock["to"] = _ffi.ListType.convert_to_c
        _ffi.ListType.convert_from_c = _from_c  # type: ignore[method-assign]
        _ffi.ListType.convert_to_c = _to_c  # type: ignore[method-assign]
        return True


def enable(wanted: bool) -> None:
    """Use the fast path (the default) or wasmtime-py's own converter (to compare the two)."""
    with _lock:
        _wanted[0] = wanted
        if not wanted and _stock:
            _ffi.ListType.convert_from_c = _stock.pop("from")  # type: ignore[method-assign]
            _ffi.ListType.convert_to_c = _stock.pop("to")  # type: ignore[method-assign]
    if wanted:
        install()
