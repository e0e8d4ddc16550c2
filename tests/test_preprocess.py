"""What the model sees: input modes, resizing and scaling."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.edge.backends import IntegerInput, space_to_depth
from leukedge.edge.preprocess import (
    Preprocess,
    integer_lut,
    lut_view,
    model_view,
    prepare,
    resize_crop,
    scale_view,
)
from leukedge.edge.synth import synth_field


@pytest.fixture
def field():
    return synth_field("Pre", size=(224, 224), seed=4)


def test_white_balanced_view_cancels_lamp_colour_and_brightness(field):
    rgb = field[0].astype(np.float32)
    shifted = np.clip(rgb * np.array([1.08 * 0.85, 0.85, 0.92 * 0.85]), 0, 255).astype(np.uint8)
    plain = np.abs(model_view(shifted, "field").astype(float) - rgb).mean()
    wb = np.abs(
        model_view(shifted, "field-wb").astype(float) - model_view(field[0], "field-wb")
    ).mean()
    assert wb < plain / 4


def test_white_balance_is_the_per_pixel_scaling(field):
    """The lookup table gives the bytes of scaling every pixel by the white point's gain."""
    from leukedge.edge.illumination import white_balance, white_point

    for rgb in (field[0], np.full((8, 8, 3), 255, np.uint8), np.zeros((8, 8, 3), np.uint8)):
        gain = np.float32(255.0) / white_point(rgb)
        expected = np.clip(rgb * gain + np.float32(0.5), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(white_balance(rgb), expected)


def test_white_point_quantile_is_numpys_quantile_of_the_counted_values():
    """The brightness quantile from histogram counts is ``np.quantile`` of the repeated values,
    bit for bit, including counts piled on a few values (where the interpolation lands on a
    value exactly) and the ends."""
    from leukedge.edge.illumination import _BRIGHTNESS, _quantile

    rng = np.random.default_rng(0)
    for trial in range(3000):
        counts = np.zeros(len(_BRIGHTNESS), np.int64)
        if trial % 2:
            np.add.at(counts, rng.integers(0, len(counts), rng.integers(1, 4000)), 1)
        else:
            counts[rng.integers(0, len(counts), rng.integers(1, 4))] = rng.integers(1, 50)
        for q in (0.6, 0.0, 1.0, rng.random()):
            expected = np.quantile(np.repeat(_BRIGHTNESS, counts), q)
            got = _quantile(_BRIGHTNESS, counts, q)
            assert got == expected and got.dtype == expected.dtype, (trial, q)


def test_white_point_ignores_glare_where_a_local_maximum_does_not(field):
    """Real fields have a few saturated glare pixels: the white point (a median of the
    bright pixels) still follows a warm lamp; the local maximum stays at 255 and the
    lamp's colour passes through to the model."""
    from leukedge.edge.illumination import white_point

    rgb = field[0].copy()
    for y in range(8, 224, 40):
        for x in range(8, 224, 40):
            rgb[y : y + 8, x : x + 8] = 255  # specks of glare
    warm = np.clip(rgb * np.array([1.08, 1.0, 0.92]) + 0.5, 0, 255).astype(np.uint8)
    ratio = white_point(warm) / white_point(rgb)
    np.testing.assert_allclose(ratio, [1.08, 1.0, 0.92], atol=0.01)
    diff = {
        wp: np.abs(
            model_view(warm, "field-wb", white_point=wp).astype(float)
            - model_view(rgb, "field-wb", white_point=wp)
        ).mean(axis=(0, 1))
        for wp in ("bright-median", "local-max")
    }
    assert diff["bright-median"].max() < 2.0
    assert diff["local-max"][0] > 8 * diff["bright-median"][0]  # red: glare pins it at 255


def test_manifests_without_a_white_point_keep_the_local_maximum():
    old = {k: v for k, v in Preprocess().to_dict().items() if k != "white_point"}
    assert Preprocess.from_dict(old).white_point == "local-max"
    assert Preprocess.from_dict(Preprocess().to_dict()).white_point == "bright-median"
    with pytest.raises(ValueError, match="white point"):
        Preprocess(white_point="max")


def test_mask_view_blacks_out_everything_but_the_mask(field):
    rgb, mask = field
    view = model_view(rgb, "mask", mask)
    assert (view[~mask] == 0).all()
    np.testing.assert_array_equal(view[mask], rgb[mask])


def test_resize_crop_shorter_side_then_centre():
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 140:160] = 255  # a bright stripe in the centre survives the crop
    out = resize_crop(wide, 50)
    assert out.shape == (50, 50, 3)
    assert out[:, 20:30].mean() > 200 and out[:, :10].mean() == 0
    same = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    np.testing.assert_array_equal(resize_crop(same, 32), same)


def test_prepare_layout_and_scaling(field):
    rgb = field[0]
    nchw = prepare(rgb, Preprocess(input_mode="field", size=224))
    nhwc = prepare(rgb, Preprocess(input_mode="field", layout="NHWC", scale=1 / 127.5, offset=-1))
    assert nchw.shape == (3, 224, 224) and nchw.dtype == np.float32
    np.testing.assert_allclose(nchw[0], rgb[..., 0] / 255, atol=1e-6)  # RGB order, /255
    np.testing.assert_allclose(nhwc[..., 2], rgb[..., 2] / 127.5 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="input mode"):
        Preprocess(input_mode="crop")
    assert Preprocess.from_dict(Preprocess(size=96).to_dict() | {"extra": 1}).size == 96


YOLO = Preprocess(input_mode="field", size=64)
MOBILENET = Preprocess(input_mode="field", size=64, layout="NHWC", scale=1 / 127.5, offset=-1)


@pytest.mark.parametrize(
    "spec, q",
    [(YOLO, IntegerInput(np.dtype(np.uint8), 1 / 255, 0, "NHWC", "NCHW", True)),
     (YOLO, IntegerInput(np.dtype(np.int8), 1 / 255, -128, "NCHW", "NCHW", True)),
     (MOBILENET, IntegerInput(np.dtype(np.int8), 0.007843137718737125, -1, "NHWC", "NHWC", False)),
     (MOBILENET, IntegerInput(np.dtype(np.uint8), 0.0123, 7, "NHWC", "NHWC", True)),
     (YOLO, IntegerInput(np.dtype(np.uint8), 1 / 255, 0, "NHWC", "NCHW", True, block=2))],
)  # fmt: skip
def test_the_pixel_table_gives_exactly_the_quantized_float_input(spec, q):
    """Looking pixels up in ``integer_lut``'s table is bit-identical to scaling them to float
    and quantizing that, in the layout the model file takes."""
    views = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    views[0, :4] = np.arange(256, dtype=np.uint8).reshape(4, 64)[..., None]  # every value
    lut = integer_lut(spec, q.quantize)
    assert lut.shape == (256,) and lut.dtype == q.dtype
    got = q.arrange(lut_view(views, lut), "NHWC")
    want = q.from_float(scale_view(views, spec))
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_an_identity_table_passes_the_pixels_through():
    views = np.random.default_rng(2).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    lut = integer_lut(
        YOLO, IntegerInput(np.dtype(np.uint8), 1 / 255, 0, "NHWC", "NCHW", True).quantize
    )
    np.testing.assert_array_equal(lut, np.arange(256))
    assert lut_view(views, lut) is views


def test_space_to_depth_puts_each_patch_row_by_row():
    x = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3).astype(np.int8)
    y = space_to_depth(x, 2)
    assert y.shape == (2, 2, 3, 12) and y.dtype == np.int8 and y.flags.c_contiguous
    want = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12)
    np.testing.assert_array_equal(y, want)
