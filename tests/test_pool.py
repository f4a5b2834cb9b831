"""serve/pool.py's GuestPool on the fake backend: slots, interruption, stuck slots, spool files.

Each request's guest (tests/wat_guests.py) reads its x from stdin and writes
``y = x * 2 + c`` (wasinn.testing.fake_backend), so every concurrent answer is checked
against its own request. A fake compute can take time, which holds a slot.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import wasmtime

from wasinn import Errno, Limits, Runtime
from wasinn.core import GuestCancelled, GuestTrap, TimeLimitExceeded
from wasinn.serve.pool import GuestPool
from wasinn.testing.fake_backend import FakeBackend, expected, fake_model
from wat_guests import nn_guest_wat, sleeper_wat, trap_wat


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[Callable[..., GuestPool]]:
    pools: list[GuestPool] = []

    def make(source: str, slots: int, limits: Limits | None = None) -> GuestPool:
        path = tmp_path / f"guest{len(pools)}.wasm"
        path.write_bytes(wasmtime.wat2wasm(source))
        pool = GuestPool(Runtime(cache=False, limits=limits), path, slots, name=f"test-{len(pools)}")
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
        pool.runtime.close()


def body(value: float) -> bytes:
    return struct.pack("<4f", value, value + 1, value + 2, value + 3)


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_slots_bound_how_many_run_at_once(
    make_pool: Callable[..., GuestPool], fake_backend: FakeBackend
) -> None:
    pool = make_pool(nn_guest_wat(fake_model(0.5, seconds=0.1), read_stdin=True), slots=2)
    seen: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen.append(pool.running)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(8) as workers:
            results = list(workers.map(lambda i: pool.run(body(float(i)), []), range(8)))
    finally:
        sampling.set()
        sampler.join()
    for i, result in enumerate(results):
        assert result.exit_code == 0
        np.testing.assert_array_equal(
            np.frombuffer(result.stdout, np.float32), expected(np.frombuffer(body(i), np.float32), 0.5)
        )
    assert fake_backend.stats.computes == 8
    assert fake_backend.stats.most_running == 2  # the slots were used, and never exceeded
    assert max(seen) == 2 and pool.running == 0


def test_interrupt_all_stops_every_running_guest(
    make_pool: Callable[..., GuestPool], fake_backend: FakeBackend
) -> None:
    pool = make_pool(nn_guest_wat(fake_model(seconds=30), read_stdin=True), slots=2)
    with ThreadPoolExecutor(2) as workers:
        running = [workers.submit(pool.run, body(1.0), []) for _ in range(2)]
        wait_for(lambda: fake_backend.stats.running == 2)
        started = time.monotonic()
        pool.interrupt_all("the server is going down")
        for future in running:
            with pytest.raises(GuestCancelled, match="the server is going down"):
                future.result(timeout=10)
    assert time.monotonic() - started < 5
    assert pool.running == 0 and fake_backend.stats.running == 0 and fake_backend.stats.open_contexts == 0


def test_interrupt_all_leaves_the_pool_usable(
    make_pool: Callable[..., GuestPool], fake_backend: FakeBackend
) -> None:
    pool = make_pool(nn_guest_wat(fake_model(), read_stdin=True), slots=1)
    pool.interrupt_all("nobody is running")  # nothing to stop; later runs are not affected
    result = pool.run(body(2.0), [])
    assert result.exit_code == 0
    np.testing.assert_array_equal(np.frombuffer(result.stdout, np.float32), expected([2, 3, 4, 5]))


def test_a_slot_past_the_time_limit_counts_as_stuck(make_pool: Callable[..., GuestPool]) -> None:
    """A guest in a host call that ignores the limit (WASI's sleep here, a native inference
    that ignores cancel() in production) holds its slot past the limit: stuck, until it ends."""
    pool = make_pool(sleeper_wat(0.6), slots=2, limits=Limits(time_limit_ms=100))
    assert pool.stuck == 0
    with ThreadPoolExecutor(1) as workers:
        future = workers.submit(pool.run, b"", [])
        wait_for(lambda: pool.stuck == 1)
        assert pool.running == 1
        with pytest.raises(TimeLimitExceeded):  # the loop after the sleep is wasm: the limit ends it
            future.result(timeout=10)
    assert pool.stuck == 0 and pool.running == 0


def test_a_trap_leaves_the_pool_usable(make_pool: Callable[..., GuestPool]) -> None:
    """One slot: a slot a trapped guest did not give back would block the next run forever."""
    pool = make_pool(trap_wat(), slots=1)
    for _ in range(3):
        with pytest.raises(GuestTrap, match="unreachable"):
            pool.run(b"", [])
    assert pool.running == 0


def test_a_failed_compute_is_an_exit_code_and_the_slot_comes_back(
    make_pool: Callable[..., GuestPool], fake_backend: FakeBackend
) -> None:
    failing = make_pool(nn_guest_wat(fake_model(raises="RuntimeError"), read_stdin=True), slots=1)
    working = make_pool(nn_guest_wat(fake_model(), read_stdin=True), slots=1)
    for _ in range(2):
        assert failing.run(body(1.0), []).exit_code == Errno.RUNTIME_ERROR
        assert working.run(body(1.0), []).exit_code == 0
    assert fake_backend.stats.open_contexts == 0


def test_close_removes_the_spool_once(make_pool: Callable[..., GuestPool], fake_backend: FakeBackend) -> None:
    pool = make_pool(nn_guest_wat(fake_model(), read_stdin=True), slots=3)
    spool = pool._spool
    assert sorted(p.name for p in spool.iterdir()) == ["0", "1", "2"]
    assert pool.run(body(0.0), []).exit_code == 0
    assert all(path.stat().st_size == 0 for path in spool.rglob("stdout"))  # no request's bytes kept
    pool.close()
    assert not spool.exists()
    pool.close()  # idempotent


def writer_wat(chunks: int, chunk_bytes: int, then_trap: bool = False) -> str:
    """A guest that writes ``chunks`` writes of ``chunk_bytes`` bytes of 'a' to stdout."""
    return f"""(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") {chunk_bytes // 65536 + 2})
      (func (export "_start") (local $i i32)
        (memory.fill (i32.const 64) (i32.const 97) (i32.const {chunk_bytes}))
        (i32.store (i32.const 0) (i32.const 64))
        (i32.store (i32.const 4) (i32.const {chunk_bytes}))
        (loop $more
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const {chunks}))))
        {"unreachable" if then_trap else ""}))"""


def test_a_streamed_stdout_reaches_the_caller_whole_and_in_pieces(
    make_pool: Callable[..., GuestPool],
) -> None:
    """A streamed run's stdout is a pipe: 4 MiB, far past a pipe's 64 KiB buffer, arrives
    whole while the guest writes; a guest that traps after writing ends the stream too."""
    pool = make_pool(writer_wat(64, 65536), slots=2)
    received: list[bytes] = []
    result = pool.run(b"", [], received.append)
    assert result.exit_code == 0 and result.stdout == b""
    assert b"".join(received) == b"a" * (64 * 65536)
    assert len(received) > 1
    trapping = make_pool(writer_wat(3, 1000, then_trap=True), slots=1)
    pieces: list[bytes] = []
    with pytest.raises(GuestTrap):
        trapping.run(b"", [], pieces.append)
    assert b"".join(pieces) == b"a" * 3000
    assert pool.run(b"", [], received.append).exit_code == 0  # the slot's pipe serves again
