"""Hypothesis fuzzing of every ``wasi_ephemeral_nn`` import against a reference model of the spec.

Each call goes through the WAT probe guest (wasm → host, as a compiled guest calls), with
pointers biased toward the edges of guest memory and of u32, hostile lengths, counts,
handles, enum words, dims whose products overflow u32/u64 and random record bytes. For
every call the test checks:

* no host exception and no trap escapes: the call returns an int;
* the errno equals the one the reference model (``World.ref_*``, spec §2 bounds, §3 enums,
  §4 check order, §6.1 OpenVINO, wasinn's documented differences) computes from the
  arguments and the handle state; where a backend other than OpenVINO decides, it is in
  the allowed set;
* guest memory outside the out-pointers is untouched (whole-memory snapshots), the handle
  written on success is the next one (spec §4.0), and ``get_output`` writes the right bytes;
* the host's live graph/context counts match the model's.

The number of calls is printed at the end of the module (``pytest -s``) and recorded in
``docs/robustness.md``.
"""

from __future__ import annotations

import logging
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Probe, make_probe
from wasinn import Errno, Runtime
from wasinn.abi._wasmedge import CODE_OF_ENCODING, TARGET_CODES
from wasinn.abi._wasmedge import ENCODING_CODES as ENCODINGS_BY_CODE
from wasinn.backends import backends
from wasinn.core import GraphEncoding, ModelConfig, NNError

pytestmark = pytest.mark.usefixtures("openvino_available")

U32 = 0xFFFFFFFF
MEM = 65536  # one wasm page: the probe's memory
F32 = 1

# Guest memory layout of the fuzzing world (restored before every call).
OUT_AREA = 64  # in-bounds out-pointers
STATIC = 4096  # the tiny model's builders, names and a valid tensor
FILLER = 12288  # pseudo-random bytes, so random pointers read junk
FILLER_END = 16384
SCRATCH = 16384  # per-call structures (builder arrays, records, dims, data, names)
TAIL = MEM - 256  # the last bytes: zeros, so records that straddle the end read zeros

W = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
B = np.array([0.5, 0.5, -0.5, 1.0], dtype=np.float32)

ENCODING_CODES = set(ENCODINGS_BY_CODE)
CODE_OF_TARGET = {target: code for code, target in TARGET_CODES.items()}
# Backend-decided errno for loads of random bytes by frameworks other than OpenVINO.
BACKEND_LOAD_ERRNOS = frozenset({0, 1, 2, 3, 4, 5})


def config_outcome(config: bytes) -> tuple[int | None, int]:
    """(errno, target) of a non-empty config for an uncached OpenVINO preload.

    WasmEdge appends the config as a third builder, which OpenVINO refuses (1). wasinn parses
    it as JSON (``wasinn.core.ModelConfig``, its own format, not the spec's): that parser is
    the oracle here, and a ``device`` in it replaces the preloaded target.
    """
    try:
        settings = ModelConfig.parse(config)
    except NNError as err:
        return int(err.errno), 0
    return None, (CODE_OF_TARGET[settings.device] if settings.device is not None else 0)


def tiny_reference(data: bytes) -> np.ndarray:
    x = np.frombuffer(data, "<f4").astype(np.float32)
    with np.errstate(all="ignore"):
        return np.maximum(x * W + B, np.float32(0))


def fits(ptr: int, length: int, *, lax: bool = False) -> bool:
    """Spec §2.1 in unbounded integers; ``lax``: WasmEdge's zero-length quirk (load, set_input)."""
    return (lax and length == 0) or ptr + length <= MEM


def u32_at(memory: bytes, ptr: int) -> int:
    value: int = struct.unpack_from("<I", memory, ptr)[0]
    return value


@dataclass
class Expect:
    """What the reference model predicts for one call."""

    errno: int | frozenset[int]
    why: str
    writes: tuple[tuple[int, int], ...] = ()  # allowed (ptr, length) writes on success
    handle: int | None = None  # the u32 expected at ``writes[0]`` on success
    apply: Callable[[int], None] | None = None  # state update, given the errno

    def allows(self, errno: int) -> bool:
        return errno in self.errno if isinstance(self.errno, frozenset) else errno == self.errno


def fail(errno: int, why: str) -> Expect:
    return Expect(errno, why)


@dataclass
class ShadowContext:
    graph: int
    input: bytes | None = None
    output: np.ndarray | None = None


@dataclass
class World:
    """The probe guest, its memory layout, and the reference model's handle state."""

    probe: Probe
    xml: bytes
    weights: bytes
    baseline: bytearray = field(default_factory=lambda: bytearray(MEM))
    graphs: dict[int, str] = field(default_factory=dict)  # live graph → preload name ("" for load)
    contexts: dict[int, ShadowContext] = field(default_factory=dict)
    dead_graphs: list[int] = field(default_factory=list)
    dead_contexts: list[int] = field(default_factory=list)
    next_graph: int = 0
    next_context: int = 0
    cache: dict[bytes, int] = field(default_factory=dict)
    calls: int = 0
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)
    foreign_loads: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)

    # ------------------------------------------------------------------ layout

    def lay_out(self) -> None:
        self.xml_ptr = STATIC
        self.weights_ptr = self.xml_ptr + len(self.xml) + 8
        self.builders_ptr = (self.weights_ptr + len(self.weights) + 15) // 16 * 16
        self.name_m = self.builders_ptr + 16
        self.name_bad = self.name_m + 8
        self.name_path = self.name_bad + 8
        self.dims_ptr = self.name_path + 16
        self.data_ptr = self.dims_ptr + 8
        self.record_ptr = self.data_ptr + 16
        end = self.record_ptr + 20
        assert end < FILLER
        put = self._put_baseline
        put(self.xml_ptr, self.xml)
        put(self.weights_ptr, self.weights)
        put(
            self.builders_ptr,
            struct.pack("<4I", self.xml_ptr, len(self.xml), self.weights_ptr, len(self.weights)),
        )
        put(self.name_m, b"m")
        put(self.name_bad, b"bad")
        put(self.name_path, b"/etc/passwd")
        put(self.dims_ptr, struct.pack("<2I", 1, 4))
        put(self.data_ptr, struct.pack("<4f", 1.0, 2.0, 3.0, 4.0))
        put(self.record_ptr, struct.pack("<5I", self.dims_ptr, 2, F32, self.data_ptr, 16))
        put(FILLER, np.random.default_rng(0).integers(0, 256, FILLER_END - FILLER, np.uint8).tobytes())
        self.baseline_bytes = bytes(self.baseline)

    def _put_baseline(self, ptr: int, data: bytes) -> None:
        self.baseline[ptr : ptr + len(data)] = data

    # ------------------------------------------------------------------ calling

    def run(self, name: str, args: tuple[int, ...], scratch: Sequence[tuple[int, bytes]] = ()) -> int:
        probe = self.probe
        probe.write(0, self.baseline_bytes)
        for ptr, data in scratch:
            probe.write(ptr, data)
        before = probe.snapshot()
        expect: Expect = getattr(self, "ref_" + name)(before, *args)
        result = probe.call(name, *args)  # a host exception or a trap fails the test here
        after = probe.snapshot()
        self.calls += 1
        shown = f"{name}({', '.join(hex(a) for a in args)})"
        assert isinstance(result, int), f"{shown} returned {result!r}"
        self.outcomes[(name, result)] += 1
        assert expect.allows(result), f"{shown}: errno {result}, expected {expect.errno} ({expect.why})"
        self._check_writes(shown, name, args, expect, result, before, after)
        if expect.apply is not None:
            expect.apply(result)
        nn = probe.instance.nn
        assert (nn.live_graphs, nn.live_contexts) == (len(self.graphs), len(self.contexts)), shown
        return result

    def _check_writes(
        self,
        shown: str,
        name: str,
        args: tuple[int, ...],
        expect: Expect,
        result: int,
        before: bytes,
        after: bytes,
    ) -> None:
        changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
        if name in ("get_output", "get_output_single"):
            _, _, out_ptr, _, written_ptr = args
            allowed = {0: ((out_ptr, 16), (written_ptr, 4)), 7: ((written_ptr, 4),)}.get(result, ())
        else:
            allowed = expect.writes if result == 0 else ()
        for offset in changed:
            assert any(start <= offset < start + length for start, length in allowed), (
                f"{shown} -> {result}: guest byte {offset:#x} changed outside {allowed}"
            )
        if result == 0 and expect.handle is not None:
            assert u32_at(after, expect.writes[0][0]) == expect.handle, f"{shown}: wrong handle written"
        if name == "get_output" and result in (0, 7):
            _, _, out_ptr, _, written_ptr = args
            assert u32_at(after, written_ptr) == 16, f"{shown}: bytes_written is not 16"
            overlaps = written_ptr < out_ptr + 16 and out_ptr < written_ptr + 4
            context = self.contexts[args[0]]
            if result == 0 and not overlaps and context.output is not None:
                got = np.frombuffer(after[out_ptr : out_ptr + 16], "<f4")
                mask = np.isfinite(context.output)
                np.testing.assert_allclose(got[mask], context.output[mask], rtol=1e-5, atol=1e-30)

    # ------------------------------------------------------------------ state helpers

    def _new_graph(self, name: str, cache_key: bytes | None = None) -> Callable[[int], None]:
        def apply(result: int) -> None:
            if result == 0:
                handle = self.next_graph
                self.next_graph += 1
                self.graphs[handle] = name
                if cache_key is not None:
                    self.cache[cache_key] = handle

        return apply

    def _new_context(self, graph: int) -> Callable[[int], None]:
        def apply(result: int) -> None:
            if result == 0:
                self.contexts[self.next_context] = ShadowContext(graph)
                self.next_context += 1

        return apply

    # ------------------------------------------------------------------ the reference model

    def ref_load(
        self, memory: bytes, builders: int, count: int, encoding: int, target: int, out: int
    ) -> Expect:
        if not fits(out, 4):
            return fail(1, "graph out-pointer out of bounds")
        if target > 3:  # wasinn accepts AUTO (3) in load; WasmEdge refuses it (documented)
            return fail(1, "unknown target")
        if not fits(builders, count * 8, lax=True):
            return fail(1, "builder array out of bounds")
        entries = [struct.unpack_from("<II", memory, builders + 8 * i) for i in range(count)]
        for ptr, length in entries:
            if not fits(ptr, length, lax=True):
                return fail(1, "builder blob out of bounds")
        code = encoding & 0xFF
        if code not in ENCODING_CODES:
            return fail(2, "unknown encoding")
        info = {CODE_OF_ENCODING[info.encoding]: info for info in backends()}.get(code)
        if info is None:
            return fail(2 if ENCODINGS_BY_CODE[code] is GraphEncoding.AUTODETECT else 1, "no such backend")
        if not info.installed:
            return fail(1, "framework not installed")
        success = Expect(0, "load", ((out, 4),), self.next_graph, self._new_graph(""))
        blobs = [memory[ptr : ptr + length] for ptr, length in entries]
        if ENCODINGS_BY_CODE[code] is not GraphEncoding.OPENVINO:
            foreign = self._foreign(code, tuple(len(blob) for blob in blobs))
            return Expect(BACKEND_LOAD_ERRNOS, "backend decides", success.writes, None, foreign)
        if count != 2:
            return fail(1, "openvino wants 2 builders")
        if target in (1, 2):
            return fail(5, "no GPU/NPU device")
        if blobs == [self.xml, self.weights]:
            return success
        if blobs[0].startswith(self.xml.rstrip()):
            success.errno, success.why = frozenset({0, 5}), "the IR with other weights"
            return success
        return fail(5, "not an IR")

    def _foreign(self, encoding: int, sizes: tuple[int, ...]) -> Callable[[int], None]:
        """Another backend (or autodetect) accepted the builders: note them, unload the graph."""

        def apply(result: int) -> None:
            if result == 0:
                self.foreign_loads.append((encoding, sizes))
                handle = self.next_graph
                self._new_graph("")(0)
                assert self.run("unload", (handle,)) == 0

        return apply

    def ref_load_by_name(self, memory: bytes, name_ptr: int, name_len: int, out: int) -> Expect:
        return self._ref_by_name(memory, name_ptr, name_len, 0, 0, out, with_config=False)

    def ref_load_by_name_with_config(
        self, memory: bytes, name_ptr: int, name_len: int, config_ptr: int, config_len: int, out: int
    ) -> Expect:
        return self._ref_by_name(memory, name_ptr, name_len, config_ptr, config_len, out, with_config=True)

    def _ref_by_name(
        self,
        memory: bytes,
        name_ptr: int,
        name_len: int,
        config_ptr: int,
        config_len: int,
        out: int,
        *,
        with_config: bool,
    ) -> Expect:
        if not fits(out, 4):
            return fail(1, "graph out-pointer out of bounds")
        if not fits(name_ptr, name_len):
            return fail(1, "name out of bounds (strict check, spec §2.1)")
        if with_config and not fits(config_ptr, config_len):
            return fail(1, "config out of bounds")
        name = memory[name_ptr : name_ptr + name_len]
        if name in self.cache:
            return Expect(0, "cached name", ((out, 4),), self.cache[name])
        if name not in (b"m", b"bad"):
            return fail(8, "not preloaded")
        target = 0
        if with_config and config_len > 0:
            problem, target = config_outcome(memory[config_ptr : config_ptr + config_len])
            if problem is not None:
                return fail(problem, "config refused")
        if name == b"bad":
            return fail(5, "preloaded IR is corrupt")
        if target in (1, 2):
            return fail(5, "config asks for a GPU/NPU device")
        return Expect(0, "load_by_name", ((out, 4),), self.next_graph, self._new_graph("m", name))

    def ref_unload(self, _memory: bytes, graph: int) -> Expect:
        if graph not in self.graphs:
            return fail(1, "unknown graph")

        def apply(result: int) -> None:
            name = self.graphs.pop(graph)
            self.dead_graphs.append(graph)
            if name and self.cache.get(name.encode()) == graph:
                del self.cache[name.encode()]

        return Expect(0, "unload", apply=apply)

    def ref_init_execution_context(self, _memory: bytes, graph: int, out: int) -> Expect:
        if not fits(out, 4):
            return fail(1, "context out-pointer out of bounds")
        if graph not in self.graphs:
            return fail(1, "unknown or unloaded graph")
        return Expect(0, "init", ((out, 4),), self.next_context, self._new_context(graph))

    def ref_finalize_execution_context(self, _memory: bytes, context: int) -> Expect:
        if context not in self.contexts:
            return fail(1, "unknown context")

        def apply(result: int) -> None:
            del self.contexts[context]
            self.dead_contexts.append(context)

        return Expect(0, "finalize", apply=apply)

    def ref_set_input(self, memory: bytes, context: int, index: int, tensor: int) -> Expect:
        if not fits(tensor, 20):
            return fail(1, "tensor record out of bounds")
        dims_ptr, dims_len, type_word, data_ptr, data_len = struct.unpack_from("<5I", memory, tensor)
        if not fits(dims_ptr, dims_len * 4, lax=True):
            return fail(1, "dims out of bounds")
        if not fits(data_ptr, data_len, lax=True):
            return fail(1, "data out of bounds")
        kind = type_word & 0xFF
        if kind > 5:  # wasinn passes F64 (legacy U8) and I64 on to the backend (documented)
            return fail(1, "unknown tensor type")
        shadow = self.contexts.get(context)
        if shadow is None:
            return fail(1, "unknown context")
        if shadow.graph not in self.graphs:
            return fail(1, "graph unloaded")
        dims = struct.unpack_from(f"<{dims_len}I", memory, dims_ptr) if dims_len else ()
        # The tiny model: one f32 input of shape [1, 4] (spec §6.1 + wasinn's length check).
        if index != 0 or dims_len > 8 or kind != F32 or data_len != math.prod(dims) * 4:
            return fail(1, "openvino rejects index/rank/type/length")
        if dims != (1, 4):
            return fail(1, "openvino rejects the dims")
        data = memory[data_ptr : data_ptr + 16]

        def apply(result: int) -> None:
            shadow.input = data

        return Expect(0, "set_input", apply=apply)

    def ref_compute(self, _memory: bytes, context: int) -> Expect:
        shadow = self.contexts.get(context)
        if shadow is None:
            return fail(1, "unknown context")
        if shadow.graph not in self.graphs:
            return fail(1, "graph unloaded")
        if shadow.input is None:
            return fail(5, "openvino: compute before set_input")
        data = shadow.input

        def apply(result: int) -> None:
            shadow.output = tiny_reference(data)

        return Expect(0, "compute", apply=apply)

    def ref_get_output(
        self,
        _memory: bytes,
        context: int,
        index: int,
        out: int,
        out_max: int,
        written: int,
        single: bool = False,
    ) -> Expect:
        if not fits(out, out_max):
            return fail(1, "output buffer out of bounds (strict)")
        if not fits(written, 4):
            return fail(1, "bytes_written out-pointer out of bounds")
        shadow = self.contexts.get(context)
        if shadow is None:
            return fail(1, "unknown context")
        if single:
            return fail(1, "openvino has no streaming")
        if index != 0:
            return fail(1, "output index out of range")
        if shadow.output is None:
            return fail(5, "openvino: get_output before compute")
        if out_max < 16:
            return fail(7, "buffer too small")
        return Expect(0, "get_output")

    def ref_get_output_single(self, memory: bytes, *args: int) -> Expect:
        return self.ref_get_output(memory, *args, single=True)

    def ref_compute_single(self, _memory: bytes, context: int) -> Expect:
        return fail(1, "unknown context, or openvino has no streaming")

    def ref_fini_single(self, _memory: bytes, context: int) -> Expect:
        return fail(1, "unknown context, or openvino has no streaming")

    # ------------------------------------------------------------------ keeping the world usable

    def replenish(self) -> None:
        """At least one graph and two contexts, one of them computed (checked calls too)."""
        if not self.graphs:
            assert self.run("load", (self.builders_ptr, 2, 0, 0, OUT_AREA)) == 0
        while len(live := [c for c, s in self.contexts.items() if s.graph in self.graphs]) < 2:
            assert self.run("init_execution_context", (max(self.graphs), OUT_AREA)) == 0
        if not any(self.contexts[c].output is not None for c in live):
            assert self.run("set_input", (live[0], 0, self.record_ptr)) == 0
            assert self.run("compute", (live[0],)) == 0
        while len(self.contexts) > 40:  # keep the host's tables (and our draws) small
            assert self.run("finalize_execution_context", (min(self.contexts),)) == 0
        while len(self.graphs) > 12:
            assert self.run("unload", (min(self.graphs),)) == 0


# ---------------------------------------------------------------------- argument generation
#
# Hypothesis draws one byte string per example; ``Source`` decodes it into arguments through
# tables of edge values (a "fuzzed data provider"). One ``st.binary`` draw is ~10x cheaper
# than a dozen structured draws, which is what lets >10,000 checked calls fit in the time
# budget, and hypothesis still explores, mutates and shrinks the bytes (toward zeros, which
# decode to the first, simplest choice of every table).


T = TypeVar("T")


class Source:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def byte(self) -> int:
        value = self.raw[self.pos] if self.pos < len(self.raw) else 0
        self.pos += 1
        return value

    def u32(self) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(4)), "little")

    def below(self, n: int) -> int:
        return (self.byte() if n <= 256 else self.u32()) % n

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def blob(self, max_len: int) -> bytes:
        return bytes(self.byte() for _ in range(self.below(max_len + 1)))


HIGH = [0x7FFFFFFC, 0x7FFFFFFF, 0x80000000, 0x80000004, *range(0xFFFFFFF0, 0x100000000)]


def pointer(src: Source, size: int = 4) -> int:
    """Biased toward 0, the end of memory (minus ``size``), 2**31 and the top of u32."""
    kind = src.below(5)
    if kind == 0:
        return src.pick(
            [0, 1, 2, 3, 4, *range(MEM - size - 4, MEM - size + 5), *range(MEM - 4, MEM + 5), *HIGH]
        )
    if kind == 1:
        return src.below(MEM + 1)
    if kind == 2:
        return src.u32()
    if kind == 3:
        return src.pick([OUT_AREA, OUT_AREA + 1, OUT_AREA + 3, SCRATCH + 512])
    return src.pick([MEM - size, MEM - size + 1, MEM, 0xFFFFFFFF, 0x80000000])


LENGTH_EDGES = [
    0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 19, 20, 21, MEM - 1, MEM, MEM + 1,
    0x1FFFFFFF, 0x20000000, 0x20000001, 0x3FFFFFFF, 0x40000000, 0x40000001,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, U32,
]  # fmt: skip


def length(src: Source) -> int:
    kind = src.below(4)
    if kind == 0:
        return src.pick(LENGTH_EDGES)
    if kind == 1:
        return src.below(65)
    return src.below(MEM + 1) if kind == 2 else src.u32()


def count(src: Source) -> int:
    return (
        src.pick([0, 1, 2, 3, 4, 0x20000000, 0x1FFFFFFF, 0x10000000, U32]) if src.byte() & 1 else length(src)
    )


def word(src: Source, favourites: Sequence[int]) -> int:
    kind = src.below(4)
    if kind == 0:
        return src.pick(favourites)
    if kind == 1:
        return src.pick([0, 5, 6, 7, 8, 9, 15, 255, 256, 257, 0x101, 0x105, 0xFFFFFF01, 0x7FFFFFFF, U32])
    return src.below(17) if kind == 2 else src.u32()


ENCODINGS = [2, 0, 0, 0, 1, 3, 4, 5, 6, 8, 14, 15, 256, 261, 264, U32]
TARGETS = [0, 0, 0, 1, 2, 3, 4, 9, 256, U32]
TYPES = [1, 1, 1, 0, 2, 3, 4, 5, 6, 9, 0xFF, 0x101, 0x102, 0x201, U32]
INDICES = [0, 0, 0, 1, 2, 10, 0x7FFFFFFF, 0x80000000, U32]

DIM_EDGES = [
    0,
    1,
    2,
    3,
    4,
    224,
    0xFFFF,
    0x10000,
    0x10001,
    0x40000000,
    0x40000001,
    0x7FFFFFFF,
    0x80000000,
    U32,
]
OVERFLOWING_DIMS = [
    [1, 4],
    [0x10000, 0x10000],  # product 2**32: wraps to 0 in u32
    [0x10000, 0x10000, 0x10000, 0x10000],  # 2**64: wraps to 0 in u64
    [1, 0x40000001],  # f32 bytes 2**32 + 4: wraps to 4 in u32
    [0x40000000, 4],  # f32 bytes 2**34
    [U32, U32, U32],  # beyond u64
    [0, U32, U32],  # zero elements, huge dims
    [U32, U32, U32, 0],
    [0, 0x80000000, 0x80000000, 4],
    [1, 4, 1],
    [4, 1],
    [1, 1, 4],
    [1] * 9,
    [1, 4] + [1] * 7,
    [],
]


def dims_list(src: Source) -> list[int]:
    if src.byte() & 1:
        return list(src.pick(OVERFLOWING_DIMS))
    return [src.pick(DIM_EDGES) if src.byte() & 1 else src.u32() for _ in range(src.below(11))]


SPECIAL_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    3.4e38,
    -3.4e38,
    1e-45,
    1e-38,
]


def tensor_data(src: Source) -> bytes:
    if src.byte() & 1:
        return bytes(src.byte() for _ in range(16))
    return struct.pack("<4f", *(src.pick(SPECIAL_FLOATS) for _ in range(4)))


class Scratch:
    """A bump allocator over the scratch area for one call's structures."""

    def __init__(self, src: Source) -> None:
        self.cursor = SCRATCH + src.below(8)
        self.writes: list[tuple[int, bytes]] = []

    def put(self, blob: bytes) -> int:
        ptr = self.cursor
        assert ptr + len(blob) <= TAIL, "scratch overflow"
        self.writes.append((ptr, blob))
        self.cursor = ptr + len(blob) + 4
        return ptr


def handle_of(src: Source, ready: list[int], live: list[int], dead: list[int], next_handle: int) -> int:
    """A ready (computed context), live, recently dead, next, special or random handle."""
    kind = src.pick(["ready", "ready", "live", "live", "dead", "special", "random"])
    if kind == "random":
        return src.u32()
    special = [next_handle, next_handle + 1, 0, 1, 9999, 0x7FFFFFFF, 0x80000000, U32]
    pool = {"ready": ready, "live": live, "dead": dead[-8:]}.get(kind) or special
    return src.pick(pool)


def graph_handle(world: World, src: Source) -> int:
    live = sorted(world.graphs)
    return handle_of(src, live, live, world.dead_graphs, world.next_graph)


def context_handle(world: World, src: Source) -> int:
    ready = [c for c, shadow in sorted(world.contexts.items()) if shadow.output is not None]
    return handle_of(src, ready, sorted(world.contexts), world.dead_contexts, world.next_context)


def out_pointer(src: Source) -> int:
    return src.pick([OUT_AREA, OUT_AREA + 4, 0]) if src.byte() & 1 else pointer(src, 4)


Generated = tuple[tuple[int, ...], list[tuple[int, bytes]]]


# ---------------------------------------------------------------------- per-call generators


def gen_load(world: World, src: Source) -> Generated:
    scratch = Scratch(src)
    # Zero bytes (where hypothesis shrinks to) decode to the first, cheap choice; a valid load
    # compiles the model (~70 ms), so it is one choice in five.
    shape = src.pick(["entries", "random", "static-count", "ir-variants", "valid"])
    if shape == "valid":
        builders, n = world.builders_ptr, 2
    elif shape == "static-count":
        builders, n = world.builders_ptr, count(src)
    elif shape == "random":
        builders, n = pointer(src, 8), count(src)
    else:
        xml, weights = (world.xml_ptr, len(world.xml)), (world.weights_ptr, len(world.weights))
        variants = [
            xml, weights, (xml[0], xml[1] - 1), (xml[0], 0), (weights[0], 16), (xml[0] + 1, xml[1]),
            (weights[0], 0), (0xFFFFFFF0, 0), (MEM, 0), (MEM - 1, 1), (MEM - 1, 2),
        ]  # fmt: skip
        entries = [
            (pointer(src), length(src)) if shape == "entries" else src.pick(variants)
            for _ in range(src.below(6))
        ]
        builders = scratch.put(b"".join(struct.pack("<II", p, n) for p, n in entries) or b"\0" * 8)
        n = len(entries) if src.byte() & 1 else count(src)
    return (builders, n, word(src, ENCODINGS), word(src, TARGETS), out_pointer(src)), scratch.writes


def gen_load_by_name(world: World, src: Source, with_config: bool = False) -> Generated:
    scratch = Scratch(src)
    choice = src.pick(["m", "m", "bad", "path", "bytes", "random"])
    if choice == "m":
        name_ptr, name_len = world.name_m, src.pick([1, 1, 1, 0, 2])
    elif choice == "bad":
        name_ptr, name_len = world.name_bad, 3
    elif choice == "path":
        name_ptr, name_len = world.name_path, 11
    elif choice == "bytes":
        raw = src.blob(12) if src.byte() & 1 else src.pick([b"M", b"m\0", b"\xff\xfe", b"m ", b"bad\0"])
        name_ptr, name_len = scratch.put(raw), len(raw)
    else:
        name_ptr, name_len = pointer(src, 1), length(src)
    args: tuple[int, ...] = (name_ptr, name_len)
    if with_config:
        config = src.pick(
            [b"", b"", b"{}", b'{"ctx-size":1}', b"\0" * 4, b'{"threads":1}', b'{"device":"gpu"}', b"[1]"]
        )
        if src.byte() & 1:
            args += (scratch.put(config or b"\0"), len(config))
        else:
            args += (pointer(src, 1), length(src))
    return (*args, out_pointer(src)), scratch.writes


def gen_load_by_name_with_config(world: World, src: Source) -> Generated:
    return gen_load_by_name(world, src, with_config=True)


def gen_init_execution_context(world: World, src: Source) -> Generated:
    return (graph_handle(world, src), out_pointer(src)), []


def gen_set_input(world: World, src: Source) -> Generated:
    scratch = Scratch(src)
    shape = src.pick(["valid", "valid", "structured", "structured", "random-bytes", "random-pointer"])
    if shape == "valid":
        dims_ptr = scratch.put(struct.pack("<2I", 1, 4))
        data_ptr = scratch.put(tensor_data(src))
        tensor = scratch.put(struct.pack("<5I", dims_ptr, 2, word(src, TYPES), data_ptr, 16))
    elif shape == "structured":
        dims = dims_list(src)
        kind = word(src, TYPES)
        dims_ptr = scratch.put(struct.pack(f"<{len(dims)}I", *dims)) if dims else pointer(src)
        dims_len = len(dims) if src.below(3) else count(src)
        nbytes = math.prod(dims) * 4
        payload = src.blob(24)
        data_ptr = scratch.put(payload or b"\0") if src.below(3) else pointer(src)
        data_len = (
            src.pick([len(payload), nbytes % (1 << 32), nbytes % (1 << 64) & U32, 16, 0])
            if src.byte() & 1
            else length(src)
        )
        tensor = scratch.put(struct.pack("<5I", dims_ptr, dims_len, kind, data_ptr, data_len))
    elif shape == "random-bytes":
        tensor = scratch.put(bytes(src.byte() for _ in range(20)))
    else:
        tensor = pointer(src, 20)
    return (context_handle(world, src), index(src), tensor), scratch.writes


def index(src: Source) -> int:
    return 0 if src.below(2) == 0 else word(src, INDICES)


def gen_compute(world: World, src: Source) -> Generated:
    return (context_handle(world, src),), []


gen_compute_single = gen_fini_single = gen_finalize_execution_context = gen_compute


def gen_unload(world: World, src: Source) -> Generated:
    # Live graphs are unloaded rarely: each reload compiles the model (~70 ms).
    live = sorted(world.graphs) if src.below(6) == 5 else []
    return (handle_of(src, live, live, world.dead_graphs, world.next_graph),), []


def gen_get_output(world: World, src: Source) -> Generated:
    if src.below(3):
        buffer = (src.pick([SCRATCH, SCRATCH + 1, MEM - 16, MEM - 15, 0]), src.pick([16, 16, 15, 0, 64, 17]))
    else:
        buffer = (pointer(src, 16), length(src))
    written = src.pick([OUT_AREA, SCRATCH + 8, MEM - 4, SCRATCH + 12]) if src.below(3) else pointer(src, 4)
    return (context_handle(world, src), index(src), *buffer, written), []


gen_get_output_single = gen_get_output

CALLS = [
    "load",
    "load_by_name",
    "load_by_name_with_config",
    "init_execution_context",
    "set_input",
    "compute",
    "get_output",
    "compute_single",
    "get_output_single",
    "fini_single",
    "unload",
    "finalize_execution_context",
]
GENERATORS: dict[str, Callable[[World, Source], Generated]] = {
    name: globals()["gen_" + name] for name in CALLS
}


# ---------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def world(tiny_ir: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    xml_path, weights_path = tiny_ir
    bad = tmp_path_factory.mktemp("bad") / "bad.xml"
    bad.write_bytes(xml_path.read_bytes()[:200])  # a truncated IR, preloaded as "bad"
    runtime = Runtime(
        cache=False,
        preload=[f"m:openvino:cpu:{xml_path}:{weights_path}", f"bad:openvino:cpu:{bad}:{weights_path}"],
    )
    probe = make_probe(runtime, pages=1)
    assert probe.size == MEM
    state = World(probe, xml_path.read_bytes(), weights_path.read_bytes())
    state.lay_out()
    logger = logging.getLogger("wasinn")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # thousands of expected failures: keep the log quiet
    try:
        yield state
    finally:
        logger.setLevel(level)
    probe.instance.close()
    assert (probe.instance.nn.live_graphs, probe.instance.nn.live_contexts) == (0, 0)
    errnos: Counter[int] = Counter()
    for (_, errno), n in state.outcomes.items():
        errnos[errno] += n
    print(
        f"\nfuzz: {state.calls} wasi_ephemeral_nn calls checked; "
        f"errno histogram {dict(sorted(errnos.items()))}; "
        f"graphs created {state.next_graph}, contexts {state.next_context}; (encoding, builder sizes) of "
        f"loads that other backends accepted: {len(state.foreign_loads)} {sorted(set(state.foreign_loads))}"
    )
    for call in CALLS:
        seen = {errno: n for (name, errno), n in sorted(state.outcomes.items()) if name == call}
        print(f"fuzz: {call}: {seen}")


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CALLS_PER_EXAMPLE = 4
BYTES_PER_CALL = 64
# examples per call kind (each makes CALLS_PER_EXAMPLE calls); the sequence test adds more.
EXAMPLES = {
    "load": 350,
    "load_by_name": 150,
    "load_by_name_with_config": 150,
    "init_execution_context": 150,
    "set_input": 500,
    "compute": 120,
    "get_output": 350,
    "compute_single": 50,
    "get_output_single": 100,
    "fini_single": 50,
    "unload": 80,
    "finalize_execution_context": 120,
}
SEQUENCES = 200
SEQUENCE_LENGTH = 12
SEQUENCE_RUN = "sequences"  # the sequence test's key in fuzz_runs
ENOUGH_CALLS = 10_000  # what the whole module must check (docs/robustness.md)


def fuzz_call(world: World, call: str) -> int:
    """EXAMPLES[call] examples of CALLS_PER_EXAMPLE calls of one import; the calls it made."""
    generate = GENERATORS[call]
    start = world.calls

    @settings(FUZZ, max_examples=EXAMPLES[call])
    @given(raw=st.binary(min_size=BYTES_PER_CALL, max_size=CALLS_PER_EXAMPLE * BYTES_PER_CALL))
    def calls(raw: bytes) -> None:
        src = Source(raw)
        for _ in range(CALLS_PER_EXAMPLE):
            world.replenish()
            args, scratch = generate(world, src)
            world.run(call, args, scratch)

    calls()
    return world.calls - start


def fuzz_sequences(world: World) -> int:
    """Random interleavings: calls on unloaded graphs, finalized contexts, re-used names."""
    start = world.calls

    @settings(FUZZ, max_examples=SEQUENCES)
    @given(raw=st.binary(min_size=64, max_size=SEQUENCE_LENGTH * BYTES_PER_CALL))
    def sequence(raw: bytes) -> None:
        src = Source(raw)
        world.replenish()
        for _ in range(SEQUENCE_LENGTH):
            call = src.pick(CALLS)
            args, scratch = GENERATORS[call](world, src)
            world.run(call, args, scratch)

    sequence()
    return world.calls - start


@pytest.fixture(scope="module")
def fuzz_runs() -> dict[str, int]:
    """Calls made by each fuzz run of this module (an import's name, or SEQUENCE_RUN)."""
    return {}


@pytest.mark.parametrize("call", CALLS)
def test_fuzz_call(world: World, fuzz_runs: dict[str, int], call: str) -> None:
    fuzz_runs[call] = fuzz_call(world, call)


def test_fuzz_sequences(world: World, fuzz_runs: dict[str, int]) -> None:
    fuzz_runs[SEQUENCE_RUN] = fuzz_sequences(world)


@pytest.fixture
def every_fuzz_run(world: World, fuzz_runs: dict[str, int]) -> dict[str, int]:
    """Every fuzz run of the module: those this session did not select (or that failed) run here."""
    for call in CALLS:
        if call not in fuzz_runs:
            fuzz_runs[call] = fuzz_call(world, call)
    if SEQUENCE_RUN not in fuzz_runs:
        fuzz_runs[SEQUENCE_RUN] = fuzz_sequences(world)
    return fuzz_runs


def test_fuzz_made_enough_calls(every_fuzz_run: dict[str, int]) -> None:
    assert set(every_fuzz_run) == {*CALLS, SEQUENCE_RUN}
    assert sum(every_fuzz_run.values()) >= ENOUGH_CALLS, every_fuzz_run


# ---------------------------------------------------------------------- what the fuzzer found

UNSHAPEABLE = [0, U32, U32]  # zero elements, but numpy cannot represent the shape


def test_zero_elements_with_huge_dims_is_invalid_argument_for_openvino(tiny_ir: tuple[Path, Path]) -> None:
    """Found by the fuzzer; fixed for OpenVINO by checking the dims before reshaping."""
    probe = make_probe(Runtime(cache=False), pages=2)
    try:
        xml, weights = tiny_ir
        array, count = probe.builders([xml.read_bytes(), weights.read_bytes()])
        assert probe.call("load", array, count, 0, 0, OUT_AREA) == Errno.SUCCESS
        assert probe.call("init_execution_context", probe.u32(OUT_AREA), OUT_AREA) == Errno.SUCCESS
        record = probe.tensor(UNSHAPEABLE, F32, b"")
        assert probe.call("set_input", probe.u32(OUT_AREA), 0, record) == Errno.INVALID_ARGUMENT
    finally:
        probe.instance.close()


def test_tensor_array_refuses_an_unshapeable_tensor_with_invalid_argument() -> None:
    from wasinn.core import InvalidArgument, Tensor, TensorType

    tensor = Tensor(tuple(UNSHAPEABLE), TensorType.F32, np.zeros(0, np.uint8))
    with pytest.raises(InvalidArgument):
        tensor.array("input 0")
