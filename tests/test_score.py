"""``leukedge score``: both engines give the station's own rows and slide calls, a killed
run resumes without duplicates or losses, and SRC is listed as documented."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import write_field
from leukedge.edge.model import load_model
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.sources.files import read_frame
from leukedge.edge.synth import synth_field
from leukedge.scale import ResultStore, list_fields, score_archive, score_paths

pytest.importorskip("pyarrow", reason="Parquet parts need pyarrow: pip install '.[scale]'")

SLIDES, PER_SLIDE = 6, 48  # 288 fields: 36 drawn fields in their 8 flips and quarter turns
COPY = "S-005/copy.png"  # a byte-identical copy of a field of its slide: counted once
BROKEN = ("S-000/truncated.jpg", "S-001/empty.png", "S-002/notes.png", "S-003/grey.png")
BROKEN += ("S-004/alpha.png",)
N_FILES = SLIDES * PER_SLIDE + 1 + len(BROKEN)


def _turns(rgb: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and quarter turns of a field (distinct fields, drawn once)."""
    return [np.rot90(f, k) for f in (rgb, rgb[:, ::-1]) for k in range(4)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Per-slide subfolders of synthetic fields (PNG and JPEG), a copy and five broken files."""
    root = tmp_path_factory.mktemp("archive")
    fields = [
        f
        for i in range(SLIDES * PER_SLIDE // 8)
        for f in _turns(synth_field(CLASSES[i % 4], seed=i)[0])
    ]
    for i, rgb in enumerate(fields):
        folder = root / f"S-{i // PER_SLIDE:03d}"
        folder.mkdir(exist_ok=True)
        write_field(folder / f"f{i:04d}.{'png' if i % 3 else 'jpg'}", np.ascontiguousarray(rgb))
    ok, jpeg = cv2.imencode(".jpg", fields[0])
    (root / "S-000/truncated.jpg").write_bytes(jpeg.tobytes()[:400])
    (root / "S-001/empty.png").write_bytes(b"")
    (root / "S-002/notes.png").write_text("not an image")
    cv2.imwrite(str(root / "S-003/grey.png"), fields[1][..., 0])
    cv2.imwrite(str(root / "S-004/alpha.png"), np.dstack([fields[2], fields[2][..., :1]]))
    (root / COPY).write_bytes((root / "S-005/f0241.png").read_bytes())
    (root / "S-000/.hidden.jpg").write_bytes(jpeg.tobytes())
    (root / "S-000/README.txt").write_text("not a field")
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from conftest import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="module")
def local_run(archive, bundle, tmp_path_factory):
    """The local engine, 2 workers: (rows, slides.json)."""
    out = tmp_path_factory.mktemp("local")
    report = score_archive(archive, out, bundle, "local", workers=2, batch_size=16)
    assert report.scored == N_FILES and report.skipped == 0
    store = ResultStore(out)
    return store.rows(report.summary["model_sha256"]), json.loads((out / "slides.json").read_text())


def _assert_same_rows(rows, expected):
    """Same fields, labels, errors, reasons...; figures from the model within 1e-6."""
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    figures = ("probabilities", "confidence", "ood_score")
    for row, ref in zip(rows, expected):
        assert {k: v for k, v in row.items() if k not in figures} == {
            k: v for k, v in ref.items() if k not in figures
        }, row["path"]
        for key in ("confidence", "ood_score"):
            assert row[key] == pytest.approx(ref[key], abs=1e-6), (row["path"], key)
        if ref["probabilities"] is None:
            assert row["probabilities"] is None
        else:
            assert row["probabilities"].keys() == ref["probabilities"].keys()
            got, want = (np.array(list(r["probabilities"].values())) for r in (row, ref))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=row["path"])


def test_listing_of_per_slide_folders(archive):
    refs = list_fields(archive)
    assert len(refs) == N_FILES
    assert {r.slide for r in refs} == {f"S-{s:03d}" for s in range(SLIDES)}
    assert not any(Path(r.path).name in (".hidden.jpg", "README.txt") for r in refs)
    assert all(Path(r.path).is_absolute() for r in refs)


def test_listing_of_list_files_globs_and_dataset_layouts(tmp_path, archive):
    listing = tmp_path / "fields.txt"
    listing.write_text(f"# two fields\n{archive}/S-000/f0001.png\n\nmissing.jpg\n")
    refs = list_fields(listing)
    assert [Path(r.path).name for r in refs] == ["f0001.png", "missing.jpg"]
    assert len(list_fields(f"{archive}/S-00[12]/*.png")) == 2 * 32 + 2
    taleqani = tmp_path / "taleqani"
    for folder in ("Original/Benign", "Original/Pro", "Segmented/Benign"):
        (taleqani / folder).mkdir(parents=True)
        write_field(taleqani / folder / "a.jpg", synth_field("Benign")[0])
    refs = list_fields(taleqani)
    assert sorted(r.slide for r in refs) == ["Original/Benign", "Original/Pro"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_fields(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        list_fields(tmp_path / "empty")


def test_local_rows_are_the_station_pipeline(local_run, archive, bundle):
    """Every row is FieldPipeline on read_frame, as the station computes it."""
    rows, slides = local_run
    pipeline = FieldPipeline(load_model(bundle))
    for row in rows[::7] + [r for r in rows if r["error"]]:
        frame = read_frame(Path(row["path"]))
        res = pipeline(frame)
        assert (row["label"], row["error"], row["sha256"]) == (res.label, res.error, frame.sha256)
        assert row["reasons"] == res.reasons and row["cell_count"] == res.cell_count
        assert (row["phash"], row["ood_score"]) == (res.phash, res.ood_score)
        if res.probabilities is not None:
            assert row["probabilities"] == pytest.approx(res.probabilities, abs=1e-6)
    errors = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r["error"] for r in rows}
    assert all(errors[name].startswith(f"{archive / name}: ") for name in BROKEN)
    assert sum(r["error"] is not None for r in rows) == len(BROKEN)
    assert [s["slide"] for s in slides["slides"]] == [f"S-{s:03d}" for s in range(SLIDES)]
    assert sum(s["fields"] for s in slides["slides"]) == len(rows)
    assert all(s["errors"] == 1 for s in slides["slides"][:5])
    assert slides["slides"][5]["duplicates"] == 1


def test_fields_are_classified_a_station_batch_per_call(archive, bundle, monkeypatch):
    """One ``classify`` (one model call, for a model that takes a batch) per BATCH fields,
    not one per field, with the rows that per-field calls give; a group whose call raises
    is redone field by field, still without errors."""
    from leukedge.edge.station import BATCH
    from leukedge.scale.rows import Task, score_tasks

    pipeline = FieldPipeline(load_model(bundle))
    good = [r for r in list_fields(archive) if Path(r.path).name.startswith("f")]
    tasks = [Task(r.path, r.slide) for r in good[: BATCH + 5]]
    groups: list[int] = []
    classify = pipeline.classify

    def counted(analyses):
        groups.append(len(analyses))
        return classify(analyses)

    monkeypatch.setattr(pipeline, "classify", counted)
    rows = score_tasks(pipeline, "tiny", tasks)
    assert groups == [BATCH, 5]
    for task, row in zip(tasks, rows):
        res = pipeline(read_frame(Path(task.path)))
        assert (row["path"], row["label"], row["error"]) == (task.path, res.label, None)
        assert json.loads(row["probabilities"]) == pytest.approx(res.probabilities, abs=1e-6)

    def one_at_a_time(analyses):
        if len(analyses) > 1:
            raise RuntimeError("a group failed")
        return classify(analyses)

    monkeypatch.setattr(pipeline, "classify", one_at_a_time)
    again = score_tasks(pipeline, "tiny", tasks)
    assert [(r["label"], r["error"]) for r in again] == [(r["label"], None) for r in rows]


def test_ray_engine_gives_the_local_rows(local_run, archive, bundle, tmp_path):
    pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data: pip install '.[scale]'")
    report = score_archive(archive, tmp_path, bundle, "ray", workers=2, batch_size=32)
    rows, slides = local_run
    _assert_same_rows(ResultStore(tmp_path).rows(report.summary["model_sha256"]), rows)
    assert json.loads((tmp_path / "slides.json").read_text()) == slides


def test_resume_after_sigkill_loses_and_repeats_nothing(local_run, archive, bundle, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "leukedge", "score", str(archive), "--out", str(out)]
    cmd += ["--model", str(bundle), "--workers", "2", "--batch-size", "8"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("parts/part-*"))) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "no part written in 120 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-batch
    proc.wait()
    killed = {p.name for p in out.glob("parts/part-*")}
    assert 3 <= len(killed) < -(-N_FILES // 8), "the run finished before it could be killed"
    before = sum(1 for _ in _raw_records(out))
    report = score_archive(archive, out, bundle, "local", workers=2, batch_size=8)
    assert report.skipped == before and report.scored == len(local_run[0]) - before
    paths = [r["path"] for r in _raw_records(out)]
    assert len(paths) == len(set(paths)) == len(local_run[0])
    _assert_same_rows(ResultStore(out).rows(report.summary["model_sha256"]), local_run[0])
    assert json.loads((out / "slides.json").read_text()) == local_run[1]
    again = score_archive(archive, out, bundle, "local", workers=1)
    assert (again.scored, again.skipped) == (0, len(paths))


def _raw_records(out: Path):
    import pyarrow.parquet as pq

    for part in sorted(out.glob("parts/part-*.parquet")):
        yield from pq.read_table(part).to_pylist()


def test_csv_parts_and_score_paths_match_parquet(local_run, archive, bundle, tmp_path):
    rows = local_run[0]
    paths = [r["path"] for r in rows[:40]]
    (tmp_path / "list.txt").write_text("\n".join(paths))
    res = CliRunner().invoke(
        app,
        ["score", str(tmp_path / "list.txt"), "-o", str(tmp_path / "csv"), "-m", str(bundle)]
        + ["--format", "csv", "--workers", "1"],
    )
    assert res.exit_code == 0, res.output
    store = ResultStore(tmp_path / "csv", "csv")
    _assert_same_rows(store.rows(rows[0]["model_sha256"]), rows[:40])
    _assert_same_rows(score_paths(paths, bundle, workers=1), rows[:40])


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere", "-o", "x"], "nowhere: no such folder"),
        (["{archive}", "-o", "x", "--address", "1.2.3.4:6379"], "use it with --engine ray"),
        (["{archive}", "-o", "x", "-m", "nowhere"], "no such model bundle"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, archive, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["score", *(a.format(archive=archive) for a in args)])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_ray_and_pyarrow_load_only_when_used():
    """Importing the CLI, the scale package or the edge core loads neither."""
    probe = (
        "import sys, leukedge.cli, leukedge.scale, leukedge.edge\n"
        "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
