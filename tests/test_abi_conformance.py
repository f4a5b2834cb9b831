"""Spec §8's conformance list, case by case (numbers in the test names), through a wasm guest."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import Probe, make_probe, requires_no_gpu
from wasinn import Errno, Runtime

OPENVINO, ONNX, TENSORFLOW, TFLITE, AUTODETECT, GGML = 0, 1, 2, 4, 5, 6
CPU, GPU, AUTO = 0, 1, 3
F16, F32, F64, U8, I32, I64 = 0, 1, 2, 3, 4, 5
OUT = 64  # an in-bounds out-pointer for handles
MEM = 65536


def changed_ranges(before: bytes, after: bytes) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]


def assert_untouched(probe: Probe, before: bytes, *allowed: tuple[int, int]) -> None:
    """Spec case 63: nothing outside the stated out-pointers changes."""
    for offset in changed_ranges(before, probe.snapshot()):
        assert any(start <= offset < start + length for start, length in allowed), f"byte {offset} changed"


def ov_builders(probe: Probe, ir: tuple[Path, Path]) -> tuple[int, int]:
    xml, weights = ir
    return probe.builders([xml.read_bytes(), weights.read_bytes()])


def load_ov(probe: Probe, ir: tuple[Path, Path], target: int = CPU) -> int:
    array, count = ov_builders(probe, ir)
    assert probe.call("load", array, count, OPENVINO, target, OUT) == Errno.SUCCESS
    return probe.u32(OUT)


def init_context(probe: Probe, graph: int) -> int:
    assert probe.call("init_execution_context", graph, OUT + 4) == Errno.SUCCESS
    return probe.u32(OUT + 4)


def tiny_input(probe: Probe, values: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)) -> int:
    return probe.tensor([1, 4], F32, struct.pack("<4f", *values))


# ------------------------------------------------------------------ load


def test_01_graph_out_pointer_past_end(probe: Probe) -> None:
    before = probe.snapshot()
    assert probe.call("load", 0, 1, OPENVINO, CPU, 65534) == Errno.INVALID_ARGUMENT
    assert_untouched(probe, before)


def test_02_builder_array_crosses_end(probe: Probe) -> None:
    assert probe.call("load", 65532, 1, GGML, CPU, 0) == Errno.INVALID_ARGUMENT


def test_03_builder_blob_out_of_bounds(probe: Probe) -> None:
    array = probe.put(struct.pack("<II", 70000, 10))
    assert probe.call("load", array, 1, GGML, CPU, OUT) == Errno.INVALID_ARGUMENT


def test_04_builder_count_overflows_memory(probe: Probe) -> None:
    assert probe.call("load", 0, 0x20000000, OPENVINO, CPU, OUT) == Errno.INVALID_ARGUMENT


def test_05_auto_target_is_decided_by_the_backend(tiny_model: Path) -> None:
    # WasmEdge refuses AUTO in load before any backend sees it; wasinn passes it to the backend
    # (documented difference), and GGML, like WasmEdge, takes AUTO only from --nn-preload
    # (ggml-backend spec case 5). The same GGUF bytes load with target CPU.
    model = tiny_model.read_bytes()
    with Runtime(cache=False) as runtime:
        probe = make_probe(runtime, pages=len(model) // MEM + 16)
        array, count = probe.builders([model])
        assert probe.call("load", array, count, GGML, AUTO, OUT) == Errno.INVALID_ARGUMENT
        assert probe.call("load", array, count, GGML, CPU, OUT) == Errno.SUCCESS
        probe.instance.close()


def test_06_unknown_target(probe: Probe) -> None:
    array, count = probe.builders([b"model"])
    assert probe.call("load", array, count, OPENVINO, 7, OUT) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize("encoding", [8, 15, 99, 255])
def test_07_unknown_encodings(probe: Probe, encoding: int) -> None:
    # Encoding 5 (autodetect), errno 2 in WasmEdge, is implemented by wasinn: see test_59.
    array, count = probe.builders([b"model"])
    assert probe.call("load", array, count, encoding, CPU, OUT) == Errno.INVALID_ENCODING


def test_08_target_checked_before_encoding(probe: Probe) -> None:
    array, count = probe.builders([b"model"])
    assert probe.call("load", array, count, 99, 9, OUT) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize("encoding", [TENSORFLOW])
def test_09_stub_backends(probe: Probe, encoding: int) -> None:
    array, count = probe.builders([b"model"])
    assert probe.call("load", array, count, encoding, CPU, OUT) == Errno.INVALID_ARGUMENT


def test_encoding_taken_modulo_256(probe: Probe) -> None:
    array, count = probe.builders([b"a", b"b", b"c"])
    # 256 is OpenVINO, which wants 2 builders: the count check answers, not the encoding check.
    assert probe.call("load", array, count, 256, CPU, OUT) == Errno.INVALID_ARGUMENT
    assert probe.call("load", array, count, 256 + 8, CPU, OUT) == Errno.INVALID_ENCODING


@pytest.mark.usefixtures("openvino_available")
@pytest.mark.parametrize("blobs", [[b"a"], [b"a", b"b", b"c", b"d"]], ids=["1", "4"])
def test_10_openvino_builder_count(probe: Probe, blobs: list[bytes]) -> None:
    array, count = probe.builders(blobs)
    assert probe.call("load", array, count, OPENVINO, CPU, OUT) == Errno.INVALID_ARGUMENT


@pytest.mark.usefixtures("openvino_available")
def test_11_openvino_meaningless_binaries(probe: Probe) -> None:
    array, count = probe.builders([b"", b""])
    assert probe.call("load", array, count, OPENVINO, CPU, OUT) == Errno.RUNTIME_ERROR


def test_15_handles_count_from_zero(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    array, count = ov_builders(probe, tiny_ir)
    assert probe.call("load", array, count, OPENVINO, CPU, OUT) == Errno.SUCCESS
    assert probe.call("load", array, count, OPENVINO, CPU, OUT + 8) == Errno.SUCCESS
    assert (probe.u32(OUT), probe.u32(OUT + 8)) == (0, 1)


@pytest.mark.usefixtures("openvino_available")
def test_16_zero_length_builder_past_end_does_not_trap(probe: Probe) -> None:
    array = probe.put(struct.pack("<II", 0xFFFFFFF0, 0) * 2)
    assert probe.call("load", array, 2, OPENVINO, CPU, OUT) == Errno.RUNTIME_ERROR


# ------------------------------------------------------------------ init_execution_context


def test_17_unknown_graph(probe: Probe) -> None:
    assert probe.call("init_execution_context", 9999, OUT) == Errno.INVALID_ARGUMENT


def test_18_context_out_pointer_past_end(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    graph = load_ov(probe, tiny_ir)
    end = probe.size - 3
    assert probe.call("init_execution_context", graph, end) == Errno.INVALID_ARGUMENT
    assert probe.instance.nn.live_contexts == 0


def test_19_context_handles_are_separate_from_graph_handles(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    load_ov(probe, tiny_ir)
    graph = load_ov(probe, tiny_ir)
    assert graph == 1
    assert [init_context(probe, graph), init_context(probe, graph)] == [0, 1]


# ------------------------------------------------------------------ set_input


def test_20_unknown_context(probe: Probe) -> None:
    assert probe.call("set_input", 9999, 0, tiny_input(probe)) == Errno.INVALID_ARGUMENT


def test_21_tensor_record_crosses_end(probe: Probe) -> None:
    assert probe.call("set_input", 0, 0, 65530) == Errno.INVALID_ARGUMENT


def test_22_dims_out_of_bounds(probe: Probe) -> None:
    data = probe.put(b"\0" * 16)
    record = probe.put(struct.pack("<IIIII", 65530, 4, F32, data, 16))
    assert probe.call("set_input", 0, 0, record) == Errno.INVALID_ARGUMENT


def test_23_data_out_of_bounds(probe: Probe) -> None:
    dims = probe.put(struct.pack("<2I", 1, 4))
    record = probe.put(struct.pack("<IIIII", dims, 2, F32, 65520, 32))
    assert probe.call("set_input", 0, 0, record) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize("type_word", [F64, I64, 9, 0xFF])
def test_24_rejected_types_before_context_lookup(probe: Probe, type_word: int) -> None:
    # wasinn lets backends decide on F64 (legacy U8) and I64; with no context both still give 1.
    record = probe.tensor([1, 4], type_word, b"\0" * 16)
    assert probe.call("set_input", 9999, 0, record) == Errno.INVALID_ARGUMENT


def test_25_only_the_low_byte_of_the_type_counts(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    context = init_context(probe, load_ov(probe, tiny_ir))
    record = probe.tensor([1, 4], 0x00000101, struct.pack("<4f", 1, 2, 3, 4))
    assert probe.call("set_input", context, 0, record) == Errno.SUCCESS


@pytest.mark.parametrize(
    ("dims", "type_word", "data", "index"),
    [
        ([1, 4], U8, b"\0" * 4, 0),
        ([1] * 9, F32, b"\0" * 4, 0),
        ([1, 4], F32, b"\0" * 16, 10),
        ([1, 5], F32, b"\0" * 20, 0),
        ([1, 4], F32, b"\0" * 15, 0),
        ([1, 4], I64, b"\0" * 32, 0),
    ],
    ids=["u8", "9-dims", "index-10", "wrong-shape", "short-data", "i64"],
)
def test_26_openvino_set_input_errors(
    tiny_ir: tuple[Path, Path], dims: list[int], type_word: int, data: bytes, index: int
) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    context = init_context(probe, load_ov(probe, tiny_ir))
    assert (
        probe.call("set_input", context, index, probe.tensor(dims, type_word, data)) == Errno.INVALID_ARGUMENT
    )


# ------------------------------------------------------------------ compute


def test_30_compute_unknown_context(probe: Probe) -> None:
    assert probe.call("compute", 9999) == Errno.INVALID_ARGUMENT


def test_31_openvino_compute_without_input(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    context = init_context(probe, load_ov(probe, tiny_ir))
    assert probe.call("compute", context) == Errno.RUNTIME_ERROR


# ------------------------------------------------------------------ get_output


def test_35_bytes_written_pointer_checked_before_context(probe: Probe) -> None:
    assert probe.call("get_output", 9999, 0, 0, 16, 65534) == Errno.INVALID_ARGUMENT


def test_36_output_buffer_out_of_bounds(probe: Probe) -> None:
    assert probe.call("get_output", 0, 0, 70000, 16, OUT) == Errno.INVALID_ARGUMENT


def computed_tiny_context(tiny_ir: tuple[Path, Path]) -> tuple[Probe, int]:
    probe = make_probe(Runtime(cache=False), pages=2)
    context = init_context(probe, load_ov(probe, tiny_ir))
    assert probe.call("set_input", context, 0, tiny_input(probe)) == Errno.SUCCESS
    assert probe.call("compute", context) == Errno.SUCCESS
    return probe, context


TINY_EXPECTED = np.maximum(np.array([1.0, 2.0, 3.0, 4.0]) * [1, -2, 3, -4] + [0.5, 0.5, -0.5, 1.0], 0)


def test_37_output_index_out_of_range(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    buffer = probe.put(b"\0" * 16)
    assert probe.call("get_output", context, 1, buffer, 16, OUT) == Errno.INVALID_ARGUMENT


def test_38_buffer_one_byte_short(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    buffer = probe.put(b"\xaa" * 16)
    before = probe.snapshot()
    assert probe.call("get_output", context, 0, buffer, 15, OUT) == Errno.TOO_LARGE
    assert probe.u32(OUT) == 16
    assert probe.read(buffer, 16) == b"\xaa" * 16
    assert_untouched(probe, before, (OUT, 4))


def test_39_exact_buffer(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    buffer = probe.put(b"\xaa" * 20)
    before = probe.snapshot()
    assert probe.call("get_output", context, 0, buffer, 16, OUT) == Errno.SUCCESS
    assert probe.u32(OUT) == 16
    np.testing.assert_allclose(np.frombuffer(probe.read(buffer, 16), "<f4"), TINY_EXPECTED, rtol=1e-6)
    assert probe.read(buffer + 16, 4) == b"\xaa" * 4
    assert_untouched(probe, before, (OUT, 4), (buffer, 16))


def test_40_size_probe_with_zero_max(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    assert probe.call("get_output", context, 0, 0, 0, OUT) == Errno.TOO_LARGE
    assert probe.u32(OUT) == 16


# ------------------------------------------------------------------ streaming


@pytest.mark.parametrize("call", ["compute_single", "fini_single"])
def test_43_streaming_on_openvino(tiny_ir: tuple[Path, Path], call: str) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    assert probe.call(call, context) == Errno.INVALID_ARGUMENT


def test_43_get_output_single_on_openvino(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    buffer = probe.put(b"\0" * 16)
    assert probe.call("get_output_single", context, 0, buffer, 16, OUT) == Errno.INVALID_ARGUMENT


# ------------------------------------------------------------------ unload / finalize


def test_47_unknown_handles(probe: Probe) -> None:
    assert probe.call("unload", 9999) == Errno.INVALID_ARGUMENT
    assert probe.call("finalize_execution_context", 9999) == Errno.INVALID_ARGUMENT


def test_48_unload_twice(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    graph = load_ov(probe, tiny_ir)
    assert probe.call("unload", graph) == Errno.SUCCESS
    assert probe.call("unload", graph) == Errno.INVALID_ARGUMENT
    assert probe.call("init_execution_context", graph, OUT) == Errno.INVALID_ARGUMENT


def test_49_context_survives_unload_for_get_output(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    assert probe.call("unload", 0) == Errno.SUCCESS
    buffer = probe.put(b"\0" * 16)
    assert probe.call("get_output", context, 0, buffer, 16, OUT) == Errno.SUCCESS
    np.testing.assert_allclose(np.frombuffer(probe.read(buffer, 16), "<f4"), TINY_EXPECTED, rtol=1e-6)
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT
    assert probe.call("set_input", context, 0, tiny_input(probe)) == Errno.INVALID_ARGUMENT


def test_50_finalize_twice(tiny_ir: tuple[Path, Path]) -> None:
    probe, context = computed_tiny_context(tiny_ir)
    assert probe.call("finalize_execution_context", context) == Errno.SUCCESS
    assert probe.call("finalize_execution_context", context) == Errno.INVALID_ARGUMENT
    assert probe.call("compute", context) == Errno.INVALID_ARGUMENT


def test_51_handles_never_reused(tiny_ir: tuple[Path, Path]) -> None:
    probe = make_probe(Runtime(cache=False), pages=2)
    assert load_ov(probe, tiny_ir) == 0
    assert probe.call("unload", 0) == Errno.SUCCESS
    assert load_ov(probe, tiny_ir) == 1


# ------------------------------------------------------------------ load_by_name


def test_52_name_regions(probe: Probe) -> None:
    assert probe.call("load_by_name", 65500, 64, OUT) == Errno.INVALID_ARGUMENT
    assert probe.call("load_by_name", 0xFFFFFFFF, 0, OUT) == Errno.INVALID_ARGUMENT
    name, length = probe.string("m")
    assert probe.call("load_by_name", name, length, 65534) == Errno.INVALID_ARGUMENT


def test_53_unknown_name(probe: Probe) -> None:
    name, length = probe.string("nosuch")
    assert probe.call("load_by_name", name, length, OUT) == Errno.NOT_FOUND


def preloaded_probe(tiny_ir: tuple[Path, Path], spec: str = "m:openvino:cpu") -> Probe:
    xml, weights = tiny_ir
    return make_probe(Runtime(cache=False, preload=[f"{spec}:{xml}:{weights}"]))


def test_55_load_by_name_is_cached(tiny_ir: tuple[Path, Path]) -> None:
    probe = preloaded_probe(tiny_ir)
    name, length = probe.string("m")
    config, config_length = probe.string('{"ctx-size":1}')
    assert probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    assert probe.call("load_by_name", name, length, OUT + 4) == Errno.SUCCESS
    assert probe.call("load_by_name_with_config", name, length, config, config_length, OUT + 8) == 0
    assert probe.u32(OUT) == probe.u32(OUT + 4) == probe.u32(OUT + 8)


def test_56_unload_evicts_the_name(tiny_ir: tuple[Path, Path]) -> None:
    probe = preloaded_probe(tiny_ir)
    name, length = probe.string("m")
    assert probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    first = probe.u32(OUT)
    assert probe.call("unload", first) == Errno.SUCCESS
    assert probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    assert probe.u32(OUT) == first + 1


def test_57_config_regions(probe: Probe) -> None:
    name, length = probe.string("m")
    assert probe.call("load_by_name_with_config", name, length, 65500, 64, OUT) == Errno.INVALID_ARGUMENT
    assert probe.call("load_by_name_with_config", name, length, 0xFFFFFFFF, 0, OUT) == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("config", "errno"),
    [
        ("", Errno.SUCCESS),
        ("{}", Errno.SUCCESS),
        ('{"threads": 1}', Errno.SUCCESS),
        ('{"device": "CPU", "threads": 2}', Errno.SUCCESS),
        ("{not json", Errno.INVALID_ENCODING),
        ("[1, 2]", Errno.INVALID_ARGUMENT),
        ('{"ctx-size": 1}', Errno.INVALID_ARGUMENT),
        ('{"threads": 0}', Errno.INVALID_ARGUMENT),
        ('{"threads": "2"}', Errno.INVALID_ARGUMENT),
        ('{"device": "fpga"}', Errno.INVALID_ARGUMENT),
    ],
)
def test_58_openvino_config_is_parsed_not_appended(
    tiny_ir: tuple[Path, Path], config: str, errno: int
) -> None:
    # WasmEdge appends the config as a third OpenVINO builder (errno 1); wasinn parses it
    # and applies the keys the backend honours (documented in docs/backends.md).
    probe = preloaded_probe(tiny_ir, "ov:openvino:cpu")
    name, length = probe.string("ov")
    raw, raw_length = probe.string(config) if config else (0, 0)
    assert probe.call("load_by_name_with_config", name, length, raw, raw_length, OUT) == errno
    if errno == Errno.SUCCESS:
        context = init_context(probe, probe.u32(OUT))
        assert probe.call("set_input", context, 0, tiny_input(probe)) == Errno.SUCCESS
        assert probe.call("compute", context) == Errno.SUCCESS


@pytest.mark.usefixtures("openvino_available")
def test_58_config_device_is_never_a_silent_fallback(tiny_ir: tuple[Path, Path]) -> None:
    import openvino as ov

    requires_no_gpu(
        any(device.startswith("GPU") for device in ov.Core().available_devices), "an OpenVINO GPU device"
    )
    probe = preloaded_probe(tiny_ir, "ov:openvino:cpu")
    name, length = probe.string("ov")
    raw, raw_length = probe.string('{"device": "gpu"}')
    assert probe.call("load_by_name_with_config", name, length, raw, raw_length, OUT) == Errno.RUNTIME_ERROR


def test_59_autodetect_preload_loads_a_model_and_rejects_garbage(
    tiny_ir: tuple[Path, Path], tmp_path: Path
) -> None:
    # WasmEdge answers 2 for any autodetect preload; wasinn recognises the IR and loads it.
    probe = preloaded_probe(tiny_ir, "a:autodetect:cpu")
    name, length = probe.string("a")
    assert probe.call("load_by_name", name, length, OUT) == Errno.SUCCESS
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model in any format")
    probe = make_probe(Runtime(cache=False, preload=[f"g:autodetect:cpu:{junk}"]))
    name, length = probe.string("g")
    assert probe.call("load_by_name", name, length, OUT) == Errno.INVALID_ENCODING
    array, count = probe.builders([junk.read_bytes()])
    assert probe.call("load", array, count, AUTODETECT, CPU, OUT) == Errno.INVALID_ENCODING


def test_60_names_are_case_sensitive_spellings_are_not(tiny_ir: tuple[Path, Path]) -> None:
    probe = preloaded_probe(tiny_ir, "X:OpenVINO:CPU")
    lower, lower_length = probe.string("x")
    upper, upper_length = probe.string("X")
    assert probe.call("load_by_name", lower, lower_length, OUT) == Errno.NOT_FOUND
    assert probe.call("load_by_name", upper, upper_length, OUT) == Errno.SUCCESS


# ------------------------------------------------------------------ memory


def test_62_no_memory_traps() -> None:
    from wasinn import GuestTrap
    from wat_guests import compile_wat, probe_wat

    instance = Runtime(cache=False).instantiate(compile_wat(probe_wat(memory_pages=None)))
    with pytest.raises(GuestTrap, match="no exported linear memory"):
        instance.call("nn_compute", 0)


def test_memory_growth_between_calls_is_seen(tiny_ir: tuple[Path, Path]) -> None:
    """Views of guest memory are rebuilt after memory.grow: no stale view, no lost bytes."""
    probe, context = computed_tiny_context(tiny_ir)
    buffer = probe.put(b"\0" * 16)
    assert probe.call("get_output", context, 0, buffer, 16, OUT) == Errno.SUCCESS
    old_size = probe.size
    beyond = old_size + 1000  # only reachable once the memory has grown
    assert probe.call("get_output", context, 0, beyond, 16, OUT) == Errno.INVALID_ARGUMENT
    probe.memory.grow(probe.instance.store, 16)
    assert probe.call("get_output", context, 0, beyond, 16, OUT) == Errno.SUCCESS
    np.testing.assert_allclose(np.frombuffer(probe.read(beyond, 16), "<f4"), TINY_EXPECTED, rtol=1e-6)
    assert probe.call("set_input", context, 0, tiny_input(probe, (4.0, 3.0, 2.0, 1.0))) == Errno.SUCCESS
