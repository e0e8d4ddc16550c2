"""The station: model loading, the field pipeline, the slide call and ``leukedge run``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_tiny_bundle
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.bundle import BundleError, read_manifest
from leukedge.edge.classes import CLASSES
from leukedge.edge.model import load_model
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.preprocess import prepare
from leukedge.edge.results_log import ResultsLog, SlideError
from leukedge.edge.slide import SlideTally
from leukedge.edge.sources import Frame, open_source
from leukedge.edge.station import Station, end_logged_slide
from leukedge.edge.synth import synth_field


def _fields_folder(folder: Path, n: int) -> list[Path]:
    """``n`` good synthetic fields as JPEG files (the same with or without ../shared: the
    station's mechanics are tested here; real fields are judged in test_default_model)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        dst = folder / f"field-{i:03d}.jpg"
        rgb = synth_field(CLASSES[i % 4], size=(64, 64), seed=i)[0]
        cv2.imwrite(str(dst), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(dst)
    return paths


def _broken_files(folder: Path) -> dict[str, str]:
    good = cv2.imencode(".jpg", np.full((40, 40, 3), 200, np.uint8))[1].tobytes()
    (folder / "bad-truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "bad-empty.jpg").write_bytes(b"")
    (folder / "bad-text.png").write_text("not an image")
    cv2.imwrite(str(folder / "bad-gray.png"), np.zeros((16, 16), np.uint8))
    cv2.imwrite(str(folder / "bad-rgba.png"), np.zeros((16, 16, 4), np.uint8))
    cv2.imwrite(str(folder / "bad-deep.png"), np.zeros((16, 16, 3), np.uint16))
    return {
        "bad-truncated.jpg": "truncated",
        "bad-empty.jpg": "empty",
        "bad-text.png": "not a readable image",
        "bad-gray.png": "grayscale",
        "bad-rgba.png": "alpha",
        "bad-deep.png": "16-bit",
    }


def test_loader_matches_direct_onnxruntime(tiny_bundle):
    ort = pytest.importorskip("onnxruntime")
    model = load_model(tiny_bundle)
    field = synth_field("Pre", size=(80, 100), seed=3)[0]
    pred = model.predict(field)
    x = prepare(field, model.preprocess)[None]
    sess = ort.InferenceSession(str(tiny_bundle / "model.onnx"))
    direct = sess.run(None, {"images": x})[0][0]
    np.testing.assert_allclose([pred.probabilities[c] for c in CLASSES], direct, atol=1e-6)
    assert pred.label == CLASSES[int(np.argmax(direct))]
    assert abs(sum(pred.probabilities.values()) - 1) < 1e-5
    assert set(pred.timings_ms) == {"preprocess", "infer", "trust"}


def test_tampered_bundle_is_refused_naming_the_file(tiny_bundle):
    path = tiny_bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx: SHA-256 mismatch"):
        load_model(tiny_bundle)
    result = CliRunner().invoke(
        app, ["run", "--source", "synthetic?n=1", "--model", str(tiny_bundle), "--slide", "s"]
    )
    assert result.exit_code == 2
    assert "model.onnx" in result.output and "refused" in result.output


def test_manifest_round_trip(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    assert manifest["classes"] == list(CLASSES)
    assert set(manifest["files"]) == {"model.onnx"}
    assert load_model(tiny_bundle / "leukedge.json").classes == CLASSES


def test_pipeline_flags_blank_field_and_reports_errors(tiny_bundle):
    pipeline = FieldPipeline(load_model(tiny_bundle))
    good = pipeline(Frame("good", rgb=synth_field("Pro", size=(64, 64), seed=0)[0]))
    assert good.error is None and good.cell_count >= 1
    assert set(good.timings_ms) == {"gate", "segment", "preprocess", "infer", "trust"}
    blank = pipeline(Frame("blank", rgb=np.full((64, 64, 3), 255, np.uint8)))
    assert blank.uncertain and {"no-cell", "out-of-distribution"} <= set(blank.reasons)
    bad = pipeline(Frame("bad.jpg", error="bad.jpg: truncated image"))
    assert bad.to_json() == {"source": "bad.jpg", "error": "bad.jpg: truncated image"}


@pytest.mark.parametrize(
    ("outcomes", "call"),
    [
        ([("Pro", False)] * 9 + [("Pre", False)], "Pro"),
        ([("Pro", False)] * 5 + [("Pre", False)] * 5, None),  # mixed
        ([("Pro", False)] * 6 + [("Pro", True)] * 4, None),  # too many uncertain
        ([("Benign", False)] * 2, None),  # too few fields
        ([(None, False)] * 3, None),  # errors only
    ],
)
def test_slide_call_rule(outcomes, call):
    tally = SlideTally("s")
    for label, uncertain in outcomes:
        tally.add(label, uncertain, error=label is None)
    got, text = tally.call()
    assert got == call
    assert ("refer to a haematologist" in text) == (call != "Benign")
    assert "not a diagnosis" in tally.summary()["notice"]


def test_run_hot_folder_with_broken_files(tiny_bundle, tmp_path):
    folder = tmp_path / "scans"
    good = _fields_folder(folder, 6)
    bad = _broken_files(folder)
    results = tmp_path / "results"
    args = ["run", "--source", f"folder:{folder}?decode_timeout=0.5", "--once", "--slide", "S1"]
    args += ["--model", str(tiny_bundle), "--results-dir", str(results), "--json-lines"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]  # JSON only
    fields = lines  # stdout holds field records only; the summary goes to stderr
    assert sorted(Path(x["source"]).name for x in fields if "label" in x) == [p.name for p in good]
    errors = {Path(x["source"]).name: x["error"] for x in fields if "error" in x}
    assert set(errors) == set(bad)
    for name, problem in bad.items():
        assert name in errors[name] and problem in errors[name]
    for x in fields:
        if "label" in x:
            assert {"label", "probabilities", "confidence", "uncertain", "source"} <= set(x)
    assert len(fields) == len(good) + len(bad)
    assert f"fields {len(good) + len(bad)}, uncertain" in result.stderr
    assert f"errors {len(bad)}" in result.stderr and "slide call:" in result.stderr
    db = sqlite3.connect(results / "results.db")
    rows = db.execute("select source_id, label, error from results where slide='S1'").fetchall()
    assert len(rows) == len(good) + len(bad)
    assert sum(r[2] is not None for r in rows) == len(bad)


#: Runs ``leukedge run`` with a crash (``os._exit``: no cleanup, no flush, as abrupt as
#: SIGKILL) after the K-th return of one step: CRASH_AT="after-inference:K" (a group of
#: fields classified, not logged), "after-log:K" (the K-th row written in its group's
#: transaction, not committed) or "after-commit:K" (the K-th group committed, not yet
#: reported). Fixed points: an ordering bug fails every time, not when a timed kill happens
#: to land between two steps.
CRASHING_RUN = """
import os, sys
from leukedge.cli import app
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.station import Station

point, k = os.environ["CRASH_AT"].split(":")
owner, name = {"after-inference": (FieldPipeline, "classify"),
               "after-log": (ResultsLog, "log_result"),
               "after-commit": (Station, "_classify_and_log")}[point]
step, calls = getattr(owner, name), [0]

def crashing(*args, **kwargs):
    out = step(*args, **kwargs)
    calls[0] += 1
    if calls[0] == int(k):
        os._exit(75)
    return out

setattr(owner, name, crashing)
app(sys.argv[1:], prog_name="leukedge")
"""


@pytest.mark.parametrize(
    ("batch", "point", "k", "logged"),
    [
        (1, "after-inference", 4, 3),  # classified, not logged: done again after the restart
        (1, "after-log", 4, 3),  # written, not committed: the same
        (1, "after-commit", 4, 4),  # logged, not counted: counted from the log after the restart
        (3, "after-inference", 2, 3),  # groups of 3: the second classified, not logged
        (3, "after-log", 5, 3),  # killed mid-group: nothing of it kept, nothing marked done
        (3, "after-commit", 2, 6),
        (3, "after-log", 8, 6),  # the copy of an earlier field written, not committed
    ],
)
def test_crash_at_each_step_then_restart_loses_and_duplicates_nothing(
    tiny_bundle, tmp_path, batch, point, k, logged
):
    folder, results = tmp_path / "scans", tmp_path / "results"
    _fields_folder(folder, 7)
    (folder / "field-007-copy.jpg").write_bytes((folder / "field-002.jpg").read_bytes())
    args = ["run", "--source", f"folder:{folder}", "--once", "--slide", "K"]
    args += ["--model", str(tiny_bundle), "--results-dir", str(results), "--batch", str(batch)]
    cmd = [sys.executable, "-c", CRASHING_RUN, *args]
    env = {**os.environ, "CRASH_AT": f"{point}:{k}"}
    crashed = subprocess.run([*cmd, "--json-lines"], env=env, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert crashed.returncode == 75, crashed.stderr
    log = ResultsLog(results)
    assert len(log.results("K")) == logged and log.slide("K").state == "open"
    reported = {json.loads(line)["source"] for line in crashed.stdout.splitlines()}
    assert reported <= {r["source_id"] for r in log.results("K")}  # only what is logged
    log.close()
    restart = [sys.executable, "-m", "leukedge.cli", *args]
    again = subprocess.run(restart, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    log = ResultsLog(results)
    rows, info = log.results("K"), log.slide("K")
    names = sorted(Path(r["source_id"]).name for r in rows)
    assert names == sorted(p.name for p in folder.iterdir())  # each field once, none lost
    assert all(r["error"] is None and r["label"] in CLASSES for r in rows)
    stored = {Path(r["source_id"]).name: r["reasons"] or [] for r in rows}
    assert "duplicate" in stored["field-007-copy.jpg"]
    assert not any("duplicate" in v for n, v in stored.items() if n != "field-007-copy.jpg")
    assert info.state == "ended" and info.call["figures"]["fields"] == 8
    assert info.call["figures"]["duplicates"] == 1
    log.close()


def test_model_file_missing_from_manifest_files_is_refused(tiny_bundle):
    manifest_path = tiny_bundle / "leukedge.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {"notes.txt": "0" * 64}  # lists a file, not the model's
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'model\.onnx' is not listed in files"):
        load_model(tiny_bundle)


# -- the Station: slides, hot folder, restarts ---------------------------------------


def _frames(n: int, start: int = 0, name: str = "cam") -> list[Frame]:
    return [
        Frame(f"{name}#{i}", rgb=synth_field(CLASSES[i % 4], size=(64, 64), seed=i)[0])
        for i in range(start, start + n)
    ]


def _station(bundle, results, **kw) -> Station:
    return Station(load_model(bundle), ResultsLog(results), **kw)


def test_slide_lifecycle_start_capture_restart_end(tiny_bundle, tmp_path):
    results = tmp_path / "results"
    station = _station(tiny_bundle, results, frames_dir=tmp_path / "frames")
    info = station.open_slide("S-0042", operator="ab", notes="first smear")
    assert (info.state, info.operator, info.model) == ("open", "ab", "tiny-test")
    assert info.model_sha256 == station.model.sha256
    ids = [station.process(f).id for f in _frames(3)]
    assert len(set(ids)) == 3 and all(ids)
    assert station.process(_frames(1)[0]) is None  # the same field again: not counted twice
    station.log.close()  # "killed" mid-slide: no end

    again = _station(tiny_bundle, results, frames_dir=tmp_path / "frames")
    assert again.open_slide("S-0042").fields == 3  # a restart continues the slide
    logged = [again.process(f) for f in _frames(2, start=3)]
    assert [x.slide for x in logged] == ["S-0042"] * 2
    running = again.slide("S-0042")
    assert running["tally"]["fields"] == 5 and running["slide"]["call"] is None
    call = again.end_slide("S-0042")
    assert call["text"] == running["tally"]["explanation"]
    assert call["refer"] == ("refer to a haematologist" in call["text"])
    assert call["figures"]["fields"] == 5 and call["figures"]["rule"]["min_fields"] == 3
    stored = again.log.slide("S-0042")
    assert stored.state == "ended" and stored.call == call and stored.ended >= stored.started
    assert again.end_slide("S-0042") == call  # ending again returns the stored call
    fields = again.slide("S-0042")["fields"]
    assert [f["id"] for f in fields] == [*ids, *(x.id for x in logged)]
    assert all(isinstance(f["reasons"], list) for f in fields)
    assert all(Path(f["frame"]).is_file() for f in fields)  # saved frames, for reports
    assert Path(fields[0]["frame"]).parent == tmp_path / "frames" / "S-0042"
    with pytest.raises(SlideError, match="ended"):
        again.process(_frames(1, start=9)[0], "S-0042")
    with pytest.raises(SlideError, match="ended"):
        again.open_slide("S-0042")
    assert again.open_slide("S-0042", reopen=True).state == "open"
    with pytest.raises(SlideError, match="no open slide"):
        _station(tiny_bundle, tmp_path / "other").process(_frames(1)[0])


def test_a_slide_is_continued_only_with_its_model(tiny_bundle, tmp_path):
    station = _station(tiny_bundle, tmp_path / "r")
    station.open_slide("S-1")
    station.process(_frames(1)[0])
    other = write_tiny_bundle(tmp_path / "other", size=16)
    with pytest.raises(SlideError, match="started with model tiny-test .* new slide id"):
        _station(other, tmp_path / "r").open_slide("S-1")


@pytest.mark.parametrize("bad", ["../../../x", "a/b", "..", ".x", "x" * 65, "S 1"])
def test_invalid_slide_ids_are_refused_and_nothing_escapes(tiny_bundle, tmp_path, bad):
    station = _station(tiny_bundle, tmp_path / "r", frames_dir=tmp_path / "r" / "frames")
    with pytest.raises(SlideError, match="invalid slide id"):
        station.open_slide(bad)
    with pytest.raises(SlideError, match="invalid slide id"):
        station.run(_frames(1), slide_id=bad)
    args = ["run", "--source", "synthetic?n=1", "--model", str(tiny_bundle), "--slide", bad]
    args += ["--results-dir", str(tmp_path / "r"), "--save-frames", str(tmp_path / "r" / "f")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "invalid slide id" in result.stderr
    assert "Traceback" not in result.output
    assert station.log.slides() == []
    assert not (tmp_path / "x").exists() and not list(tmp_path.rglob("*.png"))


def test_hot_folder_subfolders_end_marker_idle_end_and_restart(tiny_bundle, tmp_path, caplog):
    incoming, results = tmp_path / "incoming", tmp_path / "results"
    _fields_folder(incoming / "S-0042", 3)
    _fields_folder(incoming / "S-0043", 2)
    _fields_folder(incoming, 1)  # top level: the run's slide
    (incoming / "S-0042" / "END").write_text("")

    def run(slide_id=None, stop=lambda fields, ended: False, **options):
        station = _station(tiny_bundle, results)
        source = open_source(f"folder:{incoming}", poll=0.02, settle=0, decode_timeout=0, **options)
        fields, ended = [], {}

        def check():
            if stop(fields, ended):
                source.stop()

        timer = threading.Timer(20, source.stop)
        timer.start()
        touched = station.run(
            source,
            slide_id=slide_id,
            on_result=lambda f: (fields.append(f), check()),
            on_slide_end=lambda s, call: (ended.update({s: call}), check()),
        )
        timer.cancel()
        return station, touched, ended

    station, touched, ended = run("TOP", stop=lambda fields, ended: len(fields) == 6 and ended)
    assert sorted(touched) == ["S-0042", "S-0043", "TOP"] and list(ended) == ["S-0042"]
    first = station.log.slide("S-0042")
    assert (
        first.call == ended["S-0042"] and first.fields == 3 and first.meta == {"origin": "folder"}
    )
    assert station.log.slide("S-0043").state == station.log.slide("TOP").state == "open"

    # a restart: open slides go on, nothing is processed twice, the operator is told why
    _fields_folder(incoming / "S-0044", 1)
    caplog.clear()
    station, touched, ended = run("TOP", once=True)
    assert touched == ["S-0044"] and list(ended) == ["TOP"]  # --once: the run's slide ends
    assert "skipped 2 file(s): already logged in slide S-0043" in caplog.text
    assert "skipped 1 file(s): already logged in slide TOP" in caplog.text
    assert "skipped 3 file(s): slide S-0042 has ended (a new slide needs a new name)" in caplog.text
    assert station.log.slide("S-0044").state == station.log.slide("S-0043").state == "open"

    # idle slides end; the top-level file stays with TOP (ended), not swept into a new slide
    caplog.clear()
    station, touched, ended = run(idle_end=0.3, stop=lambda fields, ended: len(ended) == 2)
    assert touched == ["S-0043", "S-0044"] and sorted(ended) == ["S-0043", "S-0044"]
    assert "skipped 1 file(s): already logged in slide TOP" in caplog.text
    assert all(s.state == "ended" and s.call for s in station.log.slides())
    assert sum(s.fields for s in station.log.slides()) == 7


def test_results_show_reproduces_the_call_the_station_printed(tiny_bundle, tmp_path):
    folder = tmp_path / "scans"
    _fields_folder(folder, 5)
    results = tmp_path / "results"
    args = ["run", "--source", f"folder:{folder}", "--once", "--slide", "S-7"]
    result = CliRunner().invoke(
        app, [*args, "--model", str(tiny_bundle), "--results-dir", str(results)]
    )
    assert result.exit_code == 0, result.output
    (printed,) = [x for x in result.stderr.splitlines() if x.startswith("slide call:")]
    shown = CliRunner().invoke(app, ["results", "show", "S-7", "--dir", str(results)])
    assert shown.exit_code == 0, shown.output
    assert printed in shown.stdout.splitlines()
    counts = ResultsLog(results).tally("S-7")["labels"]
    for label, n in counts.items():
        assert any(label in x and str(n) in x for x in shown.stdout.splitlines())
    listed = CliRunner().invoke(app, ["results", "list", "--dir", str(results)])
    assert "ended" in listed.stdout
    missing = CliRunner().invoke(app, ["results", "show", "nope", "--dir", str(results)])
    assert missing.exit_code == 2 and "no slide 'nope'" in missing.stderr


def test_ending_a_slide_from_outside_moves_a_running_station_to_a_new_slide(tiny_bundle, tmp_path):
    station = _station(tiny_bundle, tmp_path / "r")
    first_two, ended_outside = threading.Event(), threading.Event()

    def camera():  # a camera that keeps going while the technician ends the slide
        yield from _frames(2)
        first_two.set()
        assert ended_outside.wait(20)
        yield from _frames(2, start=2)

    def technician():
        assert first_two.wait(20)
        with ResultsLog(tmp_path / "r") as other:  # `leukedge results end` in another process
            (slide,) = [s.id for s in other.slides()]
            end_logged_slide(other, slide)
        ended_outside.set()

    thread = threading.Thread(target=technician)
    thread.start()
    touched = station.run(camera())
    thread.join()
    first, second = station.log.slides()
    assert touched == [first.id, second.id] and first.id != second.id
    assert (first.fields, second.fields) == (2, 2)
    assert first.state == second.state == "ended" and first.call["figures"]["fields"] == 2
    assert first.ended < second.started
    result = CliRunner().invoke(app, ["results", "end", first.id, "--dir", str(tmp_path / "r")])
    assert result.exit_code == 0 and first.call["text"] in result.stdout  # as stored


def test_top_level_end_marker_ends_the_slide_and_its_files_stay_with_it(tiny_bundle, tmp_path):
    incoming, results = tmp_path / "in", tmp_path / "r"
    _fields_folder(incoming, 2)
    (incoming / "END").write_text("")
    fast = {"poll": 0.02, "settle": 0, "decode_timeout": 0}
    station = _station(tiny_bundle, results)
    ended = []
    source = open_source(f"folder:{incoming}", once=True, **fast)
    (first,) = station.run(source, on_slide_end=lambda s, call: ended.append(s))
    assert ended == [first] and first.startswith("slide-")
    assert station.log.slide(first).fields == 2

    # a restart with the old marker still there: a new file starts a new slide, the old
    # files stay with the ended one and the stale marker does not end the new slide
    time.sleep(1.1)  # a new slide name (the pattern has 1 s resolution)
    _fields_folder(tmp_path / "more", 3)
    os.replace(tmp_path / "more" / "field-002.jpg", incoming / "late.jpg")
    station = _station(tiny_bundle, results)
    source = open_source(f"folder:{incoming}", **fast)
    timer = threading.Timer(20, source.stop)
    timer.start()
    touched = station.run(source, on_result=lambda f: threading.Timer(0.3, source.stop).start())
    timer.cancel()
    (second,) = touched
    assert second != first and station.log.slide(second).state == "open"
    assert [Path(f["source_id"]).name for f in station.log.results(second)] == ["late.jpg"]


def test_station_is_safe_from_several_threads(tiny_bundle, tmp_path):
    """A web server's handlers capture and read while another capture runs."""
    station = _station(tiny_bundle, tmp_path / "r")
    station.open_slide("S-1")
    frames, failures = _frames(12), []

    def guarded(work):
        try:
            work()
        except Exception as exc:  # reported by the assertion below
            failures.append(exc)

    def capture(chunk):
        return lambda: [station.process(f) for f in chunk]

    def read():
        for _ in range(20):
            station.slide("S-1")

    jobs = [capture(frames[0::2]), capture(frames[1::2]), capture(frames[:4]), read]
    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    record = station.slide("S-1")
    assert record["tally"]["fields"] == len(record["fields"]) == 12  # the repeats once


def test_a_copied_field_is_stored_as_duplicate_and_never_evidence(tiny_bundle, tmp_path):
    station = _station(tiny_bundle, tmp_path / "r")
    station.open_slide("S-1")
    (frame,) = _frames(1)
    first = station.process(frame)
    copy = station.process(Frame("cam#copy", rgb=frame.rgb.copy()))  # same pixels, new name
    assert "duplicate" not in first.result.reasons and "duplicate" in copy.result.reasons
    stored = {f["id"]: f["reasons"] for f in station.log.results("S-1")}
    assert "duplicate" in stored[copy.id] and "duplicate" not in stored[first.id]
    running = station.slide("S-1")["tally"]
    assert running["duplicates"] == 1 and running["fields"] == 2
    again = _station(tiny_bundle, tmp_path / "r")  # a restart rebuilds the same tally
    again.open_slide("S-1")
    assert again.slide("S-1")["tally"] == running
    assert again.end_slide("S-1")["figures"]["duplicates"] == 1
