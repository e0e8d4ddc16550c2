"""Reading fields with clear errors, and the synthetic smear generator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import FieldError, read_field, write_field
from leukedge.edge.synth import synth_field, write_synth_dataset


@pytest.fixture
def field():
    return synth_field("Pre", size=(48, 64), seed=1)[0]


def test_round_trip_is_rgb(tmp_path, field):
    write_field(tmp_path / "f.png", field)
    np.testing.assert_array_equal(read_field(tmp_path / "f.png"), field)
    bgr = cv2.imread(str(tmp_path / "f.png"))
    np.testing.assert_array_equal(bgr[..., ::-1], field)


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("empty.jpg", lambda p, f: p.write_bytes(b""), "empty file"),
        ("text.jpg", lambda p, f: p.write_text("hello"), "not a readable image"),
        (
            "cut.jpg",
            lambda p, f: p.write_bytes(cv2.imencode(".jpg", f)[1].tobytes()[:300]),
            "truncated",
        ),
        (
            "cut.png",
            lambda p, f: p.write_bytes(cv2.imencode(".png", f)[1].tobytes()[:-20]),
            "truncated",
        ),
        ("gray.png", lambda p, f: cv2.imwrite(str(p), f[..., 0]), "grayscale"),
        ("rgba.png", lambda p, f: cv2.imwrite(str(p), np.dstack([f, f[..., :1]])), "alpha"),
        ("deep.png", lambda p, f: cv2.imwrite(str(p), f.astype(np.uint16) * 257), "16-bit"),
        ("missing.jpg", lambda p, f: None, "cannot read"),
    ],
)
def test_bad_files_raise_field_error_naming_file(tmp_path, field, name, make, problem):
    path = tmp_path / name
    make(path, field)
    with pytest.raises(FieldError, match=problem) as info:
        read_field(path)
    assert name in str(info.value)


def test_enormous_image_refused_before_decoding(tmp_path):
    big = np.zeros((3000, 3000, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    with pytest.raises(FieldError, match="too large"):
        read_field(tmp_path / "big.png", max_pixels=1_000_000)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    with pytest.raises(FieldError, match="3000x3000"):
        read_field(tmp_path / "big.jpg", max_pixels=1_000_000)


@pytest.mark.parametrize("label", CLASSES)
def test_synth_is_deterministic_and_mask_marks_purple_cells(label):
    rgb, mask = synth_field(label, size=(96, 128), seed=5)
    rgb2, mask2 = synth_field(label, size=(96, 128), seed=5)
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert mask.shape == (96, 128) and mask.dtype == bool
    np.testing.assert_array_equal(rgb, rgb2)
    np.testing.assert_array_equal(mask, mask2)
    assert not np.array_equal(rgb, synth_field(label, size=(96, 128), seed=6)[0])
    a = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1].astype(float)
    assert 0.005 < mask.mean() < 0.5
    assert a[mask].mean() > a[~mask].mean() + 15  # blasts are the high-A (magenta) pixels


def test_synth_classes_differ_in_blast_size():
    def mean_area(label):
        areas = []
        for seed in range(6):
            mask = synth_field(label, seed=seed)[1].astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            areas += list(stats[1:, cv2.CC_STAT_AREA])
        return np.median(areas)

    sizes = [mean_area(c) for c in ("Benign", "Early", "Pre", "Pro")]
    assert sizes == sorted(sizes)


def test_synth_scales_with_field_size():
    small = synth_field("Pro", size=(224, 224), seed=0)[1].mean()
    large = synth_field("Pro", size=(896, 896), seed=0)[1].mean()
    assert 0.3 < large / small < 3  # same field of view, finer sampling


def test_write_synth_dataset_layout(tmp_path):
    paths = write_synth_dataset(tmp_path, 2, size=(32, 32))
    assert len(paths) == 8
    for p in paths:
        assert p.parent.parent.name == "Original"
        mask = cv2.imread(str(tmp_path / "Masks" / p.parent.name / f"{p.stem}.png"), 0)
        assert set(np.unique(mask)) <= {0, 255}
    with pytest.raises(ValueError, match="unknown class"):
        synth_field("Myeloid")
