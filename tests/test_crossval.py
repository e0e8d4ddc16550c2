"""k-fold cross-validation of a recipe (``leukedge.training.crossval``) with a fake family."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.data.layouts import find_dataset
from leukedge.data.split import make_split, read_split
from leukedge.edge.classes import CLASSES
from leukedge.edge.synth import write_synth_dataset
from leukedge.errors import UsageError
from leukedge.evaluation.evaluate import Predictor
from leukedge.training import crossval
from leukedge.training.families import FAMILIES, Family


@pytest.fixture
def fake_family(monkeypatch):
    """A family whose "training" writes a file and whose model always says Benign."""
    trained = []

    def train(split_csv, out, seed=0, threads=None, **recipe):
        trained.append((split_csv, recipe))
        out.mkdir(parents=True, exist_ok=True)
        (out / "best.fake").write_text("x")
        return out / "best.fake"

    def predictor(path, threads=None):
        def predict_proba(fields):
            return np.tile(np.eye(len(CLASSES))[0], (len(fields), 1))

        return Predictor(path.parent.name, CLASSES, predict_proba)

    family = Family("fake", ".fake", ("best.fake",), train, predictor, len, len)
    monkeypatch.setitem(FAMILIES, "fake", family)
    return trained


def test_cross_validation_holds_out_each_fold_once(tmp_path, fake_family):
    write_synth_dataset(tmp_path / "data", 6, size=(48, 48))
    make_split(find_dataset(tmp_path / "data"), tmp_path, ratios=(0.6, 0.2, 0.2))
    rows = read_split(tmp_path / "split.csv")
    record = crossval.cross_validate("fake", tmp_path / "split.csv", tmp_path / "cv", 3, lr=0.1)
    assert len(fake_family) == 3 and all(r == {"lr": 0.1} for _, r in fake_family)
    held_out = []
    for i in range(3):
        fold = read_split(tmp_path / "cv" / f"fold{i}" / "split.csv")
        assert {r.split for r in fold} == {"train", "val"}  # the test split is never used
        val = {r.path for r in fold if r.split == "val"}
        groups = {r.group for r in fold if r.split == "val"}
        assert not groups & {r.group for r in fold if r.split == "train"}  # groups stay whole
        held_out += sorted(val)
        assert (tmp_path / "cv" / f"fold{i}" / "report-val" / "report.md").is_file()
    assert sorted(held_out) == sorted(r.path for r in rows if r.split != "test")
    assert sum(f["n"] for f in record["folds"]) == len(held_out)
    accuracies = [f["accuracy"] for f in record["folds"]]  # the share of Benign in each fold
    assert record["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert record["accuracy"]["min"] == min(accuracies)
    assert json.loads((tmp_path / "cv" / "cv.json").read_text()) == record
    assert "3-fold cross-validation" in (tmp_path / "cv" / "cv.md").read_text()
    crossval.cross_validate("fake", tmp_path / "split.csv", tmp_path / "cv", 3)
    assert len(fake_family) == 3  # finished folds are reused


def test_fold_count_is_checked(tmp_path):
    with pytest.raises(UsageError, match="at least 2"):
        crossval.fold_splits(tmp_path / "split.csv", tmp_path, 1)


def test_train_folds_cross_validates_from_the_command_line(tmp_path, fake_family, monkeypatch):
    from typer.testing import CliRunner

    from leukedge.cli import app

    monkeypatch.setitem(FAMILIES, "yolo", FAMILIES["fake"])
    write_synth_dataset(tmp_path / "data", 4, size=(48, 48))
    make_split(find_dataset(tmp_path / "data"), tmp_path, ratios=(0.5, 0.25, 0.25))
    args = ["train", "yolo", "--split-csv", str(tmp_path / "split.csv"), "--out", str(tmp_path)]
    res = CliRunner().invoke(app, [*args, "--folds", "2", "--epochs", "3"])
    assert res.exit_code == 0, res.output
    assert len(fake_family) == 2 and fake_family[0][1]["epochs"] == 3
    assert "2-fold cross-validation" in res.output and (tmp_path / "cv.json").is_file()
