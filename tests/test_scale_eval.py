"""``leukedge eval --engine``: a labelled set read and predicted under every condition in a
process pool or on Ray Data gives the in-process evaluation, and misplaced options are one
line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.synth import write_synth_dataset
from leukedge.evaluation import evaluate as evaluation
from leukedge.evaluation.shifts import SHIFTS

PER_CLASS = 8  # 32 fields in the Taleqani layout, and two broken files
BROKEN = {
    "labelled/Original/Benign/empty.jpg": "empty file (0 bytes)",
    "labelled/Original/Pro/notes.png": "not a readable image",
}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("set") / "labelled"
    write_synth_dataset(root, PER_CLASS, size=(48, 48))
    (root / "Original/Benign/empty.jpg").write_bytes(b"")
    (root / "Original/Pro/notes.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from conftest import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


def _eval(bundle: Path, labelled: Path, out: Path, *options: str):
    """``leukedge eval`` on the set, given as a relative path (the engine's workers get
    absolute ones): (the report JSON, the predictions ``measure`` was given)."""
    seen = []

    def spy(classes, predictions, *args, **kwargs):
        seen.append(predictions)
        return measure(classes, predictions, *args, **kwargs)

    measure = evaluation.measure
    args = ["eval", "-m", str(bundle), "--data", labelled.name, "--batch", "8"]
    args += ["--json", str(out / "report.json"), "-o", str(out / "report"), *options]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "measure", spy)
        patch.chdir(labelled.parent)
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text()), seen[0]


@pytest.fixture(scope="module")
def in_process(bundle, labelled, tmp_path_factory):
    return _eval(bundle, labelled, tmp_path_factory.mktemp("in-process"))


def _assert_same(got, want):
    """Same fields and skipped files, probabilities within 1e-6 under every condition,
    same fields right, per-class figures and predicted labels."""
    (report, (kept, skipped, probs)), (ref, (ref_kept, ref_skipped, ref_probs)) = got, want
    assert kept == ref_kept and skipped == ref_skipped
    assert list(probs) == list(ref_probs) == ["clean", *SHIFTS, "shortcut"]
    for name, q in probs.items():
        np.testing.assert_allclose(q, ref_probs[name], rtol=0, atol=1e-6, err_msg=name)
    assert (report["n"], report["skipped"]) == (ref["n"], ref["skipped"])
    assert report["clean"]["per_class"] == ref["clean"]["per_class"]
    for key in ("correct", "accuracy", "accuracy_ci"):
        assert report["clean"][key] == ref["clean"][key]
        assert report["shortcut"][key] == ref["shortcut"][key]
        for name in SHIFTS:
            assert report["shifts"][name][key] == ref["shifts"][name][key], name
    labels = [(p["path"], p["predicted"], p["under"]) for p in report["predictions"]]
    assert labels == [(p["path"], p["predicted"], p["under"]) for p in ref["predictions"]]


def test_in_process_reads_each_file_and_skips_the_broken(in_process):
    report, (kept, skipped, probs) = in_process
    assert report["n"] == len(kept) == 4 * PER_CLASS
    assert {s["path"]: s["problem"] for s in skipped} == BROKEN
    assert len({label for _, label in kept}) == 4 and all(
        not Path(p).is_absolute() for p, _ in kept
    )
    for name in (*SHIFTS, "shortcut"):  # each condition's own predictions
        assert np.abs(probs[name] - probs["clean"]).max() > 1e-4, name


def test_local_engine_gives_the_in_process_result(in_process, bundle, labelled, tmp_path):
    got = _eval(bundle, labelled, tmp_path, "--engine", "local", "--workers", "2")
    _assert_same(got, in_process)


def test_ray_engine_gives_the_in_process_result(in_process, bundle, labelled, tmp_path):
    pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data: pip install '.[scale]'")
    got = _eval(bundle, labelled, tmp_path, "--engine", "ray", "--workers", "2")
    _assert_same(got, in_process)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--address", "1.2.3.4:6379"], "use it with --engine ray"),
        (["--engine", "local", "--address", "1.2.3.4:6379"], "use it with --engine ray"),
        (["--workers", "2"], "use it with --engine local or ray"),
        (["--engine", "local", "-m", "{run}"], "{run}: a training run; --engine runs bundles"),
    ],
)
def test_misplaced_engine_options_are_one_line_and_exit_2(options, message, bundle, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"not a model")  # never loaded
    args = ["eval", "-m", str(bundle), "--data", str(tmp_path), *options]
    res = CliRunner().invoke(app, [a.format(run=run) for a in args])
    assert res.exit_code == 2, res.output
    assert message.format(run=run) in res.output and "Traceback" not in res.output
