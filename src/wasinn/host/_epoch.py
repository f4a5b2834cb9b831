"""wasmtime's epochs: the ticker that advances them, and a per-store check at each tick.

A store's epoch deadline traps its wasm code once the engine's epoch passes it; that is how
a time limit stops a spinning guest. A guest that may also be stopped from another thread
(a server's request whose client left) instead gets a deadline one tick ahead and a
callback at each tick (wasmtime's ``wasmtime_store_epoch_deadline_callback``, which
wasmtime-py does not wrap), which either stops it or moves the deadline on by one tick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import wasmtime

from wasinn.abi._ffi import EPOCH_CALLBACK, error_pointer, set_epoch_callback

EPOCH_TICK_SECONDS = 0.01
NO_DEADLINE = 1 << 62
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE: run on, no async yield


class EpochTicker:
    """Advances an engine's epoch every 10 ms while some run has a time limit."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._users = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> EpochTicker:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._stop = threading.Event()
                threading.Thread(
                    target=self._tick, args=(self._stop,), daemon=True, name="wasinn-epoch"
                ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._stop.set()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(EPOCH_TICK_SECONDS):
            self._engine.increment_epoch()


_tickers: dict[int, EpochTicker] = {}
_tickers_lock = threading.Lock()


def epoch_ticker(engine: wasmtime.Engine) -> EpochTicker:
    with _tickers_lock:
        return _tickers.setdefault(id(engine), EpochTicker(engine))


class EpochWatch:
    """Calls ``check`` at every epoch tick while the store runs wasm code.

    ``check`` returns None to let the guest run on, or the exception that stops it: the
    guest then traps, and :attr:`stopped` holds that exception for whoever called it. The
    callback runs on the guest's own thread. Keep this object as long as the store.
    """

    def __init__(self, store: wasmtime.Store, check: Callable[[], BaseException | None]) -> None:
        self.stopped: BaseException | None = None
        self._check = check
        self._native = EPOCH_CALLBACK(self._on_tick)
        set_epoch_callback(store, self._native)
        store.set_epoch_deadline(1)

    def _on_tick(self, _context: Any, _env: Any, delta: Any, kind: Any) -> int:
        try:
            stop = self._check()
        except BaseException as err:  # a bug in the check must not unwind through wasmtime
            stop = err
        if stop is None:
            delta[0] = 1
            kind[0] = _CONTINUE
            return 0
        self.stopped = stop
        return error_pointer(str(stop))
