"""visualize: tensor files, argmax, colours, shares, the 3-panel picture, the command, a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import require_module, shared_file
from wasinn.cli import main
from wasinn.cli.tools import visualize_command
from wasinn.tools import (
    CLASS_COLORS,
    CLASS_NAMES,
    VisualizeError,
    class_shares,
    colorize,
    dims_from_filename,
    im2tensor,
    overlay,
    read_tensor,
    segmentation_labels,
    visualize,
    write_tensor,
)

ROAD_DIR = "road-segmentation-adas-0001"
HEIGHT, WIDTH = 24, 160
PHOTO_COLOR = (200, 100, 50)
# The picture's geometry for 24x160 panels, as docs/tools.md states it: a 16 px margin, 16 px
# between panels, a 40 px title band above and a 48 px legend band below.
PICTURE_SIZE = (16 + 3 * 160 + 2 * 16 + 16, 16 + 40 + 24 + 48 + 16)
PANEL_LEFTS = (16, 16 + 160 + 16, 16 + 2 * (160 + 16))
PANEL_TOP = 16 + 40


def known_labels() -> npt.NDArray[np.intp]:
    """Top half background with a mark stripe, bottom half road with a curb on the left."""
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.intp)
    labels[12:] = 1
    labels[12:, :40] = 2
    labels[0, :10] = 3
    return labels


def scores_for(labels: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
    """1x4xHxW scores whose argmax is ``labels``, with noise smaller than the winning margin."""
    noise = np.random.default_rng(0).uniform(0, 0.5, (1, 4, *labels.shape))
    one_hot = np.eye(4)[labels].transpose(2, 0, 1)[np.newaxis]
    return (one_hot * 2 + noise).astype(np.float32)


def panel(picture: Image.Image, index: int) -> npt.NDArray[np.uint8]:
    left = PANEL_LEFTS[index]
    return np.asarray(picture.crop((left, PANEL_TOP, left + WIDTH, PANEL_TOP + HEIGHT)))


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A plain photo, larger than the panels and of another aspect ratio."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (300, 90), PHOTO_COLOR).save(path)
    return path


# --------------------------------------------------------------------------- tensors


def test_dims_come_from_the_seeds_file_names() -> None:
    assert dims_from_filename("out/wasinn-openvino-inference-output-1x4x512x896xf32.tensor") == (
        (1, 4, 512, 896),
        np.dtype("<f4"),
    )
    assert dims_from_filename("wasinn-openvino-inference-input-512x896x3xf32-bgr.tensor") == (
        (512, 896, 3),
        np.dtype("<f4"),
    )
    assert dims_from_filename("scores-2x3xFP16.bin") == ((2, 3), np.dtype("<f2"))
    assert dims_from_filename("output.tensor") is None
    assert dims_from_filename("v1x4x512x896xf32.tensor") is None  # glued to a letter: not dims


def test_read_tensor_from_its_name_or_given_dims(tmp_path: Path) -> None:
    scores = scores_for(known_labels())
    named = tmp_path / f"out-1x4x{HEIGHT}x{WIDTH}xf32.tensor"
    write_tensor(scores, named)
    np.testing.assert_array_equal(read_tensor(named), scores)
    plain = tmp_path / "out.tensor"
    write_tensor(scores, plain)
    np.testing.assert_array_equal(read_tensor(plain, dims=f"4x{HEIGHT}x{WIDTH}xfp32"), scores[0])
    with pytest.raises(VisualizeError, match="cannot tell the shape"):
        read_tensor(plain)


def test_read_tensor_refuses_a_size_that_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "out-1x4x8x8xf32.tensor"
    path.write_bytes(bytes(100))
    with pytest.raises(VisualizeError, match="holds 100 bytes, but 1x4x8x8 float32 needs 1024"):
        read_tensor(path)
    with pytest.raises(VisualizeError, match="cannot read tensor file"):
        read_tensor(tmp_path / "missing-1x4x8x8xf32.tensor")


def test_argmax_over_the_class_axis() -> None:
    labels = known_labels()
    scores = scores_for(labels)
    np.testing.assert_array_equal(segmentation_labels(scores), labels)
    np.testing.assert_array_equal(segmentation_labels(scores[0]), labels)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 4, 3, 3), "a batch of 2"), ((3, 3), "expected 1xCxHxW"), ((1, 5, 3, 3), "5 classes")],
)
def test_scores_of_the_wrong_shape_are_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(VisualizeError, match=message):
        segmentation_labels(np.zeros(shape, np.float32))


# --------------------------------------------------------------------------- colours and shares


def test_colours_are_the_seeds() -> None:
    assert CLASS_NAMES == ("BG", "road", "curb", "mark")
    assert CLASS_COLORS == ((68, 1, 84), (48, 103, 141), (53, 183, 120), (199, 216, 52))
    np.testing.assert_array_equal(colorize(np.array([[0, 1], [2, 3]])), [CLASS_COLORS[:2], CLASS_COLORS[2:]])


def test_shares_count_pixels_in_percent() -> None:
    shares = class_shares(known_labels())
    total = HEIGHT * WIDTH
    assert shares == pytest.approx(
        {"BG": 100 * (12 * 160 - 10) / total, "road": 100 * 12 * 120 / total, "curb": 100 * 12 * 40 / total,
         "mark": 100 * 10 / total}
    )  # fmt: skip
    assert sum(shares.values()) == pytest.approx(100)
    assert class_shares(np.zeros((3, 3), np.intp)) == {"BG": 100.0, "road": 0.0, "curb": 0.0, "mark": 0.0}
    with pytest.raises(VisualizeError, match=r"0\.\.3"):
        class_shares(np.array([[4]]))


def test_overlay_is_thirty_percent_mask() -> None:
    base = np.array([[PHOTO_COLOR]], np.uint8)
    mask = np.array([[CLASS_COLORS[0]]], np.uint8)
    # 0.3 * (68, 1, 84) + 0.7 * (200, 100, 50) = (160.4, 70.3, 60.2)
    np.testing.assert_array_equal(overlay(base, mask), [[(160, 70, 60)]])


# --------------------------------------------------------------------------- the picture


def test_picture_has_three_panels_side_by_side_and_a_legend(photo: Path, tmp_path: Path) -> None:
    labels = known_labels()
    out = tmp_path / "result.png"
    picture = visualize(photo, scores_for(labels), output_path=out)
    assert picture.size == PICTURE_SIZE == (544, 144)
    assert Image.open(out).size == PICTURE_SIZE

    np.testing.assert_array_equal(panel(picture, 0), np.full((HEIGHT, WIDTH, 3), PHOTO_COLOR))
    np.testing.assert_array_equal(panel(picture, 1), np.asarray(CLASS_COLORS, np.uint8)[labels])
    masked = panel(picture, 2)
    np.testing.assert_array_equal(masked[0, 20], (160, 70, 60))  # background over the photo
    np.testing.assert_array_equal(masked, overlay(panel(picture, 0), panel(picture, 1)))

    pixels = np.asarray(picture)
    # Titles: ink in the title band over each panel; margins and gaps stay white.
    for left in PANEL_LEFTS:
        assert (pixels[16:56, left : left + WIDTH] < 128).any()
    assert (pixels[:, :16] == 255).all() and (pixels[:, -16:] == 255).all()
    assert (pixels[PANEL_TOP : PANEL_TOP + HEIGHT, 176:192] == 255).all()
    # Legend: every class colour as a swatch in the band under the panels.
    legend = pixels[PANEL_TOP + HEIGHT : PANEL_TOP + HEIGHT + 48]
    for color in CLASS_COLORS:
        assert (legend == color).all(axis=-1).sum() >= 8 * 8
    assert (pixels[-16:] == 255).all()


def test_picture_scales_with_the_tensor(photo: Path) -> None:
    picture = visualize(photo, np.zeros((1, 4, 512, 896), np.float32))
    assert picture.size == (2 * 16 + 3 * 896 + 2 * 16, 16 + 40 + 512 + 48 + 16) == (2752, 632)


def test_flat_arrays_take_dims(photo: Path) -> None:
    scores = scores_for(known_labels())
    picture = visualize(photo, scores.ravel(), dims=f"1x4x{HEIGHT}x{WIDTH}xf32")
    np.testing.assert_array_equal(panel(picture, 1), np.asarray(CLASS_COLORS, np.uint8)[known_labels()])
    with pytest.raises(VisualizeError, match="cannot take dims"):
        visualize(photo, scores.ravel(), dims="1x4x3x3xf32")


def test_unwritable_output_is_reported(photo: Path, tmp_path: Path) -> None:
    scores = scores_for(known_labels())
    with pytest.raises(VisualizeError, match="cannot write"):
        visualize(photo, scores, output_path=tmp_path / "result.unknown-format")
    with pytest.raises(VisualizeError, match="cannot write"):
        visualize(photo, scores, output_path=tmp_path / "missing-dir" / "result.png")


# --------------------------------------------------------------------------- the command


def test_command_draws_a_tensor_file(photo: Path, tmp_path: Path) -> None:
    tensor = tmp_path / f"wasinn-openvino-inference-output-1x4x{HEIGHT}x{WIDTH}xf32.tensor"
    write_tensor(scores_for(known_labels()), tensor)
    out = tmp_path / "result.png"
    result = CliRunner().invoke(
        visualize_command, ["--image", str(photo), "--tensor", str(tensor), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and str(out) in result.output
    assert Image.open(out).size == PICTURE_SIZE


def test_command_takes_dims_and_reports_mistakes_in_one_line(photo: Path, tmp_path: Path) -> None:
    tensor = tmp_path / "scores.bin"
    write_tensor(scores_for(known_labels()), tensor)
    out = tmp_path / "result.png"
    base = ["--image", str(photo), "--tensor", str(tensor), "--output", str(out)]
    ok = CliRunner().invoke(visualize_command, [*base, "--dims", f"1x4x{HEIGHT}x{WIDTH}xf32"])
    assert ok.exit_code == 0, ok.output
    for extra, message in [([], "cannot tell the shape"), (["--dims", "1x4x9x9xf32"], "bytes, but")]:
        result = CliRunner().invoke(main, ["visualize", *base, *extra])
        assert result.exit_code == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith("wasinn: error: ") and message in line


# --------------------------------------------------------------------------- the real model


@pytest.mark.openvino
@pytest.mark.shared_data
@pytest.mark.slow
def test_native_openvino_segments_the_road_like_the_seed(tmp_path: Path) -> None:
    image = shared_file(ROAD_DIR, "empty_road_mapillary.jpg")
    model = shared_file(ROAD_DIR, "road-segmentation-adas-0001.xml")
    reference = shared_file(ROAD_DIR, "reference_segmentation_result.png")
    require_module("openvino")
    import openvino

    compiled = openvino.Core().compile_model(str(model), "CPU")
    # The model takes NCHW; the seed's guest hands the same bytes over in HWC, which the
    # WasmEdge plugin declares as NHWC. Values are identical, only the order differs.
    scores = compiled(im2tensor(image, "512x896x3xfp32", layout="nchw")[np.newaxis])[0]
    tensor = tmp_path / "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"
    write_tensor(scores, tensor)
    picture = visualize(image, tensor, output_path=tmp_path / "result.png")
    labels = segmentation_labels(read_tensor(tensor))

    # The road fills the bottom of the picture and never reaches the sky.
    assert class_shares(labels[384:])["road"] > 50
    assert class_shares(labels[:128])["road"] == 0
    segmentation_left = 16 + 896 + 16
    segmentation = np.asarray(
        picture.crop((segmentation_left, PANEL_TOP, segmentation_left + 896, PANEL_TOP + 512))
    )
    np.testing.assert_array_equal(segmentation, colorize(labels))

    # The seed's picture: its middle panel is the class map, drawn small by matplotlib. Read
    # back each of its pixels that has one of the class colours and compare with ours.
    seed = np.asarray(Image.open(reference).convert("RGB")).astype(np.int32)
    distance = np.linalg.norm(seed[:, :, None, :] - np.asarray(CLASS_COLORS)[None, None], axis=-1)
    seed_labels, has_class_color = distance.argmin(axis=-1), distance.min(axis=-1) < 40
    middle = np.zeros_like(has_class_color)
    middle[:, seed.shape[1] // 3 : 2 * seed.shape[1] // 3] = True
    rows, columns = np.nonzero(has_class_color & middle)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    ours = labels[((np.arange(bottom - top) + 0.5) * 512 / (bottom - top)).astype(int)][
        :, ((np.arange(right - left) + 0.5) * 896 / (right - left)).astype(int)
    ]
    compared = has_class_color[top:bottom, left:right]
    assert compared.mean() > 0.9
    agreement = (ours == seed_labels[top:bottom, left:right])[compared].mean()
    assert agreement > 0.95, f"only {agreement:.1%} of the seed's segmentation pixels agree"
