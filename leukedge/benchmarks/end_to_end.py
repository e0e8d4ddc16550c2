"""End to end, stage by stage: decode -> gate -> segment -> preprocess -> infer -> trust;
and a folder's throughput, file to logged result.

Each bundle runs the station's own ``FieldPipeline`` (robust segmentation) on encoded
224 px fields (the data folder's JPEGs, else generated fields as JPEG) and on
generated 2028x1520 camera frames (JPEG), with one OpenCV and one inference thread.

``folder`` times what ``leukedge run --source folder:DIR --once`` does with a folder of
224 px JPEG fields, from reading each file to its committed row in a results log: with one
thread (each field read, decoded, gated, segmented, classified and logged in turn); with
two (the station reads ahead on a second thread while the model, on one thread,
classifies groups of ``station.BATCH`` fields, one commit each); and with two worker
processes (``leukedge.edge.workers``: groups gated, segmented and classified there, read,
admitted and logged by the station), started and warmed before timing, as in a station
that runs on (a watched folder). Each setting is one station, warmed on the folder, that
logs each round as a new slide; settings alternate in each of ``FOLDER_REPEATS`` rounds;
each row gives the median and range of fields per second and of CPU time per field (all
threads and worker processes; the workers' from ``/proc``, so Linux only), with the
1-minute load average.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from ..edge.classes import CLASSES
from ..edge.imageio import decode_field
from ..edge.model import load_model
from ..edge.pipeline import FieldPipeline
from ..edge.results_log import ResultsLog
from ..edge.sources.base import Frame
from ..edge.sources.hotfolder import FolderSource
from ..edge.station import BATCH, Station
from ..edge.synth import synth_field
from .segmentation import FRAME

#: The pipeline's own stages (``FieldResult.timings_ms``) after decoding: the trust gate
#: (scale, quality, tiles, perceptual hash), segmentation, preprocessing, inference and the
#: model's trust step (calibration, feature distance).
STAGES = ("decode", "gate", "segment", "preprocess", "infer", "trust")


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


#: (threads, fields per group, worker processes) of the folder throughput settings (module
#: doc); with workers, ``threads`` is the number of them.
FOLDER_SETTINGS = ((1, 1, 0), (2, BATCH, 0), (2, BATCH, 2))
#: Rounds of the folder settings, and fields in the folder (quick: 1 round of 8).
FOLDER_REPEATS, FOLDER_FIELDS = 3, 400


def taleqani_jpegs(data_dir: Path, n: int) -> list[bytes]:
    """The bytes of ``n`` fields spread evenly over the Taleqani folder's ``Original/*/*.jpg``
    (sorted: every class, the same files every run); empty without the data."""
    files = sorted((Path(data_dir) / "Original").glob("*/*.jpg"))
    return [p.read_bytes() for p in files[:: max(1, len(files) // n)][:n]]


def inputs(data_dir: Path, quick: bool) -> dict[str, list[bytes]]:
    """Encoded inputs: ``field_224`` and ``frame_2028x1520``."""
    n = 4 if quick else 60
    fields = taleqani_jpegs(data_dir, n)
    if not fields:
        fields = [_jpeg(synth_field(CLASSES[i % 4], seed=i)[0]) for i in range(n)]
    frames = [
        _jpeg(synth_field(CLASSES[i % 4], size=FRAME, seed=i)[0]) for i in range(1 if quick else 2)
    ]
    return {"field_224": fields, "frame_2028x1520": frames * (1 if quick else 4)}


def stage_times(pipeline: FieldPipeline, encoded: list[bytes]) -> dict:
    """Median ms of each stage, of the rest of the call (``other``: hashing, the
    out-of-distribution check, bookkeeping) and of the whole call, over ``encoded``."""
    ms: dict[str, list[float]] = {k: [] for k in (*STAGES, "other", "total")}
    for i, data in enumerate(encoded):
        t0 = time.perf_counter()
        rgb = decode_field(data)
        t1 = time.perf_counter()
        result = pipeline(Frame(f"bench#{i}", rgb=rgb, data=data))
        t2 = time.perf_counter()
        if result.error:
            raise RuntimeError(result.error)
        ms["decode"].append((t1 - t0) * 1e3)
        for stage in STAGES[1:]:
            ms[stage].append(result.timings_ms.get(stage, 0.0))
        ms["total"].append((t2 - t0) * 1e3)
        ms["other"].append(ms["total"][-1] - sum(ms[k][-1] for k in STAGES))
    out = {f"{k}_median_ms": float(np.median(v)) for k, v in ms.items()}
    out["n"] = len(encoded)
    return out


def run(models: list[dict], data_dir: Path, quick: bool) -> dict:
    """Stage timings of every bundle record in ``models`` on each input kind."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        encoded = inputs(data_dir, quick)
        rows = []
        for m in [m for m in models if m.get("picked", True)]:  # the file this machine runs
            pipeline = FieldPipeline(load_model(m["bundle"], m["backend"], 1, route=m.get("route")))
            for kind, data in encoded.items():
                rows.append(
                    {
                        "name": m["name"],
                        "model": m["model"],
                        "precision": m["precision"],
                        "format": m["format"],
                        "backend": m["backend"],
                        "input": kind,
                        **stage_times(pipeline, data),
                    }
                )
    finally:
        cv2.setNumThreads(threads)
    return {"threads": 1, "segmentation": "robust", "rows": rows}


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values)}


def folder_throughput(m: dict, folder: Path, work: Path, repeats: int) -> list[dict]:
    """One row per ``FOLDER_SETTINGS`` entry for bundle record ``m`` on the JPEG files in
    ``folder`` (module doc)."""
    model = load_model(m["bundle"], m["backend"], 1, route=m.get("route"))
    n = len(list(folder.iterdir()))
    runs: dict[tuple[int, int, int], list[dict]] = {s: [] for s in FOLDER_SETTINGS}
    with tempfile.TemporaryDirectory(dir=work) as tmp, ExitStack() as stack:
        stations = {}
        for threads, batch, workers in FOLDER_SETTINGS:
            log = stack.enter_context(ResultsLog(Path(tmp) / f"{threads}-{batch}-{workers}"))
            station = stack.enter_context(Station(model, log, batch=batch, workers=workers))
            if workers and not station.start_workers(wait=WORKERS_START_S):
                raise RuntimeError(f"folder throughput: {workers} worker processes did not start")
            station.run(FolderSource(folder, once=True, settle=0), slide_id="warm")
            stations[threads, batch, workers] = station
        for i in range(repeats):
            for setting, station in stations.items():
                load = _load()
                t0, c0 = time.perf_counter(), time.process_time() + _cpu(station.worker_pids)
                station.run(FolderSource(folder, once=True, settle=0), slide_id=f"round-{i}")
                wall = time.perf_counter() - t0
                cpu = time.process_time() + _cpu(station.worker_pids) - c0
                logged = len(station.log.results(f"round-{i}"))
                if logged != n:
                    raise RuntimeError(f"folder throughput: {logged} of {n} fields logged")
                runs[setting].append(
                    {"fields_per_s": n / wall, "cpu_ms_per_field": cpu * 1e3 / n, "load": load}
                )
    return [
        {
            "name": m["name"],
            "model": m["model"],
            "route": m.get("route"),
            "sha256": m.get("sha256"),
            "backend": m["backend"],
            "threads": threads,
            "batch": batch,
            "workers": workers,
            "fields": n,
            "repeats": repeats,
            "fields_per_s": _spread([r["fields_per_s"] for r in rs]),
            "cpu_ms_per_field": _spread([r["cpu_ms_per_field"] for r in rs]),
            "load": [r["load"] for r in rs if r["load"] is not None],
        }
        for (threads, batch, workers), rs in runs.items()
    ]


#: Seconds the worker processes may take to start before the folder benchmark gives up.
WORKERS_START_S = 120


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used (Linux ``/proc``; 0.0
    elsewhere or for one that has ended)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK") if pids else 0.0


def folder_run(models: list[dict], data_dir: Path, quick: bool, work: Path) -> dict:
    """Folder throughput rows of every bundle record in ``models`` this machine picks."""
    n = 8 if quick else FOLDER_FIELDS
    encoded = taleqani_jpegs(data_dir, n)
    if not encoded:
        encoded = [_jpeg(synth_field(CLASSES[i % 4], seed=i)[0]) for i in range(n)]
    folder = Path(work) / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, data in enumerate(encoded):
        (folder / f"field-{i:04d}.jpg").write_bytes(data)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        rows = [
            row
            for m in models
            if m.get("picked", True)
            for row in folder_throughput(m, folder, Path(work), 1 if quick else FOLDER_REPEATS)
        ]
    finally:
        cv2.setNumThreads(threads)
    return {"input": "field_224", "rows": rows}
