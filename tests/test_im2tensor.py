"""im2tensor: dims parsing, the seed-compatible resize, layouts, normalisation, files, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import require_module, shared_file
from wasinn.cli import main
from wasinn.cli.tools import im2tensor_command
from wasinn.tools import (
    Im2TensorError,
    TensorSpec,
    im2tensor,
    letterbox_box,
    parse_dims,
    parse_tensor_dims,
    resize_bilinear,
    write_tensor,
)

ROAD_DIR = "road-segmentation-adas-0001"


def random_pixels(height: int, width: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_png(pixels: npt.NDArray[np.uint8], path: Path) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def reference_bilinear(pixels: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.float64]:
    """Textbook bilinear with aligned pixel centres and clamped edges, in float64 (no fixed point)."""

    def taps(
        source: int, target: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
        low = np.floor(position).astype(np.intp)
        return low, np.minimum(low + 1, source - 1), position - low

    x0, x1, fx = taps(pixels.shape[1], width)
    y0, y1, fy = taps(pixels.shape[0], height)
    source = pixels.astype(np.float64)
    rows = source[:, x0] * (1 - fx)[None, :, None] + source[:, x1] * fx[None, :, None]
    result: npt.NDArray[np.float64] = rows[y0] * (1 - fy)[:, None, None] + rows[y1] * fy[:, None, None]
    return result


# --------------------------------------------------------------------------- dims


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512x896x3xfp32", TensorSpec(512, 896, 3, "fp32")),
        ("  224X224X3XU8 ", TensorSpec(224, 224, 3, "u8")),
        ("512x896x3xf32", TensorSpec(512, 896, 3, "fp32")),
        ("2x3x1xf16", TensorSpec(2, 3, 1, "fp16")),
        ("7x5x3xi32", TensorSpec(7, 5, 3, "i32")),
    ],
)
def test_parse_dims_accepts_the_seeds_form_and_short_type_names(text: str, expected: TensorSpec) -> None:
    assert parse_dims(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "512x896x3", "512x896xfp32", "1x512x896x3xfp32", "512x896x3xfp64", "0x896x3xfp32", "-1x896x3xfp32",
     "512x896x4xfp32", "512 x896x3xfp32", "512x896x3x", "x", "5l2x896x3xfp32", "512x896x²xfp32"],
)  # fmt: skip
def test_parse_dims_rejects_malformed_strings_quoting_them_and_the_expected_form(text: str) -> None:
    with pytest.raises(Im2TensorError) as caught:
        parse_dims(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "512x896x3xfp32" in message


@given(
    height=st.integers(1, 100_000),
    width=st.integers(1, 100_000),
    channels=st.sampled_from([1, 3]),
    dtype=st.sampled_from(["fp32", "fp16", "u8", "i32"]),
)
def test_dims_round_trip_through_their_text(height: int, width: int, channels: int, dtype: str) -> None:
    spec = TensorSpec(height, width, channels, dtype)  # type: ignore[arg-type]
    assert parse_dims(str(spec)) == spec
    assert spec.nbytes == height * width * channels * {"fp32": 4, "fp16": 2, "u8": 1, "i32": 4}[dtype]


@given(st.text(max_size=30))
def test_parse_dims_either_parses_or_says_why(text: str) -> None:
    try:
        spec = parse_dims(text)
    except Im2TensorError:
        return
    assert parse_dims(str(spec)) == spec


def test_parse_tensor_dims_takes_any_rank() -> None:
    assert parse_tensor_dims("1x4x512x896xf32") == ((1, 4, 512, 896), np.dtype("<f4"))
    assert parse_tensor_dims("10xu8") == ((10,), np.dtype("u1"))


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((60, 100), (23, 41)),
        ((23, 41), (60, 100)),
        ((1, 7), (5, 3)),
        ((50, 50), (50, 50)),
        ((40, 30), (20, 15)),
    ],
)
def test_resize_matches_textbook_bilinear_within_one_grey_level(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    pixels = random_pixels(*source)
    ours = resize_bilinear(pixels, *target).astype(np.float64)
    assert ours.shape == (*target, 3)
    assert np.abs(ours - reference_bilinear(pixels, *target)).max() <= 1.0


def test_enlarging_matches_pillows_bilinear_within_one_grey_level() -> None:
    # Pillow's filter only differs from OpenCV's when shrinking (it then widens its support).
    pixels = random_pixels(17, 29, seed=3)
    theirs = np.asarray(Image.fromarray(pixels).resize((71, 40), Image.Resampling.BILINEAR), dtype=np.int32)
    assert np.abs(resize_bilinear(pixels, 40, 71).astype(np.int32) - theirs).max() <= 1


def test_resize_is_bit_exact_with_opencv() -> None:
    require_module("cv2")  # opencv-python-headless, in the dev extra: the reference, not a dependency
    import cv2

    for seed, (source, target) in enumerate(
        [((60, 100), (23, 41)), ((23, 41), (60, 100)), ((1080, 1920), (512, 896))]
    ):
        pixels = random_pixels(*source, seed=seed)
        expected = cv2.resize(pixels, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(resize_bilinear(pixels, *target), expected)


def test_default_is_hwc_bgr_float32_with_pixel_values(tmp_path: Path) -> None:
    pixels = random_pixels(30, 50)
    tensor = im2tensor(save_png(pixels, tmp_path / "p.png"), "12x20x3xfp32")
    assert tensor.shape == (12, 20, 3)
    assert tensor.dtype == np.float32
    bgr = reference_bilinear(pixels, 12, 20)[:, :, ::-1]
    assert np.abs(tensor - bgr).max() <= 1.0
    assert np.array_equal(tensor, np.round(tensor))  # whole grey levels, not normalised


def test_the_real_road_picture_resizes_like_the_seed() -> None:
    image = shared_file(ROAD_DIR, "empty_road_mapillary.jpg")
    tensor = im2tensor(image, "512x896x3xfp32")
    assert tensor.shape == (512, 896, 3)
    assert tensor.min() >= 0 and tensor.max() <= 255
    pixels = np.asarray(Image.open(image).convert("RGB"))[:, :, ::-1]
    assert np.abs(tensor - reference_bilinear(pixels, 512, 896)).max() <= 1.0


def test_rgb_is_bgr_with_the_channels_swapped(tmp_path: Path) -> None:
    image = save_png(random_pixels(9, 13), tmp_path / "p.png")
    bgr = im2tensor(image, "5x7x3xu8")
    rgb = im2tensor(image, "5x7x3xu8", color="rgb")
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    assert not np.array_equal(rgb, bgr)


def test_nchw_is_the_transpose_of_nhwc_with_no_batch_dimension(tmp_path: Path) -> None:
    image = save_png(random_pixels(9, 13), tmp_path / "p.png")
    nhwc = im2tensor(image, "5x7x3xfp32")
    nchw = im2tensor(image, "5x7x3xfp32", layout="nchw")
    assert nchw.shape == (3, 5, 7)
    assert nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(2, 0, 1))


@pytest.mark.parametrize(
    ("dims", "dtype"), [("5x7x3xu8", np.uint8), ("5x7x3xi32", np.int32), ("5x7x3xfp16", np.float16)]
)
def test_every_element_type_holds_the_same_grey_levels(tmp_path: Path, dims: str, dtype: type) -> None:
    image = save_png(random_pixels(9, 13), tmp_path / "p.png")
    tensor = im2tensor(image, dims)
    assert tensor.dtype == dtype
    np.testing.assert_array_equal(tensor.astype(np.float32), im2tensor(image, "5x7x3xfp32"))


def test_mean_and_std_apply_per_channel_in_output_order(tmp_path: Path) -> None:
    image = save_png(random_pixels(9, 13), tmp_path / "p.png")
    raw = im2tensor(image, "5x7x3xfp32").astype(np.float64)
    mean, std = [103.94, 116.78, 123.68], [57.4, 57.1, 58.4]
    normalised = im2tensor(image, "5x7x3xfp32", mean=mean, std=std)
    np.testing.assert_allclose(normalised, (raw - mean) / std, rtol=1e-6)
    chw = im2tensor(image, "5x7x3xfp32", mean=mean, std=std, layout="nchw")
    np.testing.assert_array_equal(chw, normalised.transpose(2, 0, 1))


def test_scalar_mean_and_std_apply_to_every_channel(tmp_path: Path) -> None:
    image = save_png(random_pixels(9, 13), tmp_path / "p.png")
    raw = im2tensor(image, "5x7x3xfp32").astype(np.float64)
    np.testing.assert_allclose(
        im2tensor(image, "5x7x3xfp32", mean=127.5, std=127.5), raw / 127.5 - 1, atol=1e-6
    )
    np.testing.assert_allclose(im2tensor(image, "5x7x3xfp32", std=255.0), raw / 255, atol=1e-7)
    half = im2tensor(image, "5x7x3xfp16", mean=[127.5], std=[127.5])
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, raw / 127.5 - 1, atol=1e-3)


@pytest.mark.parametrize(
    ("source", "target", "box"),
    [
        ((100, 50), (64, 64), (0, 16, 64, 32)),  # tall: bars left and right
        ((50, 100), (64, 64), (16, 0, 32, 64)),  # wide: bars above and below
        ((1080, 1920), (512, 896), (4, 0, 504, 896)),  # the road picture into the model's input
        ((30, 30), (10, 20), (0, 5, 10, 10)),
    ],
)
def test_letterbox_geometry(
    source: tuple[int, int], target: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    found = letterbox_box(*source, *target)
    assert (found.top, found.left, found.height, found.width) == box


def test_letterbox_centres_the_picture_and_pads_with_zero(tmp_path: Path) -> None:
    pixels = random_pixels(100, 50, seed=7)
    pixels[pixels == 0] = 1  # no pixel is 0, so padding stands out
    image = save_png(pixels, tmp_path / "tall.png")
    tensor = im2tensor(image, "64x64x3xfp32", resize="letterbox")
    assert tensor.shape == (64, 64, 3)
    assert not tensor[:, :16].any() and not tensor[:, 48:].any()
    np.testing.assert_array_equal(tensor[:, 16:48], im2tensor(image, "64x32x3xfp32"))
    assert tensor[:, 16:48].min() > 0

    wide = save_png(np.ascontiguousarray(pixels.transpose(1, 0, 2)), tmp_path / "wide.png")
    tensor = im2tensor(wide, "64x64x3xu8", resize="letterbox", layout="nchw")
    assert not tensor[:, :16].any() and not tensor[:, 48:].any()
    np.testing.assert_array_equal(tensor[:, 16:48], im2tensor(wide, "32x64x3xu8", layout="nchw"))


def test_letterbox_padding_is_normalised_like_a_black_pixel(tmp_path: Path) -> None:
    image = save_png(random_pixels(100, 50), tmp_path / "tall.png")
    tensor = im2tensor(image, "64x64x3xfp32", resize="letterbox", mean=[10, 20, 30], std=2)
    np.testing.assert_array_equal(tensor[0, 0], [-5, -10, -15])


def test_grey_tensors_have_one_channel(tmp_path: Path) -> None:
    pixels = random_pixels(20, 30)
    image = save_png(pixels, tmp_path / "p.png")
    grey = np.asarray(Image.fromarray(pixels).convert("L"))[:, :, None]
    tensor = im2tensor(image, "10x15x1xu8")
    assert tensor.shape == (10, 15, 1)
    np.testing.assert_array_equal(tensor, resize_bilinear(grey, 10, 15))


def test_exif_orientation_is_applied_as_imread_does(tmp_path: Path) -> None:
    pixels = random_pixels(20, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
    upright = save_png(np.ascontiguousarray(np.rot90(pixels, k=-1)), tmp_path / "upright.png")
    np.testing.assert_array_equal(
        im2tensor(tmp_path / "sideways.png", "8x4x3xu8"), im2tensor(upright, "8x4x3xu8")
    )


def test_alpha_is_dropped_and_pil_images_are_accepted(tmp_path: Path) -> None:
    pixels = random_pixels(10, 10)
    rgba = np.dstack([pixels, np.full((10, 10), 7, np.uint8)])
    from_rgba = im2tensor(Image.fromarray(rgba, "RGBA"), "10x10x3xu8")
    np.testing.assert_array_equal(from_rgba, pixels[:, :, ::-1])


# --------------------------------------------------------------------------- files and errors


def test_written_file_is_raw_little_endian_with_exactly_hwc_elements(tmp_path: Path) -> None:
    image = save_png(random_pixels(30, 50), tmp_path / "p.png")
    tensor = im2tensor(image, "12x20x3xfp32")
    path = tmp_path / "out-12x20x3xf32.tensor"
    assert write_tensor(tensor, path) == 12 * 20 * 3 * 4
    data = path.read_bytes()
    assert len(data) == 12 * 20 * 3 * 4
    assert data == tensor.astype("<f4").tobytes()
    np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(12, 20, 3), tensor)


def test_big_endian_arrays_are_written_little_endian(tmp_path: Path) -> None:
    array = np.arange(6, dtype=">i4")
    write_tensor(array, tmp_path / "t.bin")
    assert (tmp_path / "t.bin").read_bytes() == bytes(
        [0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]
    )


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Im2TensorError, match="not found: .*nothing.jpg"):
        im2tensor(tmp_path / "nothing.jpg", "4x4x3xfp32")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(Im2TensorError, match="directory"):
        im2tensor(tmp_path, "4x4x3xfp32")


def test_non_image_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(Im2TensorError, match=r"cannot read .*notes\.jpg as an image"):
        im2tensor(path, "4x4x3xfp32")


def test_truncated_image_is_named(tmp_path: Path) -> None:
    whole = save_png(random_pixels(64, 64), tmp_path / "whole.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(Im2TensorError, match=r"cut\.png"):
        im2tensor(path, "4x4x3xfp32")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dims": "4x4x3xu8", "mean": 1.0}, "float element type"),
        ({"dims": "4x4x3xi32", "std": [2.0, 2.0, 2.0]}, "float element type"),
        ({"dims": "4x4x3xfp32", "std": [1.0, 0.0, 1.0]}, "std must not be 0"),
        ({"dims": "4x4x3xfp32", "mean": [1.0, 2.0]}, "1 value or 3"),
        ({"dims": "4x4x3xfp32", "mean": float("nan")}, "finite"),
        ({"dims": "4x4x3xfp32", "layout": "nhcw"}, "layout must be one of nhwc, nchw"),
        ({"dims": "4x4x3xfp32", "color": "bgra"}, "color must be one of"),
        ({"dims": "4x4x3xfp32", "resize": "crop"}, "resize must be one of"),
    ],
)
def test_options_that_do_not_fit_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    image = save_png(random_pixels(8, 8), tmp_path / "p.png")
    with pytest.raises(Im2TensorError, match=message):
        im2tensor(image, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the command


def test_command_writes_the_seeds_tensor_and_says_so(tmp_path: Path) -> None:
    image = save_png(random_pixels(30, 50), tmp_path / "p.png")
    out = tmp_path / "in-12x20x3xf32-bgr.tensor"
    result = CliRunner().invoke(
        im2tensor_command, ["--image", str(image), "--dims", "12x20x3xfp32", "--tensor", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert str(out) in result.output and "12x20x3 fp32" in result.output
    assert out.read_bytes() == im2tensor(image, "12x20x3xfp32").tobytes()


def test_command_extensions(tmp_path: Path) -> None:
    image = save_png(random_pixels(30, 50), tmp_path / "p.png")
    out = tmp_path / "t.tensor"
    args = ["--image", str(image), "--dims", "12x20x3xfp32", "--tensor", str(out), "--layout", "nchw"]
    args += ["--color", "rgb", "--mean", "1,2,3", "--std", "2", "--resize", "letterbox"]
    result = CliRunner().invoke(im2tensor_command, args)
    assert result.exit_code == 0, result.output
    expected = im2tensor(
        image, "12x20x3xfp32", layout="nchw", color="rgb", mean=[1, 2, 3], std=2, resize="letterbox"
    )
    assert out.read_bytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": "{tmp}/missing.png"}, "image file not found"),
        ({"--dims": "12x20xfp32"}, "bad dims '12x20xfp32'"),
        ({"--dims": "12x20x3xu8", "--mean": "1"}, "float element type"),
        ({"--mean": "1,two,3"}, "not comma-separated numbers"),
        ({"--tensor": "{tmp}/no-such-dir/t.tensor"}, "cannot write"),
    ],
)
def test_command_reports_mistakes_in_one_line_with_exit_code_2(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    image = save_png(random_pixels(8, 8), tmp_path / "p.png")
    options = {"--image": str(image), "--dims": "4x4x3xfp32", "--tensor": str(tmp_path / "t.tensor")}
    options.update({option: value.format(tmp=tmp_path) for option, value in change.items()})
    result = CliRunner().invoke(main, ["im2tensor", *(word for pair in options.items() for word in pair)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("wasinn: error: ") and message in line
    assert "Traceback" not in result.output
