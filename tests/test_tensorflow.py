"""WasmEdge's TensorFlow plug-ins (wasmedge_tensorflow, wasmedge_tensorflowlite, wasmedge_image)
and the WASI-NN ``tensorflow`` backend, against shared spec ``wasmedge-tensorflow.md``.

The C guest tests/guests/wasmedge-tf.c calls every import; its results are compared with the
spec's errno values and with native TensorFlow / LiteRT on the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import wasmtime

from conftest import REPO, guest_wasm, missing, require_module, shared_file
from wasinn import Runtime
from wasinn.abi._plugin import resolve_guest_path
from wasinn.abi.wasmedge_image import WasmEdgeImage
from wasinn.abi.wasmedge_tensorflow import WasmEdgeTensorflow, WasmEdgeTensorflowLite
from wasinn.core import GuestTrap, InvalidArgument
from wat_guests import compile_wat

BIRDS = ("birds-v1", "lite-model_aiy_vision_classifier_birds_V1_3.tflite")
MOBILENET_IMAGE = ("mobilenet", "input.jpg")


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guest's directory: tiny models with the examples' tensor names, test images."""
    require_module("tensorflow")
    require_module("PIL")
    from PIL import Image

    import tf_models

    root = tmp_path_factory.mktemp("tf")
    directory = root / "guest"
    directory.mkdir()
    (directory / "mtcnn_tiny.pb").write_bytes(tf_models.mtcnn_tiny())
    (directory / "mobilenet_tiny.pb").write_bytes(tf_models.mobilenet_tiny())
    (directory / "strings_tiny.pb").write_bytes(tf_models.string_feed())
    tf_models.saved_model(directory / "saved_model")
    # A real SavedModel outside the mapping, named three ways: only the sandbox refuses them.
    outside = root / "outside_model"
    shutil.copytree(directory / "saved_model", outside)
    (directory / "outside.txt").write_text(str(outside))
    os.symlink(outside, directory / "escape")
    Image.new("RGB", (30, 30), (255, 0, 0)).save(directory / "red.jpg")
    Image.new("RGBA", (30, 30), (255, 0, 0, 255)).save(directory / "red.png")
    (directory / "random.bin").write_bytes(np.random.RandomState(1).bytes(100))
    return directory


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def in_process(
    wasm: Path, directory: Path, *args: str, preload: Sequence[str] = (), dirs: Sequence[str] = ()
) -> Run:
    """``wasinn run --dir .:DIRECTORY [--dir DIRS]`` in this process, which has imported
    TensorFlow once already: a subprocess per run would import it again (5–10 s each)."""
    out, err = directory / ".guest-stdout", directory / ".guest-stderr"
    mappings = [f".:{directory}", *dirs]
    runtime = Runtime(dirs=mappings, preload=list(preload), stdout=out, stderr=err)
    trap = ""
    try:
        code = runtime.run(wasm, list(args))
    except GuestTrap as error:
        code, trap = -1, str(error)
    return Run(code, out.read_text(), err.read_text() + trap)


def guest(directory: Path, *args: str) -> Run:
    return in_process(guest_wasm("wasmedge-tf"), directory, *args)


def nn_run(directory: Path, *args: str, preload: Sequence[str] = ()) -> Run:
    return in_process(guest_wasm("nn-run"), directory, *args, preload=preload)


def results(directory: Path, group: str) -> dict[str, str]:
    done = guest(directory, "conformance", group)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


# --------------------------------------------------------------------------- case 1


# Spec §2-§4's tables: import name -> number of i32 parameters; each returns one i32 errno.
SPEC_IMPORTS = {
    "wasmedge_tensorflow": {
        "create_session": 3, "create_session_saved_model": 5, "delete_session": 1, "run_session": 1,
        "get_output_tensor": 4, "get_tensor_len": 3, "get_tensor_data": 5, "append_input": 8,
        "append_output": 3, "clear_input": 1, "clear_output": 1,
    },
    "wasmedge_tensorflowlite": {
        "create_session": 3, "delete_session": 1, "run_session": 1, "get_output_tensor": 4,
        "get_tensor_len": 3, "get_tensor_data": 5, "append_input": 5,
    },
    "wasmedge_image": {"load_jpg": 7, "load_png": 7, "load_image": 7},
}  # fmt: skip


def test_export_sets_match_the_spec() -> None:
    """Case 1: the names the host defines, and each one's type as the linker holds it."""
    engine = wasmtime.Engine()
    linker, store = wasmtime.Linker(engine), wasmtime.Store(engine)
    modules = [
        WasmEdgeTensorflow(lambda _: None),
        WasmEdgeTensorflowLite(lambda _: None),
        WasmEdgeImage(lambda _: None),
    ]
    for plugin in modules:
        plugin.define(linker)
    assert {plugin.NAME: set(plugin.SIGNATURES) for plugin in modules} == {
        module: set(names) for module, names in SPEC_IMPORTS.items()
    }
    for module, names in SPEC_IMPORTS.items():
        for name, arity in names.items():
            defined = linker.get(store, module, name)
            assert isinstance(defined, wasmtime.Func), (module, name)
            func_type = defined.type(store)
            params = [str(param) for param in func_type.params]
            results = [str(result) for result in func_type.results]
            assert (params, results) == (["i32"] * arity, ["i32"]), (module, name)


def plugin_wat(*, memory_pages: int | None) -> str:
    """Re-exports every import of the three modules as ``<module>.<name>``."""
    modules = [WasmEdgeTensorflow, WasmEdgeTensorflowLite, WasmEdgeImage]
    lines = ["(module"]
    for plugin in modules:
        for name, arity in plugin.SIGNATURES.items():
            params = " ".join(["i32"] * arity)
            func = f"(func ${plugin.NAME}.{name} (param {params}) (result i32))"
            lines.append(f'  (import "{plugin.NAME}" "{name}" {func})')
    if memory_pages is not None:
        lines.append(f'  (memory (export "memory") {memory_pages})')
    for plugin in modules:
        for name, arity in plugin.SIGNATURES.items():
            params = " ".join(["i32"] * arity)
            gets = " ".join(f"local.get {i}" for i in range(arity))
            signature = f'(export "{plugin.NAME}.{name}") (param {params}) (result i32)'
            lines.append(f"  (func {signature} {gets} call ${plugin.NAME}.{name})")
    lines.append(")")
    return "\n".join(lines)


def call(instance: object, name: str, *params: int) -> int:
    signed = [p - (1 << 32) if p >= (1 << 31) else p for p in params]
    result: int = instance.call(name, *signed)  # type: ignore[attr-defined]
    return result


# --------------------------------------------------------------------------- cases 22, 23 (WAT)


def test_guest_without_memory_gets_errno_3_or_1() -> None:
    with Runtime(cache=False).instantiate(compile_wat(plugin_wat(memory_pages=None))) as instance:
        assert call(instance, "wasmedge_tensorflow.create_session", 0, 0, 0) == 3
        assert call(instance, "wasmedge_tensorflow.append_output", 0, 0, 0) == 3
        assert call(instance, "wasmedge_tensorflow.run_session", 7) == 1
        assert call(instance, "wasmedge_tensorflow.delete_session", 7) == 0
        assert call(instance, "wasmedge_tensorflowlite.create_session", 0, 0, 0) == 3
        assert call(instance, "wasmedge_image.load_image", 0, 0, 1, 1, 0, 0, 3) == 1


def test_high_pointer_is_errno_3_without_host_error() -> None:
    with Runtime(cache=False).instantiate(compile_wat(plugin_wat(memory_pages=1))) as instance:
        assert call(instance, "wasmedge_tensorflow.create_session", 0x80000000, 4, 0) == 3
        assert call(instance, "wasmedge_tensorflow.create_session", 0, 0, 0x80000000) == 3
        assert call(instance, "wasmedge_tensorflowlite.create_session", 0xFFFFFFFF, 2, 0) == 3
        assert call(instance, "wasmedge_image.load_jpg", 0x80000000, 4, 1, 1, 0, 0, 3) == 1


def test_plugins_are_defined_only_for_guests_that_import_them() -> None:
    plain = compile_wat('(module (memory (export "memory") 1) (func (export "_start")))')
    with Runtime(cache=False).instantiate(plain) as instance:
        assert instance._plugins == []
    with Runtime(cache=False).instantiate(compile_wat(plugin_wat(memory_pages=1))) as instance:
        assert [type(p) for p in instance._plugins] == [
            WasmEdgeTensorflow,
            WasmEdgeTensorflowLite,
            WasmEdgeImage,
        ]


def test_image_guest_does_not_import_tensorflow(tf_dir: Path) -> None:
    wasm = guest_wasm("wasmedge-tf")
    script = (
        "import sys; from wasinn import Runtime\n"
        "args = ['image', '0', '4', '4', 'red.png', 'o.bin']\n"
        f"code = Runtime(dirs=['.:.'], cache=False).run({str(wasm)!r}, args)\n"
        "print(code, 'tensorflow' in sys.modules, 'ai_edge_litert' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tf_dir, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["0", "False", "False"], done.stderr


# --------------------------------------------------------------------------- cases 2–21 (C guest)


def test_tensorflow_conformance(tf_dir: Path) -> None:
    import tf_models

    got = results(tf_dir, "tf")
    expected = {
        "c3.garbage": "1", "c3.untouched": "77", "c2.first": "0", "c2.first_id": "0",
        "c2.second": "0", "c2.second_id": "1", "c6.delete": "0", "c6.create": "0", "c6.reused_id": "0",
        "c4.empty": "0", "c4.append_output": "1", "c5.model_oob": "3", "c5.out_oob": "3", "c5.next_id": "3",
        "c7.delete_999": "0", "c7.delete_once": "0", "c7.delete_twice": "0", "c7.run": "1",
        "c7.clear_input": "1", "c7.clear_output": "1",
        "c8.input_missing_op": "1", "c8.output_missing_op": "1",
        "c9.append_output": "1", "c9.append_input": "1", "c9.get_output_tensor": "1",
        "c10.box": "0", "c10.prob": "0", "c10.box_again": "0", "c10.get_prob": "0", "c10.prob_id": "1",
        "c10.get_box0": "1",
        "c12.len": "0", "c12.len_value": "0", "c12.data_empty": "0", "c12.data_empty_written": "0",
        "c13.len_past": "1", "c13.data_past": "1",
        "c19.missing_feed": "4", "c20.run1": "0", "c20.run2": "0", "c20.same": "1",
        "c17.replace": "0", "c17.run": "0",
        "c11.top1": "0", "c11.top1_run": "0", "c11.top1_id": "0", "c11.top1_index": "2",
        "c11.min7": "0", "c11.min7_run": "4", "c11.len_after_fail": "0", "c11.len_after_fail_value": "0",
        "c19.clear_output": "0", "c19.old_name": "1", "c19.clear_input": "0", "c19.prob_again": "0",
        "c19.run_unfed": "4", "c19.run_refed": "0",
        "c18.append_i32": "0", "c18.run": "4", "c18.len": "0",
        "c15.short": "4", "c15.long": "0", "c16.scalar": "0",
        "x.negative_dim": "1", "x.string_dtype": "1",
        "x.string_feed_append": "0", "x.string_feed_output": "0", "x.string_feed_run": "4",
        "c14.run": "0", "c14.len": "0", "c14.len_value": "4004", "c14.data8": "0", "c14.written8": "8",
        "c14.data5000": "0", "c14.written5000": "4004", "c14.tail_untouched": "1", "c14.data0": "0",
        "c14.written0": "0", "c14.data_oob": "3",
        "c21.serve": "0", "c21.nope": "1", "c21.missing": "1", "c21.tags_oob": "3", "c21.tag_oob": "3",
        "x.outside_dir": "1", "x.absolute_host": "1", "x.symlink_out": "1", "x.twenty_sessions": "1",
    }  # fmt: skip
    assert {key: got.get(key) for key in expected} == expected
    # The values the guest read back are native TF's on the same feeds.
    model = (tf_dir / "mtcnn_tiny.pb").read_bytes()
    pixels = np.arange(1, 13, dtype=np.float32).reshape(2, 2, 3)
    feeds = {
        "input:0": pixels,
        "thresholds:0": np.array([0.6, 0.7, 0.8], np.float32),
        "factor:0": np.float32(0.5),
    }

    def native(fetch: str, min_size: float) -> np.ndarray:
        (result,) = tf_models.run_graph(model, {**feeds, "min_size:0": np.float32(min_size)}, [fetch])
        return result.reshape(-1)

    def floats(key: str) -> np.ndarray:  # "%.9g": every f32 round-trips
        return np.array(got[key].split(","), np.float64).astype(np.float32)

    # Whole outputs, bit for bit.
    assert floats("c20.box").tobytes() == native("box:0", 20.0).tobytes()
    assert floats("c17.box").tobytes() == native("box:0", 40.0).tobytes()
    assert floats("c19.prob").tobytes() == native("prob:0", 40.0).tobytes()
    assert got["c11.top1_values"] == "2,1"  # top_k's indices over thresholds (0.6, 0.7, 0.8)


def test_tflite_conformance(tf_dir: Path) -> None:
    import tf_models

    require_module("ai_edge_litert")
    shutil.copy(shared_file(*BIRDS), tf_dir / "birds.tflite")
    (tf_dir / "mask.tflite").write_bytes(tf_models.tflite_boolean_mask())
    got = results(tf_dir, "tflite")
    expected = {
        "c30.tf_create": "0", "c29.run": "1", "c29.delete": "0", "c24.zeros": "1", "c24.empty": "1",
        "c24.valid": "0", "c24.first_id": "0", "x.model_oob": "3", "c27.len_before_run": "0",
        "c27.len_value": "965", "c25.exact": "0", "c25.plus1": "1", "c25.minus1": "1", "c25.unknown": "1",
        "c25.output_name": "1", "c26.output": "0", "c26.output_id": "0", "c26.input_name": "1",
        "c28.run": "0", "c28.wrong_len": "1", "c28.exact": "0", "c28.written": "0", "c28.id_past": "1",
        "x.delete": "0", "x.after_delete": "1",
        # x[x > 0] over 8 values: 4 bytes after allocation, 5 values after the first run,
        # 2 after the second; the buffer must match the size now, never the old one.
        "dyn.create": "0", "dyn.input": "0", "dyn.len_before_run": "0", "dyn.len_before_run_value": "4",
        "dyn.run": "0", "dyn.len": "0", "dyn.len_value": "20", "dyn.data_creation_size": "1",
        "dyn.buffer_untouched": "1", "dyn.data": "0", "dyn.values": "1,2,3,5,6",
        "dyn.input_two": "0", "dyn.run_two": "0", "dyn.len_two": "0", "dyn.len_two_value": "8",
        "dyn.data_stale_size": "1", "dyn.data_two": "0", "dyn.values_two": "8,9",
    }  # fmt: skip
    assert got == expected


def test_image_conformance(tf_dir: Path) -> None:
    got = results(tf_dir, "image")
    for loader in ("load_jpg", "load_png", "load_image"):  # case 33: each decodes both formats
        assert got[f"img.{loader}.jpg.0"] == "0:254,0,0"  # case 31
        assert got[f"img.{loader}.jpg.1"] == "0:0,0,254"
        assert got[f"img.{loader}.jpg.2"] == "0:0.99139285,0.00000000,0.00000000"
        assert got[f"img.{loader}.jpg.3"] == "0:0.00000000,0.00000000,0.99139285"
        assert got[f"img.{loader}.png.0"] == "0:255,0,0"  # case 32
        assert got[f"img.{loader}.png.1"] == "0:0,0,255"
        assert got[f"img.{loader}.png.2"] == "0:1.00000000,0.00000000,0.00000000"
        assert got[f"img.{loader}.png.3"] == "0:0.00000000,0.00000000,1.00000000"
    failures = [
        "w0",
        "h0",
        "wide",
        "tall",
        "one_short",
        "type4",
        "img_len0",
        "random",
        "input_oob",
        "output_oob",
    ]
    assert {name: got[f"c34.{name}"] for name in failures} == dict.fromkeys(failures, "1")  # case 34
    assert (got["c35.larger"], got["c35.untouched"]) == ("0", "1")  # case 35


def load_via_guest(directory: Path, image: bytes, kind: int, width: int, height: int) -> np.ndarray:
    (directory / "probe.img").write_bytes(image)
    done = guest(directory, "image", str(kind), str(width), str(height), "probe.img", "probe.out")
    assert done.returncode == 0, done.stderr
    dtype = np.float32 if kind >= 2 else np.uint8
    return np.fromfile(directory / "probe.out", dtype=dtype).reshape(height, width, 3)


def png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def test_image_channel_rules(tf_dir: Path) -> None:
    from PIL import Image

    pixels = np.random.RandomState(5).randint(0, 256, (7, 9, 3)).astype(np.uint8)
    assert np.array_equal(load_via_guest(tf_dir, png(Image.fromarray(pixels)), 0, 9, 7), pixels)  # case 36
    rgba = png(Image.new("RGBA", (3, 3), (10, 20, 30, 0)))
    assert load_via_guest(tf_dir, rgba, 0, 3, 3)[1, 1].tolist() == [10, 20, 30]  # case 37
    grey_alpha = png(Image.new("LA", (3, 3), (77, 128)))
    assert load_via_guest(tf_dir, grey_alpha, 0, 3, 3)[1, 1].tolist() == [77, 77, 77]
    grey16 = png(Image.fromarray(np.full((3, 3), 0x1234, np.uint16)))
    assert load_via_guest(tf_dir, grey16, 0, 3, 3)[1, 1].tolist() == [18, 18, 18]
    flat = png(Image.new("RGB", (3, 3), (200, 100, 50)))  # case 38
    assert load_via_guest(tf_dir, flat, 2, 3, 3)[1, 1] == pytest.approx(
        [0.585973, 0.127530, 0.027755], abs=1e-6
    )
    assert load_via_guest(tf_dir, flat, 3, 3, 3)[1, 1] == pytest.approx(
        [0.027755, 0.127530, 0.585973], abs=1e-6
    )


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TGA", "PPM", "PNG"])
def test_lossless_formats_decode_exactly(fmt: str) -> None:
    require_module("PIL")
    from PIL import Image

    from wasinn.backends import stb_image

    # Four colours: exact in every format, GIF's palette included.
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [9, 99, 199]]], np.uint8).repeat(3, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    assert np.array_equal(stb_image.load(buffer.getvalue(), 2, 6, floats=False, bgr=False), pixels)


def psd(planes: np.ndarray, *, mode: int = 3) -> bytes:
    """A minimal Photoshop file (Pillow writes none): 8-bit, colour ``mode`` (3 = RGB), no
    palette, resources or layers, then the raw (uncompressed) composite, one plane a channel."""
    channels, height, width = planes.shape
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, channels, height, width, 8, mode)
    empty_sections = struct.pack(">III", 0, 0, 0)  # colour mode data, resources, layers and masks
    return header + empty_sections + struct.pack(">H", 0) + planes.astype(np.uint8).tobytes()


def test_psd_composite_decodes(tf_dir: Path) -> None:
    rgb = np.random.RandomState(8).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    assert np.array_equal(load_via_guest(tf_dir, psd(rgb.transpose(2, 0, 1)), 0, 7, 5), rgb)
    # A fourth channel is alpha, and stb un-blends the colour from Photoshop's white matte
    # for 0 < alpha < 255: (uint8)(c / a + 255 (1 - 1/a)), a = alpha/255, in f32.
    colour = np.array([[[200, 150, 255], [10, 20, 30], [230, 240, 250]]], np.uint8)
    alpha = np.array([[[128], [0], [255]]], np.uint8)
    planes = np.concatenate([colour, alpha], axis=2).transpose(2, 0, 1)
    a = np.float32(128) / np.float32(255)
    ra = np.float32(1) / a
    first = (colour[0, 0].astype(np.float32) * ra + np.float32(255) * (np.float32(1) - ra)).astype(np.uint8)
    expected = [first.tolist(), [10, 20, 30], [230, 240, 250]]
    assert first.tolist() == [145, 45, 255]
    assert load_via_guest(tf_dir, psd(planes), 0, 3, 1)[0].tolist() == expected


def test_formats_stb_does_not_read_are_refused(tf_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Spec §4.3's formats only: whatever else Pillow reads is errno 1, and EPS never reaches
    Ghostscript."""
    from PIL import Image, features

    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [9, 99, 199]]], np.uint8).repeat(3, 0)
    encoded: dict[str, bytes] = {}
    for fmt in ("TIFF", "WEBP", "ICO", "PCX", "SGI", "QOI", "IM", "DDS", "JPEG2000", "EPS"):
        if fmt in ("WEBP", "JPEG2000") and not features.check({"WEBP": "webp"}.get(fmt, "jpg_2000")):
            missing(f"Pillow without its {fmt} codec")
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 13 deprecates writing IM
            Image.fromarray(pixels).save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    encoded["PPM P3 (ASCII)"] = b"P3\n2 1\n255\n255 0 0 0 255 0\n"
    encoded["PGM P2 (ASCII)"] = b"P2\n2 1\n255\n7 9\n"
    encoded["PSD grey"] = psd(np.full((1, 2, 2), 7), mode=1)
    for fmt, data in encoded.items():
        (tf_dir / "probe.img").write_bytes(data)
        caplog.clear()
        done = guest(tf_dir, "image", "0", "2", "6", "probe.img", "probe.out")
        assert done.returncode != 0, fmt
        assert "load_image failed with errno 1" in done.stderr, fmt
        assert "Ghostscript" not in caplog.text, fmt


def test_resize_follows_stb_filters() -> None:
    from wasinn.backends import stb_image

    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))[:, :, None].repeat(3, axis=2)
    # A linear ramp stays linear in the interior under both kernels (they reproduce straight lines).
    up = stb_image.resize(ramp, 16, 4)
    assert up[0, 4:12, 0] == pytest.approx((np.arange(4, 12) + 0.5) / 2 - 0.5, abs=1e-5)
    wide = np.tile(np.arange(32, dtype=np.float32), (4, 1))[:, :, None].repeat(3, axis=2)
    down = stb_image.resize(wide, 8, 4)  # Mitchell's support is 8 input pixels here: 2..5 see no edge
    assert down[0, 2:6, 0] == pytest.approx((np.arange(2, 6) + 0.5) * 4 - 0.5, abs=1e-4)
    # Catmull-Rom overshoots at a step and f32 output is not clamped (spec §4.4).
    step = np.zeros((1, 4, 3), np.float32)
    step[:, 2:] = 1
    assert stb_image.resize(step, 16, 1).min() < 0


# An independent reference for spec §4.4 (WasmEdge 0.15+: stb_image_resize2's default filters,
# not 0.13-0.14's align-corners bilinear): a dense weight matrix per axis in float64, the
# kernels from the general Mitchell-Netravali (B, C) cubic, every tap visited one by one.
CATMULL_ROM = (0.0, 0.5)
MITCHELL = (1 / 3, 1 / 3)


def bc_cubic(x: float, b: float, c: float) -> float:
    x = abs(x)
    if x < 1:
        return ((12 - 9 * b - 6 * c) * x**3 + (-18 + 12 * b + 6 * c) * x**2 + (6 - 2 * b)) / 6
    if x < 2:
        return ((-b - 6 * c) * x**3 + (6 * b + 30 * c) * x**2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6
    return 0.0


def reference_weights(n_in: int, n_out: int, *, swap_kernels: bool = False) -> np.ndarray:
    """Row i: the weights of output pixel i over the input pixels (edge taps clamped)."""
    scale = n_out / n_in
    weights = np.zeros((n_out, n_in))
    if scale == 1:
        return np.eye(n_in)
    upsampling = (scale > 1) != swap_kernels
    b, c = CATMULL_ROM if upsampling else MITCHELL
    stretch = 1.0 if scale > 1 else scale  # downsampling widens the kernel to 2/scale pixels
    for i in range(n_out):
        centre = (i + 0.5) / scale
        reach = 2 / stretch
        for j in range(math.floor(centre - reach) - 1, math.ceil(centre + reach) + 2):
            weights[i, min(max(j, 0), n_in - 1)] += bc_cubic((j + 0.5 - centre) * stretch, b, c)
        weights[i] /= weights[i].sum()
    return weights


def reference_resize(
    pixels: np.ndarray, width: int, height: int, *, swap_kernels: bool = False
) -> np.ndarray:
    rows = reference_weights(pixels.shape[0], height, swap_kernels=swap_kernels)
    columns = reference_weights(pixels.shape[1], width, swap_kernels=swap_kernels)
    planes = pixels.astype(np.float64).transpose(2, 0, 1)
    return np.stack([rows @ plane @ columns.T for plane in planes], axis=2)


def reference_u8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(pixels + 0.5), 0, 255).astype(np.uint8)


def test_reference_kernels_are_the_spec_formulas() -> None:
    """The (B, C) cubic is Catmull-Rom (Keys a = -0.5) and Mitchell-Netravali at the spec's
    parameters; spot values from their closed forms."""
    assert bc_cubic(0, *CATMULL_ROM) == 1 and bc_cubic(1, *CATMULL_ROM) == 0
    assert bc_cubic(0.5, *CATMULL_ROM) == pytest.approx(0.5625)  # 1.5 x^3 - 2.5 x^2 + 1
    assert bc_cubic(1.5, *CATMULL_ROM) == pytest.approx(-0.0625)  # -0.5 x^3 + 2.5 x^2 - 4 x + 2
    assert bc_cubic(0, *MITCHELL) == pytest.approx(8 / 9) and bc_cubic(1, *MITCHELL) == pytest.approx(1 / 18)
    assert bc_cubic(2, *MITCHELL) == 0


def patterned(width: int, height: int) -> np.ndarray:
    """Edges, a ramp and ripples: every kernel leaves its own trace on these."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = x * 255 / (width - 1)
    green = np.where((x // 8 + y // 8) % 2 == 0, 0.0, 255.0)
    blue = 127.5 + 127.5 * np.sin(x / 3.0 + y / 5.0)
    return np.stack([red, green, blue], axis=2).round().astype(np.uint8)


@pytest.mark.parametrize(("width", "height"), [(640, 427), (160, 427), (60, 50)])
def test_resize_matches_an_independent_stb_reference(tf_dir: Path, width: int, height: int) -> None:
    """640x427 -> 224x224 is mobilenet's path (Mitchell both ways); 160x427 upsamples x
    (Catmull-Rom) and downsamples y; 60x50 upsamples both. PNG input, so the decode is exact."""
    from PIL import Image

    pixels = patterned(width, height)
    image = png(Image.fromarray(pixels))
    reference = reference_resize(pixels, 224, 224)
    got = load_via_guest(tf_dir, image, 0, 224, 224).astype(np.int64)
    assert np.abs(got - reference_u8(reference)).max() <= 1
    # The comparison tells the kernels apart: the other kernel on each axis is far off.
    swapped = reference_u8(reference_resize(pixels, 224, 224, swap_kernels=True))
    assert np.abs(got - swapped).max() > 8
    floats = load_via_guest(tf_dir, image, 2, 224, 224)
    linear = (pixels.astype(np.float64) / 255) ** 2.2
    assert floats == pytest.approx(reference_resize(linear, 224, 224), abs=1e-5)


# --------------------------------------------------------------------------- the examples' sequences


def test_mobilenet_sequence_matches_native(tf_dir: Path) -> None:
    from PIL import Image

    import tf_models

    shutil.copy(shared_file(*MOBILENET_IMAGE), tf_dir / "input.jpg")
    done = guest(tf_dir, "mobilenet", "mobilenet_tiny.pb", "input.jpg")
    assert done.returncode == 0, done.stderr
    pixels = np.fromfile(tf_dir / "image.bin", dtype=np.float32).reshape(1, 224, 224, 3)
    # load_jpg type 2 = RGB32F: stb's (v/255)^2.2, then the default filters (same JPEG decoder).
    with Image.open(tf_dir / "input.jpg") as jpeg:
        decoded = np.asarray(jpeg.convert("RGB"))
    linear = (decoded.astype(np.float64) / 255) ** 2.2
    assert pixels[0] == pytest.approx(reference_resize(linear, 224, 224), abs=1e-5)
    model = (tf_dir / "mobilenet_tiny.pb").read_bytes()
    (native,) = tf_models.run_graph(model, {"input:0": pixels}, [tf_models.MOBILENET_OUTPUT + ":0"])
    assert (tf_dir / "out.bin").read_bytes() == native.tobytes()
    best = int(np.argmax(native))
    assert done.stdout == f"{best} : {float(native.flat[best]):.17g}\n"


def test_mtcnn_sequence_matches_native(tf_dir: Path) -> None:
    import tf_models

    height, width = 5, 7
    pixels = np.random.RandomState(2).uniform(0, 255, (height, width, 3)).astype(np.float32)
    pixels.tofile(tf_dir / "pixels.f32")
    done = guest(tf_dir, "mtcnn", "mtcnn_tiny.pb", "pixels.f32", str(height), str(width))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Drawing box: 2 results ...\n"
    feeds = {
        "input:0": pixels,
        "min_size:0": np.float32(20),
        "thresholds:0": np.array([0.6, 0.7, 0.7], np.float32),
        "factor:0": np.float32(0.709),
    }
    (box,) = tf_models.run_graph((tf_dir / "mtcnn_tiny.pb").read_bytes(), feeds, ["box:0"])
    assert (tf_dir / "box.bin").read_bytes() == box.tobytes()


def test_failing_create_traps_the_guest(tf_dir: Path) -> None:
    (tf_dir / "garbage.pb").write_bytes(b"\xff\xff\xff")
    shutil.copy(shared_file(*MOBILENET_IMAGE), tf_dir / "input.jpg")
    done = guest(tf_dir, "mobilenet", "garbage.pb", "input.jpg")  # case 43
    assert done.returncode != 0
    assert "create_session failed with errno 1" in done.stderr


def test_birds_tflite_matches_native(tf_dir: Path) -> None:
    require_module("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from wasinn.backends import stb_image

    shutil.copy(shared_file(*BIRDS), tf_dir / "birds.tflite")
    image = shared_file("birds-v1", "bird.jpg")
    shutil.copy(image, tf_dir / "bird.jpg")
    done = guest(tf_dir, "birds", "birds.tflite", "bird.jpg")
    assert done.returncode == 0, done.stderr
    interpreter = Interpreter(  # WasmEdge's options: 2 threads, no XNNPACK
        model_path=str(tf_dir / "birds.tflite"),
        num_threads=2,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    pixels = stb_image.load(image.read_bytes(), 224, 224, floats=False, bgr=False)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels[None])
    interpreter.invoke()
    native = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert (tf_dir / "birds.bin").read_bytes() == native.tobytes()
    best = int(np.argmax(native))
    assert done.stdout == f"{best} : {native.flat[best]} (written 0)\n"


# --------------------------------------------------------------------------- WASI-NN encoding 2


def test_frozen_graph_same_through_wasi_nn(tf_dir: Path) -> None:
    if not (tf_dir / "out.bin").exists():
        test_mobilenet_sequence_matches_native(tf_dir)
    done = nn_run(
        tf_dir,
        "--encoding", "tensorflow", "--model", "mobilenet_tiny.pb",
        "--input", "0:f32:1x224x224x3:image.bin", "--output", "0:nn.bin",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tf_dir / "nn.bin").read_bytes() == (tf_dir / "out.bin").read_bytes()


def test_saved_model_same_through_host_module_and_preload(tf_dir: Path) -> None:
    import tf_models

    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    x.tofile(tf_dir / "x.f32")
    done = guest(tf_dir, "saved", "saved_model", "x.f32", "4")
    assert done.returncode == 0, done.stderr
    host_module = (tf_dir / "saved.bin").read_bytes()
    assert host_module == tf_models.run_saved(tf_dir / "saved_model", x).tobytes()
    done = nn_run(
        tf_dir,
        "--name", "affine", "--input", "0:f32:1x4:x.f32", "--output", "0:nn-saved.bin",
        preload=[f"affine:tensorflow:cpu:{tf_dir / 'saved_model'}"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tf_dir / "nn-saved.bin").read_bytes() == host_module


def test_wasi_nn_names_builder_and_threads_config(tf_dir: Path) -> None:
    import tf_models

    names = {"inputs": ["factor", "min_size:0", "thresholds", "input"], "outputs": ["prob", "box:0"]}
    (tf_dir / "names.json").write_text(json.dumps(names))
    feeds = {
        "factor": np.float32(0.25),
        "min_size": np.float32(12),
        "thresholds": np.array([0.1, 0.2, 0.3], np.float32),
        "input": np.random.RandomState(4).uniform(0, 255, (3, 5, 3)).astype(np.float32),
    }
    for name, value in feeds.items():
        np.asarray(value).tofile(tf_dir / f"{name}.f32")
    done = nn_run(
        tf_dir,
        "--encoding", "tensorflow", "--model", "mtcnn_tiny.pb", "--model", "names.json",
        "--input", "0:f32::factor.f32", "--input", "1:f32::min_size.f32", "--input", "2:f32:3:thresholds.f32",
        "--input", "3:f32:3x5x3:input.f32", "--output", "0:prob.bin", "--output", "1:box.bin",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    native = tf_models.run_graph(
        (tf_dir / "mtcnn_tiny.pb").read_bytes(), {f"{k}:0": v for k, v in feeds.items()}, ["prob:0", "box:0"]
    )
    assert (tf_dir / "prob.bin").read_bytes() == native[0].tobytes()
    assert (tf_dir / "box.bin").read_bytes() == native[1].tobytes()
    (tf_dir / "x.f32").write_bytes(np.ones((1, 4), np.float32).tobytes())
    done = nn_run(
        tf_dir,
        "--name", "affine", "--config", '{"threads": 1}',
        "--input", "0:f32:1x4:x.f32", "--output", "0:one.bin",
        preload=[f"affine:tensorflow:cpu:{tf_dir / 'saved_model'}"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tf_dir / "one.bin").read_bytes() == tf_models.run_saved(
        tf_dir / "saved_model", np.ones((1, 4), np.float32)
    ).tobytes()


def test_wasi_nn_tensorflow_errors(tf_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tf_dir / "garbage.pb").write_bytes(b"\xff\xff\xff")
    garbage = nn_run(tf_dir, "--encoding", "tensorflow", "--model", "garbage.pb")
    assert garbage.returncode == 1
    gpu = nn_run(tf_dir, "--encoding", "tensorflow", "--target", "gpu", "--model", "mtcnn_tiny.pb")
    assert gpu.returncode == 1
    (tf_dir / "x.i32").write_bytes(np.zeros(1, np.int32).tobytes())
    # mtcnn_tiny's inputs are its placeholders in graph order: input, min_size, thresholds, factor.
    wrong_type = nn_run(
        tf_dir, "--encoding", "tensorflow", "--model", "mtcnn_tiny.pb", "--input", "1:i32::x.i32"
    )
    assert wrong_type.returncode == 1
    assert "min_size" in caplog.text


# --------------------------------------------------------------------------- paths


def test_saved_models_refused_outside_the_mapping_load_inside_one(tf_dir: Path) -> None:
    """The three SavedModel paths the conformance case refuses (1) name a loadable model:
    mapped, the same model loads under each name, so only the sandbox refused them."""
    import tf_models

    root = tf_dir.parent
    x = np.array([[0.5, 1.0, -1.5, 2.0]], np.float32)
    x.tofile(root / "x.f32")
    expected = tf_models.run_saved(root / "outside_model", x).tobytes()
    for path in ("outside_model", "guest/escape", str(root / "outside_model")):
        (root / "saved.bin").unlink(missing_ok=True)
        args = ("saved", path, "x.f32", "4")
        done = in_process(guest_wasm("wasmedge-tf"), root, *args, dirs=[f"{root}:{root}"])
        assert done.returncode == 0, (path, done.stderr)
        assert (root / "saved.bin").read_bytes() == expected, path


def test_guest_paths_resolve_only_inside_mappings(tmp_path: Path) -> None:
    inside = tmp_path / "models"
    (inside / "m").mkdir(parents=True)
    mappings = [(".", tmp_path), ("/data", inside)]
    assert resolve_guest_path(mappings, "models/m") == (tmp_path / "models" / "m").resolve()
    assert resolve_guest_path(mappings, "./models/../models/m") == (inside / "m").resolve()
    assert resolve_guest_path(mappings, "/data/m") == (inside / "m").resolve()
    for escaping in ("../x", "/etc/passwd", "/data/../../x", "/database"):
        with pytest.raises(InvalidArgument):
            resolve_guest_path(mappings, escaping)
    with pytest.raises(InvalidArgument):
        resolve_guest_path([], "models/m")


def test_no_module_of_the_plugins_imports_a_framework() -> None:
    script = (
        "import sys, wasinn.host.runtime, wasinn.abi.wasmedge_plugins\n"
        "print(sorted(m for m in ('tensorflow', 'ai_edge_litert', 'PIL') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_linking_a_wasm_that_imports_an_unknown_plugin_function_still_fails() -> None:
    source = '(module (import "wasmedge_tensorflow" "nope" (func (param i32) (result i32))) (memory 1))'
    with pytest.raises(Exception, match="nope"):
        Runtime(cache=False).instantiate(compile_wat(source))
    assert wasmtime  # imported for the WAT helpers' types
