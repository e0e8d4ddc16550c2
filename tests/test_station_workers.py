"""Worker processes classifying a station's files: same rows, and never a lost field."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import Future
from pathlib import Path

import cv2
import pytest
from test_station_batch import ROW, _folder

from leukedge.edge import station as station_module
from leukedge.edge.classes import CLASSES
from leukedge.edge.config import ConfigError, StationConfig, load_config
from leukedge.edge.model import load_model
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.sources import open_source
from leukedge.edge.station import Station
from leukedge.edge.synth import synth_field

#: Long enough for a worker to import leukedge and load a model on a loaded CI machine.
START_S = 120


def _station(bundle: Path, results: Path, workers: int) -> Station:
    return Station(load_model(bundle), ResultsLog(results), batch=4, workers=workers)


def _run(station: Station, folder: Path) -> list[dict]:
    source = open_source(f"folder:{folder}", once=True, settle=0, decode_timeout=0)
    station.run(source, slide_id="S")
    return station.log.results("S")


def _in_process(station: Station, monkeypatch) -> list[int]:
    """Count the fields this process classifies itself."""
    fields = []
    classify = station.pipeline.classify

    def counted(analyses):
        fields.append(len(analyses))
        return classify(analyses)

    monkeypatch.setattr(station.pipeline, "classify", counted)
    return fields


def test_workers_log_the_rows_this_process_logs_in_file_order(tiny_bundle, tmp_path, monkeypatch):
    names = _folder(tmp_path / "scans", 14, broken=6)
    alone = _station(tiny_bundle, tmp_path / "alone", workers=0)
    one = _run(alone, tmp_path / "scans")
    station = _station(tiny_bundle, tmp_path / "pooled", workers=2)
    try:
        assert station.start_workers(wait=START_S)
        here = _in_process(station, monkeypatch)
        rows = _run(station, tmp_path / "scans")
    finally:
        station.close()
    assert here == []  # every group went to the workers
    assert [Path(r["source_id"]).name for r in rows] == names
    assert [{k: r[k] for k in ROW} for r in rows] == [{k: r[k] for k in ROW} for r in one]
    for a, b in zip(rows, one):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    assert "field-06.jpg" in rows[6]["error"]


def test_workers_that_die_leave_their_groups_to_this_process(
    tiny_bundle, tmp_path, monkeypatch, caplog
):
    names = _folder(tmp_path / "scans", 10)
    station = _station(tiny_bundle, tmp_path / "results", workers=2)
    try:
        assert station.start_workers(wait=START_S)
        for worker in station._workers._workers:
            worker.proc.kill()
            worker.proc.wait()
        here = _in_process(station, monkeypatch)
        with caplog.at_level(logging.WARNING, logger="leukedge"):
            rows = _run(station, tmp_path / "scans")
    finally:
        station.close()
    assert [Path(r["source_id"]).name for r in rows] == names  # each once, none lost
    assert all(r["error"] is None for r in rows)
    assert sum(here) == len(names)
    assert "worker processes stopped (a worker process ended" in caplog.text


def test_a_worker_that_cannot_load_the_model_says_why_and_the_station_goes_on(
    tiny_bundle, tmp_path, caplog
):
    bundle = tmp_path / "copy"
    shutil.copytree(tiny_bundle, bundle)
    names = _folder(tmp_path / "scans", 9)
    station = _station(bundle, tmp_path / "results", workers=1)
    model_file = station.model.model_file
    model_file.write_bytes(model_file.read_bytes() + b"changed")  # after the station loaded it
    try:
        assert not station.start_workers(wait=START_S)
        with caplog.at_level(logging.WARNING, logger="leukedge"):
            rows = _run(station, tmp_path / "scans")
    finally:
        station.close()
    assert [Path(r["source_id"]).name for r in rows] == names
    assert "could not load the model" in caplog.text and "SHA-256" in caplog.text
    assert not station.start_workers()  # not started again by this station


class _Starting:
    """Workers that never get ready: the run goes on without them."""

    ready, failure = False, None

    def __init__(self, *args):
        STARTED.append(args)

    def wait_ready(self, timeout):
        return False

    def close(self):
        pass


STARTED: list = []


def test_workers_start_for_a_watched_folder_or_a_long_backlog(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(station_module, "FieldWorkers", _Starting)
    STARTED.clear()
    _folder(tmp_path / "scans", 9)

    def started_by(**options) -> bool:
        STARTED.clear()
        station = Station(load_model(tiny_bundle), ResultsLog(":memory:"), batch=4, workers=2)
        source = open_source(f"folder:{tmp_path / 'scans'}", settle=0, **options)
        logged = []

        def on_result(field):
            logged.append(field)
            if len(logged) == 9:
                source.stop()

        station.run(source, slide_id="S", on_result=on_result)
        assert len(logged) == 9
        return bool(STARTED)

    assert not started_by(once=True)  # 9 fields: the workers' start would cost more
    assert started_by(poll=0.05)  # a watched folder: a station that runs on
    monkeypatch.setattr(station_module, "WORKERS_BACKLOG", 6)  # 6 to go at the 1st full group
    assert started_by(once=True)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 2), (4, 4)])
def test_unset_workers_are_one_per_core_from_two(
    tiny_bundle, tmp_path, monkeypatch, cores, workers
):
    from leukedge.edge import config as config_module

    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(config_module.os, "cpu_count", lambda: cores)
    cfg = StationConfig(model=str(tiny_bundle), results_dir=str(tmp_path / "r"))
    assert Station.from_config(cfg).workers == workers
    assert Station.from_config(StationConfig(**{**cfg.__dict__, "workers": 0})).workers == 0
    path = tmp_path / "station.toml"
    path.write_text(f"workers = {cores + 1}\n")
    with pytest.raises(ConfigError, match=r"station.toml: key 'workers' must be an integer in 0"):
        load_config(path)


def test_workers_that_cannot_be_started_leave_the_run_to_this_process(
    tiny_bundle, tmp_path, monkeypatch, caplog
):
    from leukedge.edge import workers as workers_module

    monkeypatch.setattr(workers_module.sys, "executable", str(tmp_path / "no-python"))
    names = _folder(tmp_path / "scans", 9)
    station = _station(tiny_bundle, tmp_path / "results", workers=2)
    with caplog.at_level(logging.WARNING, logger="leukedge"):
        assert not station.start_workers(wait=START_S)
        rows = _run(station, tmp_path / "scans")
    assert [Path(r["source_id"]).name for r in rows] == names
    assert "cannot start a worker process" in caplog.text and "no-python" in caplog.text


class _InProcess:
    """Workers that classify each group at once in this process, recording its frames."""

    ready, failure, pids = True, None, []

    def __init__(self, pipeline, processes):
        self.pipeline, self.groups = pipeline, []
        GROUPS.append(self.groups)

    def submit(self, frames):
        self.groups.append([Path(f.source_id).name for f in frames])
        future = Future()
        future.set_result(self.pipeline.classify([self.pipeline.analyse(f) for f in frames]))
        return future

    def wait_ready(self, timeout):
        return True

    def close(self):
        pass


GROUPS: list = []


def test_a_group_for_the_workers_holds_a_batch_of_fields_not_of_frames(
    tiny_bundle, tmp_path, monkeypatch
):
    monkeypatch.setattr(station_module, "FieldWorkers", _InProcess)
    GROUPS.clear()
    folder = tmp_path / "scans"
    folder.mkdir()
    sizes = [64, 64, 64, 700, 700, 700, 64]  # 700 px: a camera frame's worth of fields
    for i, side in enumerate(sizes):
        rgb = synth_field(CLASSES[i % 4], size=(side, side), seed=i)[0]
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        os.utime(folder / f"f{i}.png", ns=(1_700_000_000_000_000_000 + i * 10**9,) * 2)
    station = Station(load_model(tiny_bundle), ResultsLog(":memory:"), batch=12, workers=2)
    assert station.start_workers()
    rows = _run(station, folder)
    assert len(rows) == len(sizes) and all(r["error"] is None for r in rows)
    # 64 px: one field each; 700 px: MAX_TILES (9) each, so a large frame closes a group
    assert GROUPS == [[["f0.png", "f1.png", "f2.png", "f3.png"], ["f4.png", "f5.png"], ["f6.png"]]]
