"""`leukedge train yolo` end to end on tiny generated data: tree, run record, reports."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.data.layouts import find_dataset
from leukedge.data.split import make_split, read_split
from leukedge.edge.imageio import read_field
from leukedge.edge.synth import write_synth_dataset
from leukedge.training.runs import find_run_config

SIZE = 32


def check_report(report_dir, predict) -> None:
    """A run report's figures agree with its own per-field predictions and with ``predict``
    (probabilities of RGB fields by an independent path)."""
    report = json.loads((report_dir / "report.json").read_text())
    preds = report["predictions"]
    assert preds and report["n"] == len(preds)
    hits = [p["predicted"] == p["label"] for p in preds]
    assert report["clean"]["accuracy"] == pytest.approx(np.mean(hits))
    fresh = predict([read_field(p["path"]) for p in preds])
    np.testing.assert_allclose([p["probabilities"] for p in preds], fresh, atol=1e-4)
    assert set(report["shifts"]) == {"hue+8", "hue-8", "dim15", "warm", "desat30"}
    assert 0 <= report["shortcut"]["accuracy"] <= 1
    for png in ("confusion.png", "reliability.png", "shifts.png"):
        assert (report_dir / png).stat().st_size > 0
    assert (report_dir / "report.md").read_text().count("|") > 10


@pytest.mark.slow
def test_train_yolo_cli_writes_tree_record_and_reports(tmp_path):
    if importlib.util.find_spec("ultralytics") is None:  # not imported: ensure_offline comes first
        pytest.skip("ultralytics is not installed")
    write_synth_dataset(tmp_path / "data", 6, size=(SIZE, SIZE))
    make_split(find_dataset(tmp_path / "data"), tmp_path, ratios=(0.5, 0.25, 0.25))
    run = tmp_path / "run"
    args = ["train", "yolo", "--split-csv", str(tmp_path / "split.csv"), "--out", str(run)]
    args += ["--epochs", "1", "--imgsz", str(SIZE), "--batch", "8", "--copies", "1", "--no-flips"]
    args += ["--lr", "0.002", "--warmup", "0", "--crop", "0.2", "--no-ultralytics-colour"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    train_rows = read_split(tmp_path / "split.csv", "train")
    per_class = max(Counter(r.label for r in train_rows).values())
    for label in {r.label for r in train_rows}:
        images = list((run / "data" / "train" / label).glob("*.png"))
        assert len(images) == 2 * per_class  # balanced, plus one jittered copy each
        assert read_field(images[0]).shape == (SIZE, SIZE, 3)
    record = find_run_config(run)
    assert record["preprocess"]["input_mode"] == "field-wb" and record["copies"] == 1
    assert record["quarter_turns"] is False
    assert record["jitter"]["hue"] == 12
    aug = record["ultralytics_aug"]
    assert aug["fliplr"] == aug["flipud"] == 0.0 and aug["erasing"] == 0.0 and aug["scale"] == 0.2
    assert aug["hsv_h"] == aug["hsv_s"] == aug["hsv_v"] == 0.0
    ultralytics_args = (run / "train" / "args.yaml").read_text().splitlines()
    for line in ("fliplr: 0.0", "auto_augment: null", "scale: 0.2", "hsv_s: 0.0", "hsv_v: 0.0"):
        assert line in ultralytics_args
    # --lr replaces Ultralytics' "auto" optimizer, which would ignore lr0
    assert record["schedule"] == {"warmup_epochs": 0.0, "optimizer": "AdamW", "lr0": 0.002}
    for line in ("optimizer: AdamW", "lr0: 0.002", "warmup_epochs: 0.0"):
        assert line in ultralytics_args
    best = run / "train" / "weights" / "best.pt"
    for split in ("val", "test"):
        check_report(run / f"report-{split}", ultralytics_predict(best, record["preprocess"]))


def ultralytics_predict(pt, preprocess: dict):
    """``predict_proba`` by another path than the one that wrote the reports: Ultralytics'
    own ``predict`` (its resizing, scaling, forward pass and softmax) on the station's view
    of each field (``edge.preprocess.view``: white balance, resize and crop)."""
    from ultralytics import YOLO

    from leukedge.edge.preprocess import Preprocess, view

    yolo, spec = YOLO(str(pt)), Preprocess.from_dict(preprocess)

    def predict(fields):
        bgr = [np.ascontiguousarray(view(f, spec)[..., ::-1]) for f in fields]
        found = yolo.predict(bgr, imgsz=spec.size, device="cpu", verbose=False)
        return np.array([r.probs.data.cpu().numpy() for r in found])

    return predict
