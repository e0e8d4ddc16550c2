"""Regression tests for the station items of issue 24 (1, 2, 3, 4, 7, 9, 10, 11, 13).

Each test names its item. Inputs are generated; every run is bounded in time.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import time
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.classes import CLASSES
from leukedge.edge.results_log import ResultsError, ResultsLog
from leukedge.edge.sources import Frame
from leukedge.edge.station import Station
from leukedge.edge.synth import synth_field


def _write(path: Path | bytes, i: int = 0) -> None:
    rgb = synth_field(CLASSES[i % 4], size=(64, 64), seed=i)[0]
    data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    with open(path, "wb") as f:
        f.write(data)


def _run(bundle, results, *args: str):
    base = ["run", "--model", str(bundle), "--results-dir", str(results)]
    return CliRunner().invoke(app, [*base, *args])


def _clean(result) -> None:
    """A CLI error: one line on stderr, no traceback."""
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, result.stderr


def _rows(results: Path) -> list[tuple]:
    with sqlite3.connect(results / "results.db") as db:
        return db.execute("SELECT slide, source_id, label, error FROM results").fetchall()


def test_item1_undecodable_file_name_survives_restarts(tiny_bundle, tmp_path):
    folder, results = tmp_path / "in", tmp_path / "results"
    (folder / "S-1").mkdir(parents=True)
    _write(os.fsencode(folder) + b"/S-1/field-\xff.png")
    _write(folder / "S-1" / "ok.png", 1)
    for _ in range(2):  # a restart must neither crash nor log the field again
        result = _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once")
        assert result.exit_code == 0, result.output
    rows = _rows(results)
    assert len(rows) == 2 and all(r[2] for r in rows)
    assert any(r[1].endswith("field-\\xff.png") for r in rows)


def test_item2_symlink_loop_does_not_block_the_folder(tiny_bundle, tmp_path):
    folder, results = tmp_path / "in", tmp_path / "results"
    folder.mkdir()
    os.symlink("loop.jpg", folder / "loop.jpg")
    _write(folder / "ok.png")
    result = _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once", "--slide", "S1")
    assert result.exit_code == 0, result.output
    assert "loop.jpg: cannot read" in result.stderr and "retrying" not in result.stderr
    assert [Path(r[1]).name for r in _rows(results)] == ["ok.png"]


def test_item3_read_only_hot_folder_gets_no_state_file(tiny_bundle, tmp_path):
    folder, results = tmp_path / "in", tmp_path / "results"
    folder.mkdir()
    for i in range(3):
        _write(folder / f"f{i}.png", i)
    folder.chmod(0o555)
    try:
        result = _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once")
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["f0.png", "f1.png", "f2.png"]
    assert len(_rows(results)) == 3


def test_item4_stalled_writer_is_one_field(tiny_bundle, tmp_path):
    """The writer stalls longer than decode_timeout: one field, no error row."""
    import threading

    folder, results = tmp_path / "in", tmp_path / "results"
    folder.mkdir()
    rgb = synth_field("Pro", size=(64, 64), seed=0)[0]
    data = cv2.imencode(".jpg", rgb)[1].tobytes()

    def writer():
        with open(folder / "stall.jpg", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.8)
            f.write(data[len(data) // 2 :])

    station = Station(_model(tiny_bundle), ResultsLog(results))
    from leukedge.edge.sources import open_source

    source = open_source(f"folder:{folder}", poll=0.02, settle=0.05, decode_timeout=0.2)
    thread = threading.Thread(target=writer)
    thread.start()
    stop = threading.Timer(10, source.stop)
    stop.start()
    station.run(source, slide_id="S1", on_result=lambda f: source.stop())
    stop.cancel()
    thread.join()
    assert [(r[2] is not None, r[3]) for r in _rows(results)] == [(True, None)]


def _model(bundle):
    from leukedge.edge.model import load_model

    return load_model(bundle)


def test_item7_reused_folder_new_slide_and_new_results_are_processed_and_told(
    tiny_bundle, tmp_path
):
    folder = tmp_path / "in"
    (folder / "S-1").mkdir(parents=True)
    for i in range(2):
        _write(folder / "S-1" / f"f{i}.png", i)
    results = tmp_path / "results"
    assert _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once").exit_code == 0
    again = _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once")
    assert again.exit_code == 0 and "skipped 2 file(s): already logged in slide S-1" in again.stderr
    assert len(_rows(results)) == 2
    # a new results folder, or an emptied one, processes the same folder again
    fresh = tmp_path / "fresh"
    assert _run(tiny_bundle, fresh, "--source", f"folder:{folder}", "--once").exit_code == 0
    assert len(_rows(fresh)) == 2
    (results / "results.db").unlink()
    for extra in results.glob("results.db-*"):
        extra.unlink()
    assert _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once").exit_code == 0
    assert len(_rows(results)) == 2
    # the same files at the top level, for a new slide: processed for that slide
    for p in (folder / "S-1").iterdir():
        os.replace(p, folder / p.name)
    top = _run(tiny_bundle, results, "--source", f"folder:{folder}", "--once", "--slide", "S-2")
    assert top.exit_code == 0 and sum(r[0] == "S-2" for r in _rows(results)) == 2


def test_item9_corrupt_results_database_is_one_line_and_kept(tiny_bundle, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    junk = b"this is not a database" * 100
    (results / "results.db").write_bytes(junk)
    run = _run(tiny_bundle, results, "--source", "synthetic?n=1", "--slide", "S1")
    assert run.exit_code == 2 and "not a readable results database" in run.stderr
    _clean(run)
    listed = CliRunner().invoke(app, ["results", "list", "--dir", str(results)])
    assert listed.exit_code == 2 and "move it aside" in listed.stderr
    _clean(listed)
    assert (results / "results.db").read_bytes() == junk  # nothing overwritten


def test_item9_full_or_read_only_database_keeps_committed_rows(tmp_path):
    log = ResultsLog(tmp_path)
    log.start_slide("S1")
    row = {"source_id": "a", "image_sha256": "a" * 64, "label": "Pre", "probabilities": {"Pre": 1}}
    log.log_result("S1", row)
    pages = log._db.execute("PRAGMA page_count").fetchone()[0]
    log._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    with pytest.raises(ResultsError, match=r"results\.db: .*full.*free disk space"):
        for i in range(200):
            log.log_result("S1", {**row, "source_id": f"f{i}" * 50})
    log._db.execute("PRAGMA query_only = ON")  # read-only
    with pytest.raises(ResultsError, match="writable"):
        log.end_slide("S1")
    log.close()
    with ResultsLog(tmp_path) as again:
        assert again._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert again.results("S1")[0]["source_id"] == "a"


def test_item9_results_error_mid_run_prints_summary_and_one_line(
    tiny_bundle, tmp_path, monkeypatch
):
    real, calls = ResultsLog.log_result, []

    def failing(self, slide, result):
        calls.append(1)
        if len(calls) > 2:
            raise ResultsError(f"{self.path}: cannot use the results database (disk is "
                               "full); free disk space")  # fmt: skip
        return real(self, slide, result)

    monkeypatch.setattr(ResultsLog, "log_result", failing)
    results = tmp_path / "results"
    result = _run(tiny_bundle, results, "--source", "synthetic?n=5", "--slide", "S1")
    assert result.exit_code == 2 and "free disk space" in result.stderr
    _clean(result)
    assert "fields 2, uncertain" in result.stderr  # the summary of what was logged
    assert len(_rows(results)) == 2


def test_item10_csv_export_escapes_formulas_and_creates_the_folder(tmp_path):
    with ResultsLog(tmp_path / "r") as log:
        log.start_slide("S1")
        for i, name in enumerate(["=HYPERLINK(1)", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "ok"]):
            row = {"source_id": name, "image_sha256": f"{i:064x}", "label": "Pre"}
            log.log_result("S1", {**row, "probabilities": {"Pre": 1.0}})
    out = tmp_path / "missing" / "deeper" / "s1.csv"
    args = ["results", "export", "--slide", "S1", "--dir", str(tmp_path / "r"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = [r["source_id"] for r in csv.DictReader(out.open(newline=""))]
    assert cells == ["'=HYPERLINK(1)", "'+1", "'-1+2", "'@SUM(A1)", "'\tx", "'\rx", "ok"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = CliRunner().invoke(app, [*args[:-1], str(blocked / "s1.csv")])
    assert bad.exit_code == 2 and "choose another --out" in bad.stderr
    _clean(bad)


def test_item13_cli_errors_are_one_line_and_leave_no_slide(tiny_bundle, tmp_path):
    results = tmp_path / "results"
    folder = tmp_path / "plain"
    folder.mkdir()
    _write(folder / "a.png")
    plain = _run(tiny_bundle, results, "--source", str(folder), "--once", "--slide", "P")
    assert plain.exit_code == 0, plain.output  # a plain folder path is read once
    for args, words in [
        (["--source", f"folder:{tmp_path / 'nonexistent'}"], "not a folder"),
        (["--source", "synthetic?n=1", "--threads", "2000"], "threads must be an integer in 1.."),
        (["--source", "synthetic?n=1", "--threads", "-1"], "threads must be an integer in 1.."),
        (["--source", "synthetic?n=1", "--threads", "0"], "threads must be an integer in 1.."),
        (["--source", "synthetic?n=1", "--workers", "-1"], "workers must be an integer in 0.."),
        (["--source", "synthetic?n=1", "--workers", "999"], "workers must be an integer in 0.."),
        (["--source", "synthetic?speed=2"], "unknown option"),
    ]:
        result = _run(tiny_bundle, results, *args, "--slide", "X")
        assert result.exit_code == 2 and words in result.stderr, (args, result.output)
        _clean(result)
    for args, words in [
        (["--source", "synthetic?n=1", "--reopen"], "--reopen needs --slide"),
        (["--source", "synthetic?n=1", "--slide", "../x"], "invalid slide id"),
        (["--source", "synthetic?n=1", "--slide", "P"], "'P' has ended"),
    ]:
        result = _run(tiny_bundle, results, *args)
        assert result.exit_code == 2 and words in result.stderr, (args, result.output)
        _clean(result)
    with ResultsLog(results) as log:
        assert [s.id for s in log.slides()] == ["P"]  # no empty slide left behind
    for args, words in [
        (["--fields", "0"], "--fields must be at least 1"),
        (["--size", "0"], "--size must be"),
        (["--size", "20000"], "--size must be"),
        (["--seed", "-1"], "--seed must be"),
        (["--threads", "2000"], "--threads must be an integer in 1.."),
    ]:
        result = CliRunner().invoke(app, ["demo", *args])
        assert result.exit_code == 2 and words in result.stderr, (args, result.output)
        _clean(result)


def test_item13_camera_that_gives_up_is_told_and_each_failure_logged(tiny_bundle, tmp_path):
    station = Station(_model(tiny_bundle), ResultsLog(tmp_path))
    failures = [Frame("usb:99#0", error=f"usb:99: no frame (failure {i})") for i in (1, 2)]
    failures.append(Frame("usb:99#0", error="usb:99: no frame 3 times in a row; giving up"))
    logged = []
    station.run(failures, slide_id="S1", on_result=logged.append)
    assert [f.result.error for f in logged] == [f.error for f in failures]  # none skipped
    start = time.monotonic()
    result = _run(tiny_bundle, tmp_path / "r2", "--source", "usb:99?tries=2&backoff=0.01")
    assert time.monotonic() - start < 60
    assert result.exit_code == 1 and "giving up" in result.stderr
