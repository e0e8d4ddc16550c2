"""YOLO -> fp32 and INT8 ONNX bundles: quantization, fidelity, manifests, loader parity, CLI."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.edge.bundle import BundleError, read_manifest, sha256_file
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.export.fidelity import compare, fidelity, shortfalls, to_markdown
from leukedge.offline import ensure_offline

SIZE = 32


def test_compare_and_markdown():
    ref = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]], np.float32)
    cand = np.array([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]], np.float32)
    out = compare(ref, cand)
    assert out["n"] == 3
    assert out["top1_agreement"] == pytest.approx(2 / 3)
    assert out["max_abs_prob_diff"] == pytest.approx(0.3)
    assert out["mean_abs_prob_diff"] == pytest.approx((0.1 * 2 + 0.3 * 2) / 6)
    report = fidelity(lambda x: ref, lambda x: cand, np.zeros((3, 1)), labels=np.array([0, 1, 1]))
    assert report["reference"] == {"accuracy": pytest.approx(2 / 3)}
    assert report["candidate"] == {"accuracy": pytest.approx(1 / 3)}
    assert "size_ratio" not in report
    assert "top-1 agreement: 0.6667" in to_markdown(report)
    assert shortfalls(report) == [
        "top-1 agreement 0.6667 < 0.995",
        "accuracy drop 0.3333 > 0.005",
    ]
    assert "**Fails the fidelity bar" in to_markdown(report)
    same = fidelity(lambda x: ref, lambda x: ref, np.zeros((3, 1)), labels=np.array([0, 1, 1]))
    assert shortfalls(same) == [] and "Clears the fidelity bar" in to_markdown(same)
    with pytest.raises(ValueError, match="shapes differ"):
        compare(ref, cand[:2])


def _tiny_onnx(path):
    """Conv -> ReLU -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, float32 (1, 3, 8, 8) in."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 8)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "b"], ["z"], name="fc", transB=1),
        helper.make_node("Softmax", ["z"], ["output0"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"names": json.dumps(list(CLASSES))})
    onnx.save(model, str(path))
    return path


def test_quantize_keeps_metadata_and_float_softmax(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from leukedge.export.quantize_onnx import quantize_onnx

    fp32 = _tiny_onnx(tmp_path / "fp32.onnx")
    calib = np.random.default_rng(1).random((16, 3, 8, 8), dtype=np.float32)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", iter(calib[:, None]))  # (1, ...) batches
    model = onnx.load(str(int8))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["names"]) == list(CLASSES)
    assert json.loads(meta["leukedge.quantization"])["activation"] == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    producer = next(n for n in model.graph.node if "output0" in n.output)
    assert producer.op_type == "Softmax"  # probabilities stay float
    report = fidelity(fp32, int8, calib)
    assert report["max_abs_prob_diff"] < 0.05
    with pytest.raises(ValueError, match="activation"):
        quantize_onnx(fp32, tmp_path / "x.onnx", calib, activation="int4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch yolo11n-cls on 8 synthetic 32x32 fields per class, and its exported bundles."""
    pytest.importorskip("onnxruntime")
    from leukedge.data.layouts import find_dataset
    from leukedge.data.split import make_split
    from leukedge.edge.preprocess import Preprocess
    from leukedge.edge.synth import write_synth_dataset
    from leukedge.export.common import ExportSettings
    from leukedge.export.yolo import export_yolo_bundles
    from leukedge.training.yolo import build_imagefolder, train_yolo

    work = tmp_path_factory.mktemp("yolo")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "HF_HUB_OFFLINE", "ULTRALYTICS_API_KEY"):
            if key in os.environ:  # ensure_offline changes them: restore after the module
                mp.setenv(key, os.environ[key])
            else:
                mp.delenv(key, raising=False)
        mp.setenv("YOLO_CONFIG_DIR", str(work / "cfg"))
        ensure_offline()  # before Ultralytics is first imported
        pytest.importorskip("ultralytics")
        write_synth_dataset(work / "data", 8, size=(SIZE, SIZE))
        make_split(find_dataset(work / "data"), work, ratios=(0.6, 0.4, 0.0))
        build_imagefolder(work / "split.csv", work / "folder")
        pt = train_yolo(work / "folder", work / "run", epochs=1, imgsz=SIZE, batch=8, plots=False)
        spec = Preprocess(input_mode="field", size=SIZE)
        settings = ExportSettings(work / "split.csv", calib_n=16)
        bundles = export_yolo_bundles(pt, work / "export", spec, settings)
        yield {"work": work, "pt": pt, "spec": spec, "bundles": bundles}


@pytest.mark.slow
def test_best_checkpoint_is_ranked_by_accuracy_then_validation_loss(trained):
    import torch

    from leukedge.training.runs import epoch_score

    ckpt = torch.load(trained["pt"], map_location="cpu", weights_only=False)
    epoch = ckpt["train_metrics"]  # the validation figures of the epoch saved as best.pt
    # Ultralytics' own fitness would be (top1 + top5) / 2
    expected = epoch_score(epoch["metrics/accuracy_top1"], epoch["val/loss"])
    assert epoch["fitness"] == pytest.approx(expected, rel=0, abs=1e-12)
    assert 0 < epoch["fitness"] - epoch["metrics/accuracy_top1"] < 1e-6


@pytest.mark.slow
def test_bundles_load_with_manifest_and_metadata(trained):
    from leukedge.edge.model import load_model

    work, spec = trained["work"], trained["spec"]
    assert set(trained["bundles"]) == {"fp32", "int8"}
    for precision, bundle in trained["bundles"].items():
        model = load_model(bundle)  # verifies every SHA-256
        assert model.classes == tuple(CLASSES)
        assert json.loads(model.backend.metadata["names"]) == list(CLASSES)
        m = model.manifest
        assert m["name"] == f"run-yolo-onnx-{precision}"
        assert m["model"]["format"] == "onnx" and m["model"]["precision"] == precision
        assert m["model"]["input"] == {
            "name": "images",
            "shape": [1, 3, SIZE, SIZE],
            "layout": "NCHW",
            "dtype": "float32",
        }
        assert m["model"]["output"] == "probabilities"
        assert m["preprocess"] == spec.to_dict()
        assert m["uncertain_threshold"] == 0.6
        assert m["training"]["args"]["imgsz"] == SIZE
        assert m["data_manifest_sha256"] == sha256_file(work / "split.csv")
        assert m["evaluation"]["split"] == "val" and 0 <= m["evaluation"]["accuracy"] <= 1
        assert m["ood"]["n"] == 16 and len(m["ood"]["lab_mean"]) == 3
        assert all(s > 0 for s in m["ood"]["lab_std"])
    quant = read_manifest(trained["bundles"]["int8"])["model"]["quantization"]
    assert quant["per_channel"] is False and quant["activation"] == "int8"
    assert quant["weight"] == "int8" and quant["calibration_n"] == 16


@pytest.mark.slow
def test_int8_is_smaller_and_fidelity_report_matches(trained):
    from leukedge.data.split import read_split
    from leukedge.edge.model import load_model

    fp32_dir, int8_dir = trained["bundles"]["fp32"], trained["bundles"]["int8"]
    fp32_bytes = (fp32_dir / "model.onnx").stat().st_size
    int8_bytes = (int8_dir / "model.onnx").stat().st_size
    assert fp32_bytes >= 3 * int8_bytes  # measured ~3.6x on yolo11n-cls (4 classes)

    export = fp32_dir.parent
    report = json.loads((export / "fidelity.json").read_text())
    assert report == read_manifest(int8_dir)["evaluation"]["fidelity"]
    assert "top-1 agreement" in (export / "fidelity.md").read_text()
    assert report["size_ratio"] == pytest.approx(fp32_bytes / int8_bytes)

    fields = [read_field(r.path) for r in read_split(trained["work"] / "split.csv", "val")]
    probs = {
        k: np.array([list(p.probabilities.values()) for p in map(load_model(d).predict, fields)])
        for k, d in trained["bundles"].items()
    }
    agreement = np.mean(probs["fp32"].argmax(1) == probs["int8"].argmax(1))
    assert report["n"] == len(fields)
    assert 0 <= report["top1_agreement"] <= 1
    assert report["top1_agreement"] == pytest.approx(agreement)
    diff = np.abs(probs["fp32"] - probs["int8"])
    assert report["max_abs_prob_diff"] == pytest.approx(diff.max(), abs=1e-6)
    assert report["mean_abs_prob_diff"] == pytest.approx(diff.mean(), abs=1e-6)


@pytest.mark.slow
def test_loader_matches_ultralytics_predict(trained):
    from ultralytics import YOLO

    from leukedge.data.split import read_split
    from leukedge.edge.model import load_model

    row = read_split(trained["work"] / "split.csv", "val")[0]
    field = read_field(row.path)  # RGB; Ultralytics takes BGR arrays
    result = YOLO(str(trained["pt"])).predict(
        np.ascontiguousarray(field[..., ::-1]), imgsz=SIZE, device="cpu", verbose=False
    )[0]
    expected = result.probs.data.cpu().numpy()
    for precision, atol in (("fp32", 1e-4), ("int8", 0.02)):
        got = load_model(trained["bundles"][precision]).predict(field).probabilities
        np.testing.assert_allclose(list(got.values()), expected, atol=atol, err_msg=precision)


@pytest.mark.slow
def test_tampered_model_is_refused(trained, tmp_path):
    from leukedge.edge.model import load_model

    bundle = shutil.copytree(trained["bundles"]["int8"], tmp_path / "b")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx"):
        load_model(bundle)


@pytest.mark.slow
def test_cli_export(trained, tmp_path):
    from leukedge.cli import app
    from leukedge.training.runs import write_run_config

    runner = CliRunner()
    run = trained["work"] / "run"  # split.csv sits next to it
    out = tmp_path / "cli"
    res = runner.invoke(
        app, ["export", str(run), "--to", "onnx", "--out", str(out), "--calib", "8"]
    )
    assert res.exit_code == 0, res.output
    for name in ("yolo-onnx-fp32", "yolo-onnx-int8"):
        assert read_manifest(out / name)["classes"] == list(CLASSES)
    assert read_manifest(out / "yolo-onnx-int8")["preprocess"]["size"] == SIZE  # from args.yaml
    assert (out / "fidelity.json").is_file()

    res = runner.invoke(app, ["export", str(run), "--to", "onnx,tflite", "--out", str(out)])
    assert res.exit_code == 2 and "not implemented" in res.output

    for missing, problem in ((tmp_path / "gone.pt", "no such file"), (tmp_path, "neither")):
        res = runner.invoke(app, ["export", str(missing)])
        assert res.exit_code == 2 and problem in res.output and missing.name in res.output

    lone = shutil.copy(trained["pt"], tmp_path / "best.pt")
    res = runner.invoke(app, ["export", str(lone), "--out", str(out)])
    assert res.exit_code == 2 and "--split-csv" in res.output

    # A `leukedge train` folder: run record (split, preprocessing) above the Ultralytics run.
    record = tmp_path / "record"
    shutil.copytree(run, record / "train")
    spec = {**trained["spec"].to_dict(), "input_mode": "field-wb"}
    write_run_config(record, {"preprocess": spec}, trained["work"] / "split.csv")
    shutil.copytree(out, record / "export")  # stale INT8 outputs, to be removed
    res = runner.invoke(app, ["export", str(record), "--no-int8"])
    assert res.exit_code == 0, res.output
    manifest = read_manifest(record / "export" / "yolo-onnx-fp32")
    assert manifest["preprocess"] == spec and manifest["model"]["quantization"] is None
    assert manifest["training"]["run"]["preprocess"] == spec
    assert not (record / "export" / "yolo-onnx-int8").exists()
    assert not (record / "export" / "fidelity.json").exists()
