"""Feature output, feature-space out-of-distribution score and temperature calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_tiny_bundle

from leukedge.edge.bundle import BundleError, read_manifest, write_manifest
from leukedge.edge.calibration import (
    Calibration,
    confident_threshold,
    fit_temperature,
    scale_probabilities,
)
from leukedge.edge.features import FeatureStats, decode_array, encode_array, fit_feature_stats


def _inputs(n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).random((n, 3, size, size), dtype=np.float32)


def test_onnx_feature_output_keeps_probabilities(tmp_path):
    from leukedge.edge.backends import open_backend
    from leukedge.export.features import FEATURES, add_feature_output, model_outputs

    src = write_tiny_bundle(tmp_path / "b") / "model.onnx"
    dst = add_feature_output(src, tmp_path / "with.onnx")
    before, after = open_backend(src), open_backend(dst)
    assert after.output_names == [*before.output_names, FEATURES]
    x = _inputs(3)
    outs = after.outputs(x)
    assert np.array_equal(outs[after.output_names[0]], before.run(x))
    np.testing.assert_allclose(outs[FEATURES], x.mean(axis=(2, 3)), rtol=1e-5)  # the GAP
    assert model_outputs(dst) == {"probabilities": "output0", "features": FEATURES}
    assert model_outputs(src) == {"probabilities": "output0"}
    add_feature_output(dst)  # a second time changes nothing
    assert open_backend(dst).output_names == after.output_names


def test_qdq_feature_output_keeps_probabilities(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    from leukedge.edge.backends import open_backend
    from leukedge.export.features import FEATURES, add_feature_output
    from leukedge.export.quantize_onnx import quantize_onnx

    fp32 = write_tiny_bundle(tmp_path / "b") / "model.onnx"
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", _inputs(16))
    dst = add_feature_output(int8, tmp_path / "with.onnx")
    before, after = open_backend(int8), open_backend(dst)
    x = _inputs(4)
    outs = after.outputs(x)
    assert np.array_equal(outs[after.output_names[0]], before.run(x))
    np.testing.assert_allclose(outs[FEATURES], x.mean(axis=(2, 3)), atol=0.02)


def _clusters(rng, n_per: int, means: np.ndarray, mix: np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.repeat(np.arange(len(means)), n_per)
    z = rng.normal(size=(len(y), mix.shape[0])) @ mix
    return (means[y] + z).astype(np.float32), y


def test_mahalanobis_flags_a_shifted_cluster_and_passes_the_training_one():
    rng = np.random.default_rng(0)
    dim, classes = 48, 4
    means = rng.normal(0, 3, (classes, dim))
    mix = rng.normal(size=(dim, dim)) * np.linspace(0.4, 0.01, dim)[:, None]  # correlated
    train, y = _clusters(rng, 400, means, mix)
    val, _ = _clusters(rng, 200, means, mix)
    test, _ = _clusters(rng, 200, means, mix)
    stats = fit_feature_stats(train, y, classes, k=12)
    stats = stats.with_threshold(stats.distances(val), 99.5)
    assert stats.flag(test)[0].mean() <= 0.02
    shifted, _ = _clusters(rng, 100, means + rng.normal(0, 3, dim), mix)
    assert stats.flag(shifted)[0].mean() >= 0.95
    # Features are judged by their direction: a field's overall feature strength is not news.
    np.testing.assert_allclose(stats.distances(3 * test), stats.distances(test), rtol=1e-4)


def test_held_out_distances_score_each_training_field_without_its_fold():
    from leukedge.export.trust import SplitOutputs, held_out_distances

    rng = np.random.default_rng(1)
    dim, classes = 24, 2
    means = rng.normal(0, 3, (classes, dim))
    mix = rng.normal(size=(dim, dim)) * np.linspace(0.4, 0.01, dim)[:, None]
    f, y = _clusters(rng, 100, means, mix)
    f[7] = means[y[7]] + rng.normal(0, 1.5, dim)  # one odd field in the training set ...
    f[8], y[8] = f[7], y[7]  # ... with a copy, which must be held out with it
    groups = np.arange(len(y))
    groups[8] = groups[7]
    train = SplitOutputs(np.zeros((len(y), classes), np.float32), f, y)
    held = held_out_distances(train, groups, classes, axes=6)
    in_sample = fit_feature_stats(f, y, classes, k=6).distances(f)
    leaked = held_out_distances(train, np.arange(len(y)), classes, axes=6)  # copies apart
    # Fitted with it, the odd field lies closer than held out; its copy in the fit hides it.
    assert held[7] > 1.25 * in_sample[7] and held[8] == pytest.approx(held[7], rel=1e-5)
    assert held[7] > 1.1 * leaked[7]
    assert held[7] >= np.percentile(held, 99)
    # Ordinary fields move little.
    assert np.median(held / in_sample) < 1.2


def test_feature_stats_round_trip_through_json():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 16)).astype(np.float32)
    stats = fit_feature_stats(f, np.arange(200) % 2, 2, k=4).with_threshold(np.ones(5), 99.5)
    back = FeatureStats.from_manifest(json.loads(json.dumps(stats.to_dict())), "x.json")
    assert np.array_equal(back.distances(f), stats.distances(f))
    assert back.threshold == stats.threshold == 1.0
    a = rng.normal(size=(3, 5)).astype(np.float32)
    assert np.array_equal(decode_array(encode_array(a)), a)
    broken = {**stats.to_dict(), "variances": [1.0]}
    with pytest.raises(BundleError, match="x.json"):
        FeatureStats.from_manifest(broken, "x.json")


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, (20000, 4))
    true = scale_probabilities(np.exp(logits), 1.0)
    labels = (rng.random(len(true))[:, None] > np.cumsum(true, axis=1)).sum(axis=1)
    overconfident = scale_probabilities(true, 1 / 2.5)  # a model 2.5x too sharp
    assert fit_temperature(overconfident, labels) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(true, labels) == pytest.approx(1.0, rel=0.05)


def test_confident_threshold_reaches_the_target():
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1, 0])
    assert confident_threshold(probs, labels, 1.0) == pytest.approx(0.9)
    assert confident_threshold(probs, labels, 0.8) == pytest.approx(0.6)
    assert confident_threshold(probs[3:4], labels[3:4], 0.9) == 1.0


def _trusted_bundle(tmp_path, features: bool = True):
    from leukedge.export.features import add_feature_output, model_outputs

    folder = write_tiny_bundle(tmp_path / "b")
    manifest = read_manifest(folder)
    trust = {"calibration": Calibration(2.0, 0.4, 0.995).to_dict()}
    if features:
        add_feature_output(folder / "model.onnx")
        manifest["model"]["outputs"] = model_outputs(folder / "model.onnx")
        rng = np.random.default_rng(0)
        f = rng.random((60, 3)).astype(np.float32)
        stats = fit_feature_stats(f, np.arange(60) % 4, 4, k=2).with_threshold(np.ones(3), 99.5)
        trust["features"] = stats.to_dict()
    write_manifest(folder, {**manifest, "trust": trust})
    return folder


def test_model_applies_trust_figures(tmp_path):
    from leukedge.edge.model import load_model
    from leukedge.edge.synth import synth_field

    plain = load_model(write_tiny_bundle(tmp_path / "plain"), self_test=False)
    model = load_model(_trusted_bundle(tmp_path), self_test=False)
    assert model.notes == () and model.uncertain_threshold == 0.4
    field, _ = synth_field("Pre", seed=3)
    pred, raw = model.predict(field), plain.predict(field)
    assert pred.label == raw.label and pred.confidence < raw.confidence  # T = 2 softens
    assert isinstance(pred.out_of_distribution, bool) and pred.ood_score > 0
    assert set(model.outputs(_inputs(2))) == {"probabilities", "features"}
    assert raw.ood_score is None and not raw.out_of_distribution
    assert len(plain.notes) == 2 and plain.uncertain_threshold == 0.3


def test_feature_statistics_need_the_feature_output(tmp_path):
    from leukedge.edge.model import load_model

    folder = _trusted_bundle(tmp_path)
    manifest = read_manifest(folder)
    del manifest["model"]["outputs"]
    write_manifest(folder, manifest)
    with pytest.raises(BundleError, match="feature output"):
        load_model(folder, self_test=False)
    manifest["model"]["outputs"] = {"features": "nope"}
    write_manifest(folder, manifest)
    with pytest.raises(BundleError, match="nope"):
        load_model(folder, self_test=False)


def _synthetic_split(tmp_path, n: int = 48):
    """A split.csv of synthetic fields on disk: two thirds train, the rest val."""
    import cv2

    from leukedge.data.split import Row, write_split
    from leukedge.edge.classes import CLASSES
    from leukedge.edge.synth import synth_field

    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        rgb, _ = synth_field(label, size=(64, 64), seed=i)
        path = tmp_path / "data" / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
        rows.append(Row(str(path), label, "train" if i < 2 * n // 3 else "val", i))
    write_split(rows, tmp_path / "split.csv")
    return tmp_path / "split.csv"


def test_add_trust_writes_figures_the_model_uses(tmp_path):
    import shutil

    from leukedge.edge.model import load_model
    from leukedge.errors import DataError
    from leukedge.export.trust import add_trust

    split = _synthetic_split(tmp_path)
    folder = write_tiny_bundle(tmp_path / "b")
    before = load_model(folder, self_test=False).predict(np.full((32, 32, 3), 120, np.uint8))
    report = add_trust(folder, split)
    assert report["val_n"] == 16 and report["feature_dim"] == 3
    assert 0 <= report["train_out_of_fold_flagged"] <= 0.1
    model = load_model(folder, self_test=False)  # SHA-256s re-stamped
    assert model.notes == () and model.feature_stats.n == 32
    lower = model.manifest["trust"]["scale"]["lower"]  # 64 px fields: read unshrunk
    assert (
        lower["n"] == 32
        and lower["step"] == 1
        and 0 <= report["lower_magnification"]["val_flagged"] <= 1
    )
    after = model.predict(np.full((32, 32, 3), 120, np.uint8))
    assert after.label == before.label and after.ood_score is not None
    shutil.move(tmp_path / "data", tmp_path / "moved")
    with pytest.raises(DataError, match="--data"):
        add_trust(folder, split)
    assert add_trust(folder, split, tmp_path / "moved")["train_n"] == 32
