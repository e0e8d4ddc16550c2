"""Segmentation: reference-exact fast path, scaling, robust recovery, scale bar, CLI, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from conftest import need_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from leukedge.commands.segment import segment as segment_command
from leukedge.edge.imageio import read_field, write_field
from leukedge.edge.segment import (
    MODES,
    REFERENCE_CLEANING,
    analysis_copy,
    clean,
    otsu_threshold,
    qc_strip,
    scaled_params,
    segment,
)
from leukedge.edge.synth import synth_field

LABELS = ("Benign", "Early", "Pre", "Pro")


def recall_precision(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = np.count_nonzero(mask & truth)
    return hit / max(np.count_nonzero(truth), 1), hit / max(np.count_nonzero(mask), 1)


def pale(rgb: np.ndarray, contrast: float = 0.35) -> np.ndarray:
    """Wash a field out towards white (weak stain)."""
    return np.clip(255 - (255 - rgb.astype(np.float32)) * contrast, 0, 255).astype(np.uint8)


def tint(rgb: np.ndarray, gains=(1.0, 0.85, 0.7)) -> np.ndarray:
    """A yellow lamp: scale the channels."""
    return np.clip(rgb * np.float32(gains), 0, 255).astype(np.uint8)


def tint_gradient(rgb: np.ndarray) -> np.ndarray:
    """A lamp whose colour drifts from neutral (left) to yellow (right)."""
    r = np.linspace(0, 1, rgb.shape[1], dtype=np.float32)[None, :, None]
    gain = (1 - r) + r * np.float32([1.0, 0.8, 0.7])
    return np.clip(rgb * gain, 0, 255).astype(np.uint8)


def draw_label(rgb: np.ndarray, colour=(220, 20, 20)) -> tuple[np.ndarray, np.ndarray]:
    """A scale-bar label (white box, coloured text and bar) at the bottom right.

    Returns the field and the bool mask of the box.
    """
    out = rgb.copy()
    h, w = out.shape[:2]
    x0, y0 = w - 84, h - 26
    cv2.rectangle(out, (x0, y0), (w - 2, h - 4), (255, 255, 255), -1)
    cv2.putText(out, "200 pix", (x0 + 4, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 2)
    cv2.line(out, (x0 + 4, h - 6), (w - 8, h - 6), colour, 2)
    box = np.zeros((h, w), bool)
    box[y0 : h - 3, x0 : w - 1] = True
    return out, box


# --- reference-exact fast path ---------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_fast_matches_kmeans_reference_on_synthetic_fields(label):
    for seed in range(3):
        rgb, _ = synth_field(label, seed=seed)
        ref, fast = segment(rgb, "reference", stages=True), segment(rgb, "fast", stages=True)
        assert np.array_equal(ref.stages.split, fast.stages.split)
        assert np.array_equal(ref.mask, fast.mask)


def test_otsu_threshold_matches_opencv():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.clip(rng.normal(rng.uniform(60, 200, 2)[rng.integers(0, 2, 5000)], 8), 0, 255)
        a = a.astype(np.uint8).reshape(50, 100)
        t, _ = cv2.threshold(a, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        assert otsu_threshold(np.bincount(a.ravel(), minlength=256)) == int(t)
    assert otsu_threshold(np.eye(256)[[7, 200]]).tolist() == [255, 255]  # one bin: no split


# --- resolution --------------------------------------------------------------------------


def test_params_scale_with_field_area():
    k_open, k_close, area = scaled_params(224, 224)
    assert (k_open.shape, k_close.shape, area) == ((3, 3), (7, 7), 500)
    k_open, k_close, area = scaled_params(448, 448)
    assert (k_open.shape, k_close.shape, area) == ((5, 5), (13, 13), 2000)
    assert scaled_params(112, 112)[2] == 125
    assert scaled_params(1, 1)[0].shape == (1, 1)


@pytest.mark.parametrize("side", [224, 448])
def test_min_area_filter_scales(side):
    """A 400 px blob (at 224) is dropped and a 700 px one kept, at both sizes."""
    k = side / 224
    split = np.zeros((side, side), np.uint8)
    cv2.circle(split, (int(60 * k), int(60 * k)), int(round(np.sqrt(400 / np.pi) * k)), 1, -1)
    cv2.circle(split, (int(150 * k), int(150 * k)), int(round(np.sqrt(700 / np.pi) * k)), 1, -1)
    mask, stats, _, keep = clean(split, REFERENCE_CLEANING)
    assert keep.sum() == 1
    assert mask[int(150 * k), int(150 * k)] and not mask[int(60 * k), int(60 * k)]


def test_large_frame_is_analysed_downscaled():
    rgb, truth = synth_field("Pre", size=(760, 1014), seed=1)
    assert analysis_copy(rgb).shape == (380, 507, 3)
    result = segment(rgb, "robust")
    assert result.mask.shape == truth.shape and result.scale == 0.5
    recall, precision = recall_precision(result.mask, truth)
    assert recall >= 0.95 and precision >= 0.95
    ref, fast = segment(rgb, "reference"), segment(rgb, "fast")
    assert np.mean(ref.mask == fast.mask) >= 0.999


# --- robust mode -------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_robust_recall_precision_on_synthetic_fields(label):
    masks, truths = zip(*((segment(f, "robust").mask, t) for f, t in map(_synth(label), range(4))))
    recall, precision = recall_precision(np.stack(masks), np.stack(truths))
    assert recall >= 0.95 and precision >= 0.95


def _synth(label):
    return lambda seed: synth_field(label, seed=seed)


@pytest.mark.parametrize(
    "transform", [pale, tint, lambda x: tint(pale(x))], ids=["pale", "tint", "pale-tint"]
)
def test_robust_recovers_blasts_the_reference_loses(transform):
    """Small blasts in pale/tinted fields: the reference's 500 px filter drops them."""
    empty = 0
    for seed in range(3):
        rgb, truth = synth_field("Benign", seed=seed)
        rgb = transform(rgb)
        reference = segment(rgb, "reference").mask
        assert recall_precision(reference, truth)[0] < 0.5
        empty += not reference.any()
        result = segment(rgb, "robust")
        assert result.cells
        recall, precision = recall_precision(result.mask, truth)
        assert recall >= 0.9 and precision >= 0.9
    assert empty >= 2


@pytest.mark.parametrize("label", ["Early", "Pro"])
def test_robust_rejects_a_tint_gradient_split(label):
    """A colour drift across a pale field: the reference's cluster is half the field."""
    rgb, truth = synth_field(label, seed=0)
    rgb = tint_gradient(pale(rgb))
    assert recall_precision(segment(rgb, "reference").mask, truth)[1] < 0.5
    recall, precision = recall_precision(segment(rgb, "robust").mask, truth)
    assert recall >= 0.9 and precision >= 0.9


@pytest.mark.parametrize("colour", [(220, 20, 20), (0, 0, 0)], ids=["red", "black"])
def test_scale_bar_label_is_excluded(colour):
    rgb, truth = synth_field("Pre", seed=3)
    labelled, box = draw_label(rgb, colour)
    truth &= ~box
    result = segment(labelled, "robust", stages=True)
    assert "scale-bar" in result.flags
    assert not result.mask[box].any()
    assert recall_precision(result.mask, truth)[0] >= 0.95
    if colour[1] < 100 < colour[0]:  # red text is as red as a cell: it would be kept
        text = (labelled != rgb).any(axis=2) & (labelled.min(axis=2) < 200)
        assert (result.stages.lab[..., 1][text] > result.threshold).mean() > 0.5


def test_blank_fields_give_empty_masks():
    for value in (0, 255, 128):
        rgb = np.full((64, 80, 3), value, np.uint8)
        for mode in MODES:
            result = segment(rgb, mode)
            assert result.mask.shape == (64, 80) and not result.mask.any() and not result.cells
    assert "no-contrast" in segment(np.full((64, 80, 3), 200, np.uint8)).flags


# --- result consistency ------------------------------------------------------------------


def assert_cells_match_mask(result) -> None:
    mask = result.mask
    assert mask.dtype == bool
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    assert len(result.cells) == n - 1
    assert sum(c.area for c in result.cells) == np.count_nonzero(mask)
    for cell in result.cells:
        x, y, w, h = cell.bbox
        assert np.count_nonzero(mask[y : y + h, x : x + w]) >= cell.area
        assert x <= cell.centroid[0] <= x + w and y <= cell.centroid[1] <= y + h
        assert mask[y : y + h, x : x + w].any(axis=0).all()


@pytest.mark.parametrize("mode", MODES)
def test_cells_consistent_with_mask(mode):
    for label in LABELS:
        assert_cells_match_mask(segment(synth_field(label, seed=5)[0], mode))
    assert_cells_match_mask(segment(draw_label(synth_field("Pro", seed=2)[0])[0], mode))
    assert_cells_match_mask(segment(synth_field("Early", size=(700, 900), seed=0)[0], mode))


def test_impose_and_qc_strip():
    rgb, _ = synth_field("Early", seed=2)
    for mode in MODES:
        result = segment(rgb, mode, stages=True)
        imposed = result.impose(rgb)
        assert np.array_equal(imposed[result.mask], rgb[result.mask])
        assert not imposed[~result.mask].any()
        assert qc_strip(rgb, result).shape == (224 + 14, 6 * 224 + 10, 3)
    with pytest.raises(ValueError, match="stages=True"):
        qc_strip(rgb, segment(rgb))


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, problem",
    [
        (np.zeros((32, 32), np.uint8), "grayscale"),
        (np.zeros((32, 32, 1), np.uint8), "grayscale"),
        (np.zeros((32, 32, 4), np.uint8), "alpha"),
        (np.zeros((32, 32, 3), np.uint16), "uint16"),
        (np.zeros((32, 32, 3), np.float32), "float32"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
        (np.zeros((32, 32, 2), np.uint8), "shape"),
        (np.broadcast_to(np.zeros(3, np.uint8), (8000, 8000, 3)), "too large"),
    ],
)
def test_bad_fields_raise_value_error(field, problem):
    for mode in MODES:
        with pytest.raises(ValueError, match=problem):
            segment(field, mode)


def test_unknown_mode_and_tiny_field():
    with pytest.raises(ValueError, match="unknown segmentation mode"):
        segment(np.zeros((8, 8, 3), np.uint8), "kmeans")
    for mode in MODES:
        assert segment(np.full((1, 1, 3), 90, np.uint8), mode).mask.shape == (1, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint8, np.uint16, np.float32, bool]),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_arrays_give_a_result_or_a_value_error(h, w, channels, dtype, mode, seed):
    shape = (h, w) if channels is None else (h, w, channels)
    arr = np.random.default_rng(seed).integers(0, 256, shape).astype(dtype)
    try:
        result = segment(arr, mode)
    except ValueError:
        assert channels != 3 or dtype is not np.uint8
        return
    assert result.mask.shape == (h, w)
    assert_cells_match_mask(result)


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command()(segment_command)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_cli_writes_masks_and_skips_bad_files(tmp_path, cli):
    good = []
    for label in ("Early", "Pro"):
        path = tmp_path / f"{label}.png"
        write_field(path, synth_field(label, seed=1)[0])
        good.append(path)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    res = cli(*good, bad, "--out", out, "--qc", "--mode", "fast")
    assert res.exit_code == 0, res.output
    assert "broken.jpg" in res.output and "not a readable image" in res.output
    for path in good:
        mask = read_field(out / f"{path.stem}_masked.png")
        assert mask.shape == (224, 224, 3)
        assert (out / f"{path.stem}_mask.png").is_file()
        assert read_field(out / f"{path.stem}_qc.png").shape == (238, 1354, 3)
    assert not list(out.glob("broken*"))


def test_cli_keeps_images_that_share_a_name_apart(tmp_path, cli):
    """Issue 24 item 13: ``a/x.jpg b/x.jpg`` once overwrote the first image's outputs and
    still said "2 of 2"; x.jpg beside x.png and a file given twice are handled too."""
    fields = {}
    for i, rel in enumerate(("a/x.png", "b/x.png", "b/y.png", "b/y.jpg")):
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        fields[rel] = synth_field(LABELS[i], size=(96, 96), seed=i)[0]
        cv2.imwrite(str(path), cv2.cvtColor(fields[rel], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    paths = [tmp_path / rel for rel in fields]
    res = cli(*paths, paths[0], "--out", out, "--mode", "fast")
    assert res.exit_code == 0, res.output
    assert "4 of 4 images segmented" in res.output
    names = {"a/x.png": "a__x", "b/x.png": "b__x", "b/y.png": "y_png", "b/y.jpg": "y_jpg"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{kind}.png" for n in names.values() for kind in ("mask", "masked")
    )
    for rel, name in names.items():  # each output is its own image's
        want = segment(read_field(tmp_path / rel), "fast").mask
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 0, want), rel


def test_cli_fails_when_nothing_is_processed(tmp_path, cli):
    bad = tmp_path / "grey.png"
    cv2.imwrite(str(bad), np.zeros((16, 16), np.uint8))
    res = cli(bad, tmp_path / "missing.png", "--out", tmp_path / "out")
    assert res.exit_code != 0
    assert "grayscale" in res.output and "missing.png" in res.output


# --- shared data (optional) --------------------------------------------------------------


def _readme_figures(prefix: str) -> list[float]:
    """The numbers of the README's segmentation line or table row starting with ``prefix``
    (percent signs dropped), in order."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith(prefix))
    return [float(x) for x in re.findall(r"\d+\.\d+", line.removeprefix(prefix))]


@pytest.mark.shared
def test_shared_fields_per_class_means_match_the_readme():
    """Every shared field (~1 min): per class, the fast mode's mean pixel agreement with the
    K-means reference, the empty-mask rates of reference and robust, and the IoU with the
    authors' masks are the README's figures (as rounded there)."""
    from leukedge.benchmarks.segmentation import AUTHORS_CLASSES, authors_mask

    root = need_shared()
    agree, empty, iou = {}, {"reference": {}, "robust": {}}, {"reference": {}, "robust": {}}
    for label in LABELS:
        files = sorted((root / "Original" / label).glob("*.jpg"))
        per_field, gone, overlap = (
            [],
            {"reference": 0, "robust": 0},
            {"reference": [], "robust": []},
        )
        for path in files:
            rgb = read_field(path)
            masks = {m: segment(rgb, m).mask for m in ("reference", "fast", "robust")}
            per_field.append(np.mean(masks["fast"] == masks["reference"]))
            for m in gone:
                gone[m] += not masks[m].any()
                if label in AUTHORS_CLASSES:
                    truth = authors_mask(path)
                    union = np.count_nonzero(masks[m] | truth)
                    overlap[m].append(np.count_nonzero(masks[m] & truth) / union if union else 1)
        agree[label] = 100 * np.mean(per_field)
        for m in gone:
            empty[m][label] = 100 * gone[m] / len(files)
            if overlap[m]:
                iou[m][label] = np.mean(overlap[m])
    said = _readme_figures("Fast agrees with the `cv2.kmeans` reference on ")[: len(LABELS)]
    assert [round(agree[c], 2) for c in LABELS] == said, agree
    row = _readme_figures("| empty masks, Benign / Early / Pre / Pro |")
    assert [round(empty[m][c], 1) for m in ("reference", "robust") for c in LABELS] == row, empty
    row = _readme_figures("| IoU with the authors' masks, Benign / Early / Pre |")
    want = [round(iou[m][c], 3) for m in ("reference", "robust") for c in AUTHORS_CLASSES]
    assert want == row, iou
