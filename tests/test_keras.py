"""Keras classifiers: models, training runs, TFLite/ONNX bundles, multi-input edge backends."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.edge.bundle import BundleError, read_manifest, sha256_file
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field

SIZE = 32
TINY = {"alpha": 0.35, "bn_momentum": 0.5}  # a small MobileNetV2 whose BN follows 1 epoch


def _two_input_onnx(path):
    """Inputs "field" and "masked" float32 (N, 4) -> softmax(field @ W + masked @ V)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["field", "W"], ["a"]),
            helper.make_node("MatMul", ["masked", "V"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probs"], axis=1),
        ],
        "two",
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4])
            for name in ("field", "masked")
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "V"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_backend_feeds_every_input(tmp_path):
    pytest.importorskip("onnxruntime")
    from leukedge.edge.backends import open_backend

    backend = open_backend(_two_input_onnx(tmp_path / "two.onnx"))
    assert backend.input_names == ["field", "masked"]
    a, b = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    out = backend.run([a, b])
    assert out.shape == (5, 3)
    assert not np.allclose(out, backend.run([a, np.zeros_like(b)]))  # the second input counts
    with pytest.raises(BundleError, match="2 input"):
        backend.run(a)


def test_input_specs():
    from leukedge.edge.model import input_specs
    from leukedge.training.keras_train import keras_preprocess

    spec = keras_preprocess("mobilenetv2", "field-wb", size=SIZE)
    assert (spec.layout, spec.scale, spec.offset) == ("NHWC", 1 / 127.5, -1.0)
    field, masked = input_specs(spec, ["field", "masked"])
    assert field == spec and masked.input_mode == "mask" and masked.size == SIZE
    with pytest.raises(BundleError, match="unknown model input"):
        input_specs(spec, ["depth"])


def test_build_model(tmp_path):
    pytest.importorskip("tensorflow")
    from keras import layers

    from leukedge.training.keras_models import build_model

    single = build_model("mobilenetv2", 4, SIZE, **TINY)
    assert [t.name for t in single.inputs] == ["field"]
    assert single.output_shape == (None, 4)
    bns = [lay for lay in single.layers[1].layers if isinstance(lay, layers.BatchNormalization)]
    assert bns and all(lay.momentum == 0.5 for lay in bns)
    dual = build_model("mobilenetv2", 3, SIZE, dual=True, alpha=0.35)
    assert [t.name for t in dual.inputs] == ["field", "masked"]
    assert dual.output_shape == (None, 3)
    backbones = [lay for lay in dual.layers if isinstance(lay, type(single.layers[1]))]
    assert len(backbones) == 1  # one backbone shared by both inputs

    weights = tmp_path / "backbone.weights.h5"
    single.layers[1].save_weights(weights)
    frozen = build_model("mobilenetv2", 4, SIZE, weights=weights, freeze_backbone=True, alpha=0.35)
    assert not frozen.layers[1].trainable
    np.testing.assert_array_equal(
        frozen.layers[1].get_weights()[0], single.layers[1].get_weights()[0]
    )
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", 4, SIZE)
    with pytest.raises(ValueError, match="alpha"):
        build_model("efficientnetb0", 4, SIZE, alpha=0.5)
    with pytest.raises(ValueError, match="local weights"):
        build_model("mobilenetv2", 4, SIZE, freeze_backbone=True)
    with pytest.raises(FileNotFoundError):
        build_model("mobilenetv2", 4, SIZE, weights=tmp_path / "missing.h5")


def test_dual_model_infers_with_the_statistics_it_trains_with():
    """BatchNorm of the shared backbone normalises the field and the masked field with
    the same statistics in training and inference, and each field meets its own mask."""
    import keras
    from keras.layers import Concatenate

    from leukedge.training.keras_models import build_model

    rng = np.random.default_rng(0)
    field = rng.uniform(0.5, 1.0, (6, SIZE, SIZE, 3)).astype(np.float32)
    masked = np.where(rng.uniform(size=field.shape) < 0.9, 0.0, field).astype(np.float32)
    x = {"field": field, "masked": masked}
    dual = build_model("mobilenetv2", 3, SIZE, dual=True, alpha=0.35, bn_momentum=0.0)
    (joined,) = [lay for lay in dual.layers if isinstance(lay, Concatenate) and lay.axis == -1]
    features = keras.Model(dual.inputs, joined.output)  # (N, 2 * backbone channels)
    trained = np.asarray(features(x, training=True))  # momentum 0: moving stats := this batch
    np.testing.assert_allclose(np.asarray(features(x, training=False)), trained, atol=1e-3)
    one_by_one = [
        dual.predict({k: v[i : i + 1] for k, v in x.items()}, verbose=0) for i in range(6)
    ]
    np.testing.assert_allclose(dual.predict(x, verbose=0), np.concatenate(one_by_one), atol=1e-5)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """4 x 8 synthetic 32x32 fields split 60/40 train/val."""
    from leukedge.data.layouts import find_dataset
    from leukedge.data.split import make_split
    from leukedge.edge.synth import write_synth_dataset

    work = tmp_path_factory.mktemp("keras")
    write_synth_dataset(work / "data", 8, size=(SIZE, SIZE))
    make_split(find_dataset(work / "data"), work, ratios=(0.6, 0.4, 0.0))
    return work


def test_training_batches_do_not_depend_on_the_thread_count(work):
    """Each sample's jitter and flip are seeded by (seed, epoch, batch, row): the thread
    pool that makes a batch changes nothing, and every epoch reshuffles and redraws."""
    from concurrent.futures import ThreadPoolExecutor

    from leukedge.data.split import read_split
    from leukedge.edge.model import input_specs
    from leukedge.training.jitter import Jitter
    from leukedge.training.keras_models import SINGLE_INPUTS
    from leukedge.training.keras_train import _Fields, _TrainBatches, keras_preprocess

    rows = read_split(work / "split.csv", "train")
    spec = keras_preprocess("mobilenetv2", "field-wb", size=SIZE)
    fields = _Fields(rows, spec, with_masks=False)
    specs = input_specs(spec, SINGLE_INPUTS)
    labels = np.arange(len(rows))
    steps = -(-len(rows) // 4)

    def batches(threads: int, epoch: int = 0, cfg=Jitter(), flips=True) -> list:
        with ThreadPoolExecutor(threads) as pool:
            make = _TrainBatches(rows, fields, specs, SINGLE_INPUTS, labels, 4, 0, cfg, flips)
            stream = make(epoch, pool)
            return [next(stream) for _ in range(steps + 1)]

    one, four = batches(1), batches(4)
    for (xa, ya), (xb, yb) in zip(one, four):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert sorted(np.concatenate([y for _, y in one[:steps]])) == list(labels)
    resumed = batches(2, epoch=1)[0]  # a resumed run starts its epoch where it left off
    np.testing.assert_array_equal(resumed[0], one[steps][0])
    assert not np.array_equal(one[steps][0], one[0][0])
    # With jitter and flips off, a batch is exactly what the station computes.
    from leukedge.edge.preprocess import prepare

    x, y = batches(2, cfg=None, flips=False)[0]
    np.testing.assert_array_equal(x, np.stack([prepare(fields.get(rows[i])[0], spec) for i in y]))


@pytest.fixture(scope="module")
def trained(work):
    """A 1-epoch tiny MobileNetV2 on the field-wb view, and its four exported bundles."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from leukedge.export.common import ExportSettings
    from leukedge.export.keras import export_keras_bundles
    from leukedge.training.keras_train import keras_preprocess, train_keras

    spec = keras_preprocess("mobilenetv2", "field-wb", size=SIZE)
    split = work / "split.csv"
    best = train_keras(split, work / "run", spec=spec, epochs=1, batch=8, verbose=0, **TINY)
    bundles = export_keras_bundles(best, work / "export", spec, ExportSettings(split, calib_n=16))
    return {"best": best, "spec": spec, "bundles": bundles, "split": split}


def _val(work):
    from leukedge.data.split import read_split

    rows = read_split(work / "split.csv", "val")
    return rows, [read_field(r.path) for r in rows]


def test_best_epoch_breaks_accuracy_ties_by_validation_loss():
    from leukedge.training.keras_train import epoch_rank

    # history.csv rows (strings): epochs 2 and 3 tie on accuracy, 3 has the lower loss
    history = [
        {"val_accuracy": "0.9892", "val_loss": "0.010"},
        {"val_accuracy": "0.9964", "val_loss": "0.028"},
        {"val_accuracy": "0.9964", "val_loss": "0.011"},
        {"val_accuracy": "0.9928", "val_loss": "0.009"},
    ]
    assert max(range(len(history)), key=lambda i: epoch_rank(history[i])) == 2
    # a Keras logs dict (floats) ranks on the same scale as the rows it is compared with
    assert epoch_rank({"val_accuracy": 0.9964, "val_loss": 0.02}) > epoch_rank(history[1])


@pytest.mark.slow
def test_run_record_matches_the_best_model(trained, work):
    import keras

    from leukedge.edge.preprocess import prepare
    from leukedge.training.runs import find_run_config

    run = work / "run"
    for name in ("best.keras", "last.keras", "history.csv"):
        assert (run / name).is_file()
    record = find_run_config(trained["best"])
    assert record["family"] == "keras" and record["arch"] == "mobilenetv2"
    assert record["classes"] == list(CLASSES) and record["inputs"] == ["field"]
    assert record["preprocess"] == trained["spec"].to_dict()
    assert record["data_manifest_sha256"] == sha256_file(work / "split.csv")
    result = record["result"]
    assert result["epochs_done"] == result["best_epoch"] == 1
    rows, fields = _val(work)
    assert result["val_n"] == len(rows)
    model = keras.models.load_model(trained["best"])
    x = np.stack([prepare(f, trained["spec"]) for f in fields])
    probs = model.predict(x, verbose=0)
    y = np.array([CLASSES.index(r.label) for r in rows])
    assert result["best_val_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y), abs=1e-6)


@pytest.mark.slow
def test_bundles_manifests_and_metadata(trained, work):
    from leukedge.edge.model import load_model
    from leukedge.export.common import onnx_metadata
    from leukedge.export.tflite import tflite_metadata

    bundles = trained["bundles"]
    assert set(bundles) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"}
    for key, bundle in bundles.items():
        fmt, precision = key.split("-")
        model = load_model(bundle)  # verifies every SHA-256
        assert model.classes == tuple(CLASSES)
        m = model.manifest
        assert m["name"] == f"run-keras-{key}" and m["inputs"] == ["field"]
        assert m["model"]["format"] == fmt and m["model"]["precision"] == precision
        assert m["model"]["output"] == "probabilities"
        inp = m["model"]["input"]
        assert inp["shape"] == [-1, SIZE, SIZE, 3] and inp["layout"] == "NHWC"
        int_input = key == "tflite-int8"
        assert inp["dtype"] == ("int8" if int_input else "float32")
        assert ("quantization" in inp) == int_input
        assert m["preprocess"] == trained["spec"].to_dict()
        assert m["training"]["framework"] == "keras" and m["training"]["run"]["family"] == "keras"
        assert m["training"]["weights_sha256"] == sha256_file(trained["best"])
        assert m["data_manifest_sha256"] == sha256_file(work / "split.csv")
        assert m["ood"]["n"] == 16
        assert m["evaluation"]["split"] == "val" and 0 <= m["evaluation"]["accuracy"] <= 1
        path = bundle / m["model"]["file"]
        if fmt == "onnx":
            names = json.loads(onnx_metadata(path)["names"])
        else:
            names = json.loads(tflite_metadata(path)["leukedge"])["names"]
        assert names == list(CLASSES)
    for fmt in ("tflite", "onnx"):
        fp32 = read_manifest(bundles[f"{fmt}-fp32"])["evaluation"]
        assert fp32["max_abs_prob_diff_vs_keras"] < 1e-4
        report = json.loads((work / "export" / f"fidelity-{fmt}.json").read_text())
        assert report == read_manifest(bundles[f"{fmt}-int8"])["evaluation"]["fidelity"]
        assert "top-1 agreement" in (work / "export" / f"fidelity-{fmt}.md").read_text()
        sizes = [(bundles[f"{fmt}-{p}"] / f"model.{fmt}").stat().st_size for p in ("fp32", "int8")]
        assert report["size_ratio"] == pytest.approx(sizes[0] / sizes[1])
        # measured on this 0.35-wide MobileNetV2: TFLite 3.00x, ONNX 3.2x (the fp32 head
        # and per-tensor scales weigh more on a tiny model than on the full one)
        assert report["size_ratio"] > 2.9
    assert read_manifest(bundles["tflite-int8"])["model"]["quantization"]["calibration_n"] == 16


@pytest.mark.slow
def test_loader_matches_keras(trained, work):
    import keras

    from leukedge.edge.model import load_model
    from leukedge.edge.preprocess import prepare

    model = keras.models.load_model(trained["best"])
    _, fields = _val(work)
    expected = model.predict(np.stack([prepare(f, trained["spec"]) for f in fields]), verbose=0)
    for key, atol in (("tflite-fp32", 1e-4), ("onnx-fp32", 1e-4), ("tflite-int8", 0.05)):
        loaded = load_model(trained["bundles"][key])
        got = np.array([list(loaded.predict(f).probabilities.values()) for f in fields])
        np.testing.assert_allclose(got, expected, atol=atol, err_msg=key)


@pytest.mark.slow
def test_resume_and_cli(trained, work, tmp_path):
    """`leukedge train keras --resume` on a finished run trains nothing and keeps its record;
    `leukedge export` takes a Keras run folder."""
    from test_train_cli import check_report

    from leukedge.cli import app
    from leukedge.edge.model import load_model
    from leukedge.training.runs import find_run_config

    run = shutil.copytree(work / "run", tmp_path / "run")
    runner = CliRunner()
    args = ["train", "keras", "--split-csv", str(trained["split"]), "--out", str(run)]
    args += ["--resume", "--epochs", "1", "--imgsz", str(SIZE), "--alpha", "0.35"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert find_run_config(run)["result"]["epochs_done"] == 1
    assert sha256_file(run / "best.keras") == sha256_file(trained["best"])

    res = runner.invoke(app, ["export", str(run), "--to", "onnx", "--no-int8"])
    assert res.exit_code == 0, res.output
    assert read_manifest(run / "export" / "keras-onnx-fp32")["classes"] == list(CLASSES)
    assert not (run / "export" / "keras-onnx-int8").exists()
    # The report against another path than the Keras predictor that wrote it: the
    # exported fp32 ONNX file, run by the station's loader (its raw probabilities).
    model = load_model(run / "export" / "keras-onnx-fp32")
    check_report(
        run / "report-val",
        lambda fields: model.outputs(model.prepare_batch(fields))["probabilities"],
    )

    args = ["train", "keras", "--split-csv", str(trained["split"]), "--out", str(tmp_path / "x")]
    res = runner.invoke(app, [*args, "--arch", "x"])
    assert res.exit_code == 2 and "unknown architecture" in res.output


@pytest.mark.slow
def test_fine_tuning_starts_from_the_trained_model(trained, work, tmp_path):
    """``init`` copies a trained run's weights (at learning rate 0 nothing but the
    BatchNorm statistics moves), also to adapt it to another white point, and refuses a
    model trained for another input."""
    from dataclasses import replace

    import keras

    from leukedge.training.keras_train import keras_preprocess, train_keras
    from leukedge.training.runs import find_run_config

    split, spec = trained["split"], trained["spec"]
    moved = replace(spec, white_point="local-max")
    best = train_keras(
        split, tmp_path / "ft", spec=moved, epochs=1, batch=8, lr=0.0, init=trained["best"],
        verbose=0, **TINY,
    )  # fmt: skip
    record = find_run_config(best)
    assert record["init"] == str(trained["best"])
    assert record["preprocess"]["white_point"] == "local-max"
    ours, theirs = (keras.models.load_model(p) for p in (best, trained["best"]))
    learned = [(a, b) for a, b in zip(ours.weights, theirs.weights) if "moving" not in a.path]
    assert len(learned) > 100
    for a, b in learned:
        np.testing.assert_array_equal(*map(keras.ops.convert_to_numpy, (a, b)), err_msg=a.path)
    other = keras_preprocess("mobilenetv2", "field", size=SIZE)
    with pytest.raises(ValueError, match=r"best\.keras: trained with preprocess="):
        train_keras(split, tmp_path / "x", spec=other, epochs=1, init=trained["best"], **TINY)
    assert not (tmp_path / "x").exists()  # refused before any run record is written
    with pytest.raises(ValueError, match="not both"):
        train_keras(split, tmp_path / "y", init=trained["best"], weights=trained["best"])


@pytest.mark.slow
def test_dual_model_trains_exports_and_runs_at_the_edge(work):
    pytest.importorskip("tensorflow")
    import keras

    from leukedge.edge.model import input_specs, load_model
    from leukedge.edge.preprocess import prepare
    from leukedge.edge.segment import segment
    from leukedge.export.common import ExportSettings
    from leukedge.export.keras import export_keras_bundles
    from leukedge.training.keras_train import keras_preprocess, train_keras

    spec = keras_preprocess("mobilenetv2", "field", size=SIZE)
    split = work / "split.csv"
    best = train_keras(
        split, work / "dual", spec=spec, dual=True, epochs=1, batch=8, verbose=0, **TINY
    )
    with pytest.raises(ValueError, match="multi-input"):
        export_keras_bundles(best, work / "dual-export", spec, ExportSettings(split))
    settings = ExportSettings(split, calib_n=16)
    bundles = export_keras_bundles(best, work / "dual-export", spec, settings, to=["tflite"])
    model = keras.models.load_model(best)
    _, fields = _val(work)
    masks = [segment(f, mode=spec.segmentation).mask for f in fields]
    x = [
        np.stack([prepare(f, s, m) for f, m in zip(fields, masks)])
        for s in input_specs(spec, ["field", "masked"])
    ]
    expected = model.predict(x, verbose=0)
    for key, atol in (("tflite-fp32", 1e-4), ("tflite-int8", 0.05)):
        loaded = load_model(bundles[key])
        assert loaded.manifest["inputs"] == ["field", "masked"]
        assert [e["name"] for e in loaded.manifest["model"]["input"]] == [
            "serving_default_field:0",
            "serving_default_masked:0",
        ]
        got = np.array(
            [list(p.probabilities.values()) for p in loaded.predict_batch(fields, masks)]
        )
        np.testing.assert_allclose(got, expected, atol=atol, err_msg=key)
