"""Results log: durability, no duplicates, restarts, schema versions, export, SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.results_log import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    ResultsLog,
    SchemaError,
    SlideError,
    validate_slide_id,
)
from leukedge.edge.sources import open_source

PROBS = {"Benign": 0.1, "Early": 0.2, "Pre": 0.6, "Pro": 0.1}


def _result(i: int, **extra) -> dict:
    return {
        "source_id": f"f{i}.png",
        "image_sha256": f"{i:064x}",
        "label": "Pre",
        "probabilities": PROBS,
        **extra,
    }


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def test_wal_full_sync_and_one_row_per_result(tmp_path):
    with ResultsLog(tmp_path / "res") as log:
        assert log.path == tmp_path / "res" / "results.db"
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        log.start_slide("s1", model_sha256="m" * 64, station="pi-1")
        assert log.log_result("s1", _result(1, cell_count=3, uncertain=False))
        assert _count(log.path) == 1  # committed: visible to another connection
        probs = {k: np.float32(v) for k, v in PROBS.items()}
        assert log.log_result("s1", _result(2, probabilities=probs, timings={"total": 0.5}))
        assert _count(log.path) == 2
        rows = log.results("s1")
    with sqlite3.connect(tmp_path / "res" / "results.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert rows[0]["model_sha256"] == "m" * 64  # the slide's model by default
    assert rows[0]["confidence"] == pytest.approx(0.6)
    assert rows[0]["uncertain"] is False and rows[0]["cell_count"] == 3
    assert rows[1]["uncertain"] is None and rows[1]["timings"] == {"total": 0.5}
    assert rows[1]["probabilities"] == pytest.approx(PROBS)


def test_unique_key_prevents_duplicates(tmp_path):
    with ResultsLog(tmp_path) as log:
        log.start_slide("s1")
        assert log.log_result("s1", _result(1))
        assert not log.log_result("s1", _result(1, label="Pro"))
        assert log.has("s1", "f1.png", f"{1:064x}")
        assert not log.has("s1", "f1.png", "0" * 64)  # same name, new content: a new field
        assert log.log_result("s1", _result(1, image_sha256="e" * 64))
        assert log.log_error("s1", "bad.jpg", "bad.jpg: truncated image", "a" * 64)
        assert not log.log_error("s1", "bad.jpg", "bad.jpg: truncated image", "a" * 64)
        assert log.log_error("s1", "usb:0#3", "no frame")  # no image: never deduplicated
        assert log.log_error("s1", "usb:0#3", "no frame")
        log.start_slide("s2")
        assert log.log_result("s2", _result(1))  # other slide, same field
        assert [r["label"] for r in log.results("s1")] == ["Pre", "Pre", None, None, None]
        assert log.tally("s1") == {
            "slide": "s1",
            "fields": 5,
            "classified": 2,
            "errors": 3,
            "uncertain": 0,
            "labels": {"Pre": 2},
        }


def test_field_state_is_the_slides_state_and_whether_it_holds_the_field(tmp_path):
    sha = f"{1:064x}"
    with ResultsLog(tmp_path) as log:
        assert log.field_state("s1", "f1.png", sha) == (None, False)  # no such slide
        log.start_slide("s1")
        assert log.field_state("s1", "f1.png", sha) == ("open", False)
        log.log_result("s1", _result(1))
        assert log.field_state("s1", "f1.png", sha) == ("open", True)
        assert log.field_state("s1", "f1.png", "0" * 64) == ("open", False)  # new content
        assert log.field_state("s1", "f2.png", sha) == ("open", False)  # another name
        log.log_error("s1", "usb:0#3", "no frame")
        assert log.field_state("s1", "usb:0#3", None) == ("open", False)  # never deduplicated
        log.start_slide("s2")
        assert log.field_state("s2", "f1.png", sha) == ("open", False)  # other slide
        log.end_slide("s1", {"label": "Pre"})
        assert log.field_state("s1", "f1.png", sha) == ("ended", True)
        for args in (("s1", "f1.png", sha), ("s2", "f1.png", sha), ("s3", "x", None)):
            assert log.field_state(*args) == (log.state(args[0]), log.has(*args))


def test_bad_input_is_a_clear_error(tmp_path):
    with ResultsLog(tmp_path) as log:
        with pytest.raises(KeyError, match="start_slide"):
            log.log_result("nope", _result(1))
        log.start_slide("s1")
        with pytest.raises(ValueError, match=r"missing \['label'\], unknown \['lable'\]"):
            log.log_result("s1", {**_result(1, lable="Pre"), "label": None})
        with pytest.raises(KeyError, match="no slide 'x'.*latest: s1"):
            log.slide("x")
    with pytest.raises(FileNotFoundError, match="no results database"):
        ResultsLog(tmp_path / "empty", create=False)


def test_restart_continues_the_slide(tmp_path):
    with ResultsLog(tmp_path) as log:
        first = log.start_slide("s1", model_sha256="m1", operator="ab", station="pi-1")
        log.log_result("s1", _result(1))
        # killed here: the slide is still open
    time.sleep(0.01)
    with ResultsLog(tmp_path) as log:
        again = log.start_slide("s1", model_sha256="m2")
        assert again.started == first.started and again.ended is None and again.state == "open"
        assert again.operator == "ab" and again.meta == {"station": "pi-1"} and again.fields == 1
        assert again.model_sha256 == "m1"
        assert log.has("s1", "f1.png", f"{1:064x}")
        assert [s.id for s in log.slides()] == ["s1"]
        ended = log.end_slide("s1", {"label": "Pre", "text": "consistent", "refer": True})
        assert ended.state == "ended" and ended.ended is not None
        assert ended.call == {"label": "Pre", "text": "consistent", "refer": True}
    with ResultsLog(tmp_path) as log:
        with pytest.raises(SlideError, match="'s1' ended at .*reopen"):
            log.start_slide("s1")
        assert log.slide("s1").call["refer"] is True  # stored across a restart
        reopened = log.start_slide("s1", reopen=True, notes="second pass")
        assert reopened.state == "open" and reopened.ended is None and reopened.call is None
        assert reopened.started == first.started and reopened.notes == "second pass"


@pytest.mark.parametrize(
    "bad", ["", "../../../x", "a/b", "a\\b", "..", ".hidden", "-x", "x" * 65, "S 1", "é", "a\0"]
)
def test_invalid_slide_ids_are_refused(tmp_path, bad):
    with ResultsLog(tmp_path) as log:
        with pytest.raises(SlideError, match="invalid slide id.*letters, digits"):
            log.start_slide(bad)
        assert log.slides() == []
    assert validate_slide_id("S-0042_b.1") == "S-0042_b.1" and validate_slide_id("x" * 64)


def test_v1_database_is_migrated_keeping_its_rows(tmp_path):
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as con:
        for statement in _MIGRATIONS[0]:
            con.execute(statement)
        meta = json.dumps({"model": "mnv2", "operator": "ab", "source": "folder:/x"})
        con.execute("INSERT INTO slides VALUES ('old', 1.0, 2.0, 'm', ?)", (meta,))
        con.execute("INSERT INTO slides VALUES ('open', 3.0, NULL, 'm', '{}')")
        con.execute(
            "INSERT INTO results (slide, source_id, time, image_sha256, label, probabilities, "
            "confidence, uncertain) VALUES ('old', 'a.png', 1.5, 'e', 'Pre', ?, 0.6, 1)",
            (json.dumps(PROBS),),
        )
        con.execute("PRAGMA user_version = 1")
    with ResultsLog(tmp_path) as log:
        old, still_open = log.slides()
        assert (old.id, old.state, old.ended, old.model, old.operator) == (
            "old",
            "ended",
            2.0,
            "mnv2",
            "ab",
        )
        assert old.meta == {"source": "folder:/x"} and old.call is None and old.fields == 1
        assert still_open.state == "open"
        (row,) = log.results("old")
        assert row["label"] == "Pre" and row["uncertain"] is True and row["reasons"] is None
        assert row["probabilities"] == PROBS and row["frame"] is None
        assert log.log_result("open", _result(2, reasons=["low-confidence"]))
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_fields_keep_reasons_quality_and_image_for_reports(tmp_path):
    with ResultsLog(tmp_path) as log:
        log.start_slide("s1", model="tiny", model_sha256="m" * 64, operator="ab")
        rid = log.log_result(
            "s1",
            _result(
                1,
                uncertain=True,
                reasons=("low-confidence", "blurred"),
                quality={"sharpness": np.float32(12.5)},
                phash="f0" * 8,
                frame=tmp_path / "f1.png",
            ),
        )
        eid = log.log_error("s1", "bad.png", "bad.png: truncated", "b" * 64, frame="/x/bad.png")
        assert rid and eid and rid != eid
        record = log.record("s1")
        json.dumps(record)  # plain data all through
        assert record["slide"]["operator"] == "ab" and record["slide"]["model"] == "tiny"
        first, bad = record["fields"]
        assert first["id"] == rid and first["reasons"] == ["low-confidence", "blurred"]
        assert first["quality"] == {"sharpness": 12.5} and first["phash"] == "f0" * 8
        assert first["frame"] == str(tmp_path / "f1.png")
        assert bad["error"] == "bad.png: truncated" and bad["frame"] == "/x/bad.png"
        assert log.field(rid)["slide"] == "s1" and log.field(rid)["reasons"][1] == "blurred"
        with pytest.raises(KeyError, match="no field 999"):
            log.field(999)
        keys = ("id", "label", "uncertain", "error", "image_sha256", "phash", "reasons")
        assert log.outcomes("s1") == [{k: r[k] for k in keys} for r in record["fields"]]


def test_schema_versions(tmp_path):
    old = tmp_path / "old.db"
    sqlite3.connect(old).close()  # version 0: an empty database is migrated
    with ResultsLog(old) as log:
        log.start_slide("s1")
    with sqlite3.connect(old) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        con.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match=r"old\.db.*version 99 is newer.*upgrade leukedge"):
        ResultsLog(old)


def _filled(tmp_path: Path) -> Path:
    with ResultsLog(tmp_path) as log:
        log.start_slide("s1", model_sha256="m" * 64)
        log.log_result("s1", _result(1, uncertain=True, cell_count=4, timings={"infer": 0.2}))
        log.log_result("s1", _result(2, label="Pro", probabilities={"Pre": 0.3, "Pro": 0.7}))
        log.log_error("s1", "bad.png", "bad.png: grayscale image", "b" * 64)
        log.start_slide("s2")
    return tmp_path


def test_export_csv_and_json_via_cli(tmp_path):
    folder = _filled(tmp_path / "res")
    runner = CliRunner()
    out = tmp_path / "s1.csv"
    args = ["results", "export", "--slide", "s1", "--dir", str(folder)]
    result = runner.invoke(app, [*args, "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["source_id"] for r in rows] == ["f1.png", "f2.png", "bad.png"]
    assert rows[0]["p_Early"] == "0.2" and rows[1]["p_Early"] == "" and rows[1]["p_Pro"] == "0.7"
    assert rows[0]["uncertain"] == "True" and rows[0]["cell_count"] == "4"
    assert rows[2]["error"] == "bad.png: grayscale image" and rows[2]["label"] == ""
    assert rows[0]["time"][:2] == "20" and "T" in rows[0]["time"]

    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["slide"]["id"] == "s1" and doc["slide"]["model_sha256"] == "m" * 64
    assert doc["tally"]["labels"] == {"Pre": 1, "Pro": 1} and doc["tally"]["errors"] == 1
    assert doc["results"][0]["probabilities"] == PROBS

    listed = runner.invoke(app, ["results", "list", "--dir", str(folder)])
    assert listed.exit_code == 0 and "s1" in listed.stdout and "s2" in listed.stdout

    missing = runner.invoke(app, ["results", "export", "--slide", "zz", "--dir", str(folder)])
    assert missing.exit_code == 2 and "no slide 'zz'" in missing.stderr
    bad = runner.invoke(app, [*args, "--format", "xml"])
    assert bad.exit_code == 2 and "csv or json" in bad.output
    nodb = runner.invoke(app, ["results", "list", "--dir", str(tmp_path / "none")])
    assert nodb.exit_code == 2 and "no results database" in nodb.stderr


def test_default_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUKEDGE_RESULTS", str(tmp_path / "env"))
    with ResultsLog() as log:
        assert log.path == tmp_path / "env" / "results.db"


# -- SIGKILL ----------------------------------------------------------------------

LOOP = """
import sys, itertools, time
from leukedge.edge.results_log import ResultsLog
folder, total = sys.argv[1], int(sys.argv[2])
log = ResultsLog(folder)
log.start_slide("s1")
for i in (range(total) if total else itertools.count()):
    sid, sha = f"f{i}.png", f"{i:064x}"
    if not log.has("s1", sid, sha):
        log.log_result("s1", {"source_id": sid, "image_sha256": sha, "label": "Pro",
                              "probabilities": {"Pre": 0.25, "Pro": 0.75}, "cell_count": i})
"""

HOTFOLDER = """
import sys, time
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.sources import open_source
folder, db = sys.argv[1], sys.argv[2]
log = ResultsLog(db)
log.start_slide("s1")
with open_source("folder:" + folder, once=True, poll=0.01, settle=0, decode_timeout=0) as source:
    source.already_done = lambda f: "logged" if log.has("s1", f.source_id, f.sha256) else None
    for frame in source:
        if not log.has("s1", frame.source_id, frame.sha256):
            log.log_result("s1", {"source_id": frame.source_id, "image_sha256": frame.sha256,
                                  "label": "Pre", "probabilities": {"Pre": 1.0}})
            time.sleep(0.02)  # widen the window between two commits
"""


def _run_and_kill(script: str, args: list[str], db: Path, rows: int) -> None:
    """Run ``script`` in a child, SIGKILL it once ``db`` holds ``rows`` results."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args])
    try:
        deadline = time.monotonic() + 30
        while not (db.exists() and _count_safe(db) >= rows):
            assert child.poll() is None, "the child ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def _count_safe(db: Path) -> int:
    try:
        return _count(db)
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def _check_clean(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute(
            "SELECT source_id, image_sha256, label, probabilities FROM results"
        ).fetchall()
    assert all(r[2] and json.loads(r[3]) for r in rows)  # only complete rows
    assert len({r[0] for r in rows}) == len(rows)  # no duplicates
    return rows


def test_sigkill_loses_nothing_committed_and_restart_skips_done(tmp_path):
    db = tmp_path / "results.db"
    _run_and_kill(LOOP, [str(tmp_path), "0"], db, rows=30)
    done = len(_check_clean(db))
    assert done >= 30
    total = done + 20
    subprocess.run([sys.executable, "-c", LOOP, str(tmp_path), str(total)], check=True)
    rows = _check_clean(db)
    assert sorted(r[0] for r in rows) == sorted(f"f{i}.png" for i in range(total))


def test_hot_folder_fields_logged_exactly_once_across_sigkill(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(60):
        bgr = np.full((8, 8, 3), i, np.uint8)
        cv2.imwrite(str(folder / f"f{i:02d}.png"), bgr)
    db = tmp_path / "results.db"
    _run_and_kill(HOTFOLDER, [str(folder), str(db)], db, rows=10)
    _check_clean(db)
    subprocess.run([sys.executable, "-c", HOTFOLDER, str(folder), str(db)], check=True)
    rows = _check_clean(db)
    assert sorted(Path(r[0]).name for r in rows) == [f"f{i:02d}.png" for i in range(60)]


def test_crash_after_the_log_commit_is_skipped_on_restart(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((8, 8, 3), 7, np.uint8))
    log = ResultsLog(tmp_path)
    log.start_slide("s1")
    opts = {"once": True, "poll": 0.01, "settle": 0, "decode_timeout": 0}

    def done(frame):
        return "already logged" if log.has("s1", frame.source_id, frame.sha256) else None

    with open_source(f"folder:{folder}", **opts) as source:
        (frame,) = source
        log.log_result(
            "s1",
            {
                "source_id": frame.source_id,
                "image_sha256": frame.sha256,
                "label": "Pre",
                "probabilities": {"Pre": 1.0},
            },
        )
        # killed here, right after the commit
    with open_source(f"folder:{folder}", **opts) as source:
        (again,) = source  # without the log's done-state the file comes again...
        assert log.has("s1", again.source_id, again.sha256)  # ...and the log has it
    with open_source(f"folder:{folder}", **opts) as source:
        source.already_done = done
        assert list(source) == []
    assert len(log.results("s1")) == 1
    log.close()
