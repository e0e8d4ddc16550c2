"""`leukedge study --quick`: the seven-model comparison (plus the notebook's own recipe)
end to end on generated fields, one epoch each, and its reuse of finished runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from leukedge.evaluation.shifts import SHIFTS
from leukedge.training.study import STUDY_MODELS

pytestmark = pytest.mark.slow


def _study(*args: str, backend: str = "torch") -> subprocess.CompletedProcess:
    """Run the study. Keras runs on its PyTorch backend where it can: that skips
    TensorFlow's graph tracing, minutes for tiny models (test_keras covers the
    TensorFlow backend); NASNet-Mobile exists only on TensorFlow."""
    command = [sys.executable, "-m", "leukedge", "study", "--quick", "--threads", "2", *args]
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(command, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ultralytics")
    out = tmp_path_factory.mktemp("study")
    others = ",".join(m.name for m in STUDY_MODELS if m.name != "nasnetmobile")
    for done in (
        _study("--out", str(out), "--models", others),
        _study("--out", str(out), "--models", "nasnetmobile", backend="tensorflow"),
        _study("--out", str(out)),  # every run exists: evaluates nothing, writes the table
    ):
        assert done.returncode == 0, done.stderr[-3000:]
    assert "leukedge train" not in done.stderr
    return out


def test_table_agrees_with_every_run_report(study):
    record = json.loads((study / "study.json").read_text())
    rows = {r["name"]: r for r in record["models"]}
    assert list(rows) == [m.name for m in STUDY_MODELS]
    for model in STUDY_MODELS:
        row = rows[model.name]
        report = json.loads((study / model.name / "report-test" / "report.json").read_text())
        preds = report["predictions"]
        assert row["n"] == len(preds) == 8  # 2 test fields per class
        hits = np.mean([p["predicted"] == p["label"] for p in preds])
        assert row["accuracy"] == pytest.approx(hits)
        assert {s: v["accuracy"] for s, v in row["shifts"].items()} == {
            s: report["shifts"][s]["accuracy"] for s in SHIFTS
        }
        assert row["shortcut"]["accuracy"] == report["shortcut"]["accuracy"]
        assert row["shortcut"]["chance"] == 0.25
        assert row["published_accuracy"] == model.published
        assert row["epochs_done"] == 1
        assert row["command"].startswith(f"leukedge train {model.family} ")
        assert " ".join(model.options) in row["command"]
    # Parameter counts are the architectures' own, whatever the input size.
    assert rows["mobilenetv2"]["params"] == rows["mobilenetv2-mask"]["params"] == 2_586_948
    assert rows["mobilenetv2-dual"]["params"] > rows["mobilenetv2"]["params"]
    assert rows["yolov8n"]["params"] < rows["yolo11n"]["params"] < rows["mobilenetv2"]["params"]
    assert rows["efficientnetb0"]["params"] > rows["mobilenetv2"]["params"]


def test_markdown_and_plot(study):
    md = (study / "study.md").read_text()
    for model in STUDY_MODELS:
        assert model.label in md
    for figure in ("100.0", "99.1", "96.4", "35.1"):
        assert f"| {figure} |" in md
    assert all(s in md for s in SHIFTS)
    assert (study / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_model_is_refused(tmp_path):
    done = _study("--out", str(tmp_path), "--models", "resnet50")
    assert done.returncode == 2
    assert "resnet50" in done.stderr


def test_finished_runs_are_reused_and_missing_reports_remade(study):
    """Runs trained elsewhere (a GPU machine) come without test reports: the study
    evaluates them with `leukedge eval` instead of training again."""
    names = ("mobilenetv2", "yolo11n")  # the study's own order
    before = {}
    for name in names:
        run = study / name
        weights = next(p for p in (run / "train/weights/best.pt", run / "best.keras") if p.exists())
        report = json.loads((run / "report-test" / "report.json").read_text())
        before[name] = (weights, weights.stat().st_mtime_ns, report["clean"]["accuracy"])
        shutil.rmtree(run / "report-test")
    done = _study("--out", str(study), "--models", ",".join(names))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leukedge train" not in done.stderr  # nothing retrained
    assert done.stderr.count("leukedge eval") == 2
    rows = {r["name"]: r for r in json.loads((study / "study.json").read_text())["models"]}
    assert list(rows) == list(names)
    for name, (weights, mtime, accuracy) in before.items():
        assert weights.stat().st_mtime_ns == mtime
        assert rows[name]["accuracy"] == pytest.approx(accuracy)
