"""The station reading files ahead: groups of fields per model call and per commit."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import pytest

from leukedge.edge import station as station_module
from leukedge.edge.classes import CLASSES
from leukedge.edge.model import load_model
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.sources import open_source
from leukedge.edge.station import Station
from leukedge.edge.synth import synth_field

#: What a row says about its field (all but its id, time, timings and image path).
ROW = ("source_id", "image_sha256", "label", "confidence", "uncertain", "cell_count")
ROW += ("reasons", "quality", "phash", "error")


def _write_field(path: Path, i: int) -> None:
    rgb = synth_field(CLASSES[i % 4], size=(64, 64), seed=i)[0]
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _folder(folder: Path, n: int, broken: int | None = None) -> list[str]:
    """``n`` fields named in the order of their times (the folder's order); field
    ``broken`` is not an image."""
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        path = folder / f"field-{i:02d}.jpg"
        if i == broken:
            path.write_text("not an image")
        else:
            _write_field(path, i)
        os.utime(path, ns=(1_700_000_000_000_000_000 + i * 10**9,) * 2)
        names.append(path.name)
    return names


def _run(bundle: Path, folder: Path, results: Path, batch: int, **options):
    station = Station(load_model(bundle), ResultsLog(results), batch=batch)
    reported = []
    source = open_source(f"folder:{folder}", once=True, settle=0, decode_timeout=0, **options)
    station.run(source, slide_id="S", on_result=reported.append)
    rows = station.log.results("S")
    station.log.close()
    return rows, [r.result.source for r in reported]


@pytest.mark.parametrize("ahead", [station_module.READ_AHEAD_BYTES, 1])  # 1: one frame ahead
def test_groups_log_the_rows_of_one_at_a_time_in_file_order(
    tiny_bundle, tmp_path, monkeypatch, ahead
):
    monkeypatch.setattr(station_module, "READ_AHEAD_BYTES", ahead)
    names = _folder(tmp_path / "scans", 11, broken=5)
    one, one_reported = _run(tiny_bundle, tmp_path / "scans", tmp_path / "one", batch=1)
    grouped, reported = _run(tiny_bundle, tmp_path / "scans", tmp_path / "grouped", batch=4)
    assert [Path(r["source_id"]).name for r in grouped] == names  # logged in file order
    assert reported == one_reported == [r["source_id"] for r in grouped]  # reported so too
    assert [{k: r[k] for k in ROW} for r in grouped] == [{k: r[k] for k in ROW} for r in one]
    for a, b in zip(grouped, one):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    broken = grouped[5]
    assert broken["label"] is None and "field-05.jpg" in broken["error"]
    assert all(r["error"] is None for i, r in enumerate(grouped) if i != 5)


def test_a_field_arriving_alone_is_committed_without_waiting_for_a_group(tiny_bundle, tmp_path):
    folder, results = tmp_path / "in", tmp_path / "results"
    folder.mkdir()
    station = Station(load_model(tiny_bundle), ResultsLog(results), batch=16)
    source = open_source(f"folder:{folder}", poll=0.05, settle=0)
    run = threading.Thread(target=station.run, args=(source,), kwargs={"slide_id": "L"})
    run.start()
    other = ResultsLog(results)  # another connection: it sees committed rows only
    try:
        _write_field(folder / "alone.jpg", 0)
        deadline = time.monotonic() + 30
        while not other.results("L"):
            assert time.monotonic() < deadline, "the field was not committed"
            time.sleep(0.02)
        assert run.is_alive()  # committed while the folder is still watched
    finally:
        source.stop()
        run.join(30)
        other.close()
    assert [Path(r["source_id"]).name for r in station.log.results("L")] == ["alone.jpg"]


def test_stop_leaves_the_fields_read_ahead_for_the_next_run(tiny_bundle, tmp_path):
    names = _folder(tmp_path / "scans", 12)
    results = tmp_path / "results"
    station = Station(load_model(tiny_bundle), ResultsLog(results), batch=4)
    source = open_source(f"folder:{tmp_path / 'scans'}", once=True, settle=0)
    station.run(source, slide_id="S", on_result=lambda logged: station.stop())
    first = [Path(r["source_id"]).name for r in station.log.results("S")]
    assert first == names[:4]  # the first group, committed before it was reported
    assert station.log.slide("S").state == "open"  # stopped: the slide goes on
    station.log.close()
    rows, _ = _run(tiny_bundle, tmp_path / "scans", results, batch=4)
    assert [Path(r["source_id"]).name for r in rows] == names  # each once, none lost


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3)])
def test_unset_threads_leave_a_core_beside_the_model(
    tiny_bundle, tmp_path, monkeypatch, cores, threads
):
    from leukedge.edge import config as config_module
    from leukedge.edge.config import StationConfig

    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    asked = []

    def load(bundle, backend, n, **kwargs):
        asked.append(n)
        return load_model(bundle, backend, n, **kwargs)

    monkeypatch.setattr(station_module, "load_model", load)
    cfg = StationConfig(model=str(tiny_bundle), results_dir=str(tmp_path / "r"))
    Station.from_config(cfg)
    Station.from_config(StationConfig(**{**cfg.__dict__, "threads": 2}))
    assert asked == [threads, 2]
