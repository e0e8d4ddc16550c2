"""Shift suite, shortcut audit, training jitter, metrics, evaluation reports and `leukedge eval`."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.edge.classes import CLASSES
from leukedge.edge.synth import synth_field, write_synth_dataset
from leukedge.evaluation import metrics
from leukedge.evaluation.evaluate import Predictor, evaluate
from leukedge.evaluation.render import write_report
from leukedge.evaluation.shifts import SHIFTS, apply_shift, paint_out_cells
from leukedge.training.jitter import Jitter, dihedral, jitter


def _hsv(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(int)


@pytest.fixture(scope="module")
def field_and_cells():
    return synth_field("Pro", size=(96, 96), seed=3)


@pytest.fixture(scope="module")
def field(field_and_cells):
    return field_and_cells[0]


# --- shifts and the shortcut audit -----------------------------------------------------


def test_shift_suite_names():
    assert list(SHIFTS) == ["hue+8", "hue-8", "dim15", "warm", "desat30"]
    with pytest.raises(ValueError, match="unknown shift"):
        apply_shift(np.zeros((2, 2, 3), np.uint8), "hue+9")


def test_hue_shift_wraps_mod_180():
    hsv = np.array([[[175, 255, 255], [3, 200, 180], [90, 255, 200]]], np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert _hsv(apply_shift(rgb, "hue+8"))[0, :, 0].tolist() == [3, 11, 98]
    assert _hsv(apply_shift(rgb, "hue-8"))[0, :, 0].tolist() == [167, 175, 82]


def test_dim_is_x085(field):
    dimmed = apply_shift(field, "dim15").astype(float)
    assert np.abs(dimmed - field * 0.85).max() <= 0.5


def test_warm_scales_red_and_blue_and_clips():
    rgb = np.array([[[100, 100, 100], [250, 120, 10]]], np.uint8)
    out = apply_shift(rgb, "warm")
    assert out[0, 0].tolist() == [108, 100, 92]
    assert out[0, 1].tolist() == [255, 120, 9]  # 250 * 1.08 = 270 clipped


def test_desat_lowers_saturation(field):
    before, after = _hsv(field)[..., 1], _hsv(apply_shift(field, "desat30"))[..., 1]
    assert after.mean() < 0.8 * before.mean()
    assert np.abs(after - before * 0.7).mean() < 2


def test_shifts_keep_shape_and_dtype(field):
    for name in SHIFTS:
        out = apply_shift(field, name)
        assert out.shape == field.shape and out.dtype == np.uint8


def test_paint_out_cells_removes_the_cells(field_and_cells):
    rgb, cells = field_and_cells
    painted = paint_out_cells(rgb)
    a, a_painted = (
        cv2.cvtColor(x, cv2.COLOR_RGB2LAB)[..., 1].astype(float) for x in (rgb, painted)
    )
    background = np.median(a[~cells])
    assert a[cells].mean() - background > 20  # the purple cells stand out in a*
    assert np.abs(a_painted[cells] - background).max() <= 3
    # all in one colour, and the given mask is used as is (dilated)
    assert len(np.unique(painted[cells], axis=0)) == 1
    assert np.array_equal(paint_out_cells(rgb, np.zeros_like(cells)), rgb)


# --- training jitter ------------------------------------------------------------------


def test_jitter_is_deterministic_for_a_seed(field):
    rgb = field
    a = jitter(rgb, np.random.default_rng(7))
    assert np.array_equal(a, jitter(rgb, np.random.default_rng(7)))
    assert not np.array_equal(a, jitter(rgb, np.random.default_rng(8)))
    assert a.shape == rgb.shape and a.dtype == np.uint8


def test_jitter_stays_within_bounds(field):
    rgb = field
    h0, s0, v0 = np.moveaxis(_hsv(rgb), -1, 0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        hue = _hsv(jitter(rgb, rng, Jitter(sat=None, val=None, gain=None)))[..., 0]
        shift = (hue - h0 + 90) % 180 - 90
        assert np.median(np.abs(shift)) <= 12
        sat = _hsv(jitter(rgb, rng, Jitter(hue=None, val=None, gain=None)))[..., 1]
        assert 0.6 - 0.02 <= sat.mean() / s0.mean() <= 1.4 + 0.02
        val = _hsv(jitter(rgb, rng, Jitter(hue=None, sat=None, gain=None)))[..., 2]
        assert 0.75 - 0.02 <= val.mean() / v0.mean() <= 1.15 + 0.02
        gained = jitter(rgb, rng, Jitter(hue=None, sat=None, val=None)).reshape(-1, 3)
        ratio = gained.mean(0) / rgb.reshape(-1, 3).mean(0)
        assert ((ratio >= 0.9 - 0.01) & (ratio <= 1.1 + 0.01)).all()


def test_jitter_parts_switch_off(field):
    rgb = field
    off = Jitter(hue=None, sat=None, val=None, gain=None)
    assert np.array_equal(jitter(rgb, np.random.default_rng(0), off), rgb)
    only_hue = replace(off, hue=12)
    s0 = _hsv(rgb)[..., 1:]
    out = jitter(rgb, np.random.default_rng(1), only_hue)
    assert not np.array_equal(out, rgb)
    assert np.abs(_hsv(out)[..., 1:] - s0).mean() < 2  # S and V untouched (up to rounding)


def test_dihedral_gives_eight_distinct_symmetries():
    a = np.arange(12).reshape(3, 4)
    views = [dihedral(a, k) for k in range(8)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
    assert np.array_equal(views[0], a) and np.array_equal(dihedral(a, 8), a)
    assert np.array_equal(views[4], a[:, ::-1])


# --- metrics -------------------------------------------------------------------------


def _one_hot(pred, c, p=1.0):
    probs = np.full((len(pred), c), (1 - p) / (c - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


def test_confusion_and_per_class_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    cm = metrics.confusion_matrix(y, pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    pc = metrics.per_class(cm)
    np.testing.assert_allclose(pc["sensitivity"], [2 / 3, 1 / 2, 1])
    np.testing.assert_allclose(pc["specificity"], [3 / 3, 3 / 4, 4 / 5])
    f1 = [2 * 2 / (4 + 0 + 1), 2 / (2 + 1 + 1), 2 / (2 + 1 + 0)]
    np.testing.assert_allclose(pc["f1"], f1)
    probs = _one_hot(pred, 3, 0.9)
    assert metrics.accuracy(y, probs) == pytest.approx(4 / 6)
    assert metrics.macro_f1(y, probs) == pytest.approx(np.mean(f1))


def test_macro_f1_skips_classes_absent_everywhere():
    y = np.array([0, 1, 0, 1])
    assert metrics.macro_f1(y, _one_hot(y, 4)) == 1.0
    s = metrics.summarize(y, _one_hot(y, 4), ["a", "b", "c", "d"], n_bootstrap=50)
    c = s["per_class"]["c"]
    assert c["support"] == 0 and c["sensitivity"] is None and c["sensitivity_ci"] is None
    assert (c["specificity"], c["specificity_k"], c["specificity_n"]) == (1.0, 4, 4)
    assert c["precision"] is None and c["f1"] is None
    json.dumps(s, allow_nan=False)


def test_ece_zero_when_calibrated_and_positive_when_overconfident():
    y = np.array([0] * 8 + [1] * 2)
    calibrated = np.tile([0.8, 0.2], (10, 1))  # says 0.8, right 8 times in 10
    assert metrics.expected_calibration_error(y, calibrated) == pytest.approx(0, abs=1e-12)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert metrics.expected_calibration_error(y, overconfident) == pytest.approx(0.19)
    rel = metrics.reliability(y, calibrated)
    assert rel["count"].sum() == 10 and rel["count"][11] == 10  # 0.8 lies in (0.733, 0.8]
    assert rel["accuracy"][11] == pytest.approx(0.8)


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 2000):
        y = rng.integers(0, 4, n)
        pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 4)
        probs = _one_hot(pred, 4, 0.7)
        ci = metrics.bootstrap_ci(y, probs, seed=1)
        for key, value in (
            ("macro_f1", metrics.macro_f1),
            ("ece", metrics.expected_calibration_error),
        ):
            lo, hi = ci[key]
            assert lo <= value(y, probs) <= hi
        widths.append(ci["macro_f1"][1] - ci["macro_f1"][0])
        assert ci == metrics.bootstrap_ci(y, probs, seed=1)  # seeded
    assert widths[1] < widths[0] / 3


def test_no_interval_has_zero_width_for_a_perfect_score():
    """Every field right: the bootstrap has no spread, yet no reported interval is 0 wide."""
    y = np.repeat(np.arange(4), 35)[:138]
    s = metrics.summarize(y, _one_hot(y, 4, 1.0), list("abcd"), n_bootstrap=200)
    assert s["correct"] == 138 and s["accuracy"] == 1.0
    assert s["accuracy_ci"][0] == pytest.approx(0.9736, abs=1e-4) and s["accuracy_ci"][1] == 1.0
    assert s["macro_f1_ci"] == s["accuracy_ci"]
    assert s["ece_ci"][1] > s["ece_ci"][0]
    for m in s["per_class"].values():
        assert m["sensitivity_ci"][0] < 1.0 and m["specificity_ci"][0] < 1.0


# --- evaluate and write_report --------------------------------------------------------


@pytest.fixture(scope="module")
def synth_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    paths = write_synth_dataset(root, 3, size=(48, 48))
    return root, [(p, p.parent.name) for p in paths]


def _oracle(items):
    """A predictor that knows each field's label (by its pixels)."""
    from leukedge.edge.imageio import read_field

    truth = {read_field(p).tobytes(): CLASSES.index(label) for p, label in items}

    def predict(fields):
        labels = [truth.get(f.tobytes(), 0) for f in fields]  # shifted fields: unknown -> 0
        return _one_hot(np.array(labels), len(CLASSES), 0.97)

    return Predictor("oracle", CLASSES, predict)


def test_evaluate_and_write_report(synth_items, tmp_path):
    root, items = synth_items
    bad = root / "broken.png"
    bad.write_bytes(b"not an image")
    result = evaluate(_oracle(items), [*items, (bad, "Pro")], batch=5, n_bootstrap=100)
    assert result["n"] == len(items)
    assert result["skipped"] == [{"path": str(bad), "problem": "not a readable image"}]
    assert result["clean"]["accuracy"] == 1.0 and result["clean"]["macro_f1"] == 1.0
    assert result["clean"]["correct"] == 12 and result["clean"]["accuracy_ci"][1] == 1.0
    assert result["clean"]["accuracy_ci"][0] == pytest.approx(0.7354, abs=1e-4)  # 12/12, exact
    assert result["clean"]["ece"] == pytest.approx(0.03)
    assert list(result["shifts"]) == list(SHIFTS)
    for m in result["shifts"].values():  # the oracle does not know shifted fields: all Benign
        assert m["accuracy"] == pytest.approx(0.25)
        assert m["accuracy_drop"] == pytest.approx(0.75)
    assert result["worst_shift"] in SHIFTS
    assert result["shortcut"]["accuracy"] == pytest.approx(0.25)
    assert result["shortcut"]["chance"] == pytest.approx(0.25)

    reference = {
        "name": "mask-only",
        "clean": {"accuracy": 0.9},
        "shifts": {"dim15": {"accuracy": 0.5}},
    }
    out = write_report(result, tmp_path / "report", "oracle", reference)
    for name in ("report.json", "report.md", "confusion.png", "reliability.png", "shifts.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["title"] == "oracle" and saved["reference"] == reference
    y = [CLASSES.index(p["label"]) for p in saved["predictions"]]
    probs = np.array([p["probabilities"] for p in saved["predictions"]])
    assert saved["clean"]["accuracy"] == metrics.accuracy(y, probs)
    assert saved["clean"]["confusion"] == metrics.confusion_matrix(y, probs.argmax(1), 4).tolist()
    md = (out / "report.md").read_text()
    assert "**worst shift**" in md and "| mask-only |" in md and "0.900" in md


def test_evaluate_without_extras_and_with_unknown_labels(synth_items):
    _, items = synth_items
    result = evaluate(_oracle(items), items[:4], shifts=False, shortcut=False)
    assert result["shifts"] == {} and result["worst_shift"] is None and "shortcut" not in result
    with pytest.raises(ValueError, match="not model classes"):
        evaluate(_oracle(items), [(items[0][0], "Malignant")])


# --- leukedge eval ---------------------------------------------------------------------


def test_eval_cli_on_tiny_bundle(tiny_bundle, synth_items, tmp_path):
    from leukedge.cli import app
    from leukedge.edge.imageio import read_field
    from leukedge.edge.model import load_model

    root, items = synth_items
    json_out = tmp_path / "eval.json"
    args = ["eval", "--model", str(tiny_bundle), "--data", str(root), "--json", str(json_out)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads(json_out.read_text())
    assert {"classes", "n", "clean", "shifts", "worst_shift", "shortcut", "predictions"} <= set(
        report
    )
    assert report["n"] == len(items) and list(report["shifts"]) == list(SHIFTS)
    assert (tmp_path / "out" / "report.md").is_file()
    model = load_model(tiny_bundle)
    predicted = {str(p): model.predict(read_field(p)).label for p, _ in items}
    assert {p["path"]: p["predicted"] for p in report["predictions"]} == predicted
    accuracy = np.mean([predicted[str(p)] == label for p, label in items])
    assert report["clean"]["accuracy"] == pytest.approx(accuracy)
    clean = report["clean"]
    assert f"{clean['correct']}/{len(items)} (" in res.output and "hue+8" in res.output


#: Fields right of 12 and the exact (Clopper-Pearson) 95% interval, worked out by hand:
#: 12/12 -> [0.025 ** (1/12), 1]; 3/12 -> the 2.5% and 97.5% beta quantiles.
ALL_12 = {"correct": 12, "accuracy": 1.0, "accuracy_ci": [0.7354, 1.0]}
THREE_12 = {"correct": 3, "accuracy": 0.25, "accuracy_ci": [0.0549, 0.5719]}


def _rounded(figures):
    """Floats to 4 places, through dicts and lists."""
    if isinstance(figures, dict):
        return {k: _rounded(v) for k, v in figures.items()}
    if isinstance(figures, list | tuple):
        return [_rounded(v) for v in figures]
    return round(figures, 4) if isinstance(figures, float) else figures


def test_eval_record_keeps_the_figures_in_the_bundle(tiny_bundle, synth_items, tmp_path):
    """``--record`` stores the headline figures in the manifest, keeps what was there,
    and rewrites the hashes so the bundle still verifies. The tiny model calls every
    synthetic field Benign: 3 of the 12 right under every condition."""
    from leukedge.cli import app
    from leukedge.edge.bundle import read_manifest, write_manifest
    from leukedge.edge.model import load_model

    manifest = read_manifest(tiny_bundle)
    manifest.pop("files")
    write_manifest(tiny_bundle, {**manifest, "evaluation": {"split": "val", "accuracy": 0.5}})
    root, _ = synth_items
    args = ["eval", "--model", str(tiny_bundle), "--data", str(root)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--record"])
    assert res.exit_code == 0, res.output
    recorded = read_manifest(tiny_bundle)["evaluation"]
    assert recorded["split"] == "val" and recorded["accuracy"] == 0.5
    data = _rounded(recorded["data"])
    assert {k: data[k] for k in THREE_12} == THREE_12 and data["n"] == 12
    assert data["split"] == "data" and data["data"] == str(root) and data["macro_f1"] == 0.1
    assert data["shifts"] == {name: THREE_12 for name in SHIFTS}
    assert data["shortcut"] == {**THREE_12, "chance": 0.25}
    load_model(tiny_bundle)  # verifies every SHA-256 against the rewritten manifest


def test_recorded_figures_are_each_conditions_own(tiny_bundle, synth_items):
    """An oracle right on every clean field and blind to shifted ones: the manifest keeps
    12/12 clean and 3/12 under each shift and the shortcut audit, each with its own
    interval (expected figures written out, not recomputed by the code under test)."""
    from leukedge.edge.bundle import read_manifest
    from leukedge.evaluation.evaluate import record_in_bundle

    _, items = synth_items
    result = evaluate(_oracle(items), items, n_bootstrap=100)
    record_in_bundle(tiny_bundle, result, "test", "synthetic (test)", None)
    got = _rounded(read_manifest(tiny_bundle)["evaluation"]["test"])
    assert got == {
        "split": "test",
        "n": 12,
        "interval": "clopper-pearson 95%",
        **ALL_12,
        "macro_f1": 1.0,
        "ece": 0.03,
        "shifts": {name: THREE_12 for name in SHIFTS},
        "worst_shift": "hue+8",
        "shortcut": {**THREE_12, "chance": 0.25},
        "data": "synthetic (test)",
    }


def test_eval_record_refuses_a_training_run_before_loading_it(tmp_path):
    """``--record`` on a run folder is refused up front (the run's model is not even read:
    this one is not a loadable model at all)."""
    from leukedge.cli import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"not a model")
    args = ["eval", "--model", str(run), "--data", str(tmp_path), "--record"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "this is a training run" in res.output and str(run) in res.output
