"""Every benchmark in one run, on the machine it runs on (``leukedge bench``).

Parts: segmentation (``segmentation``),
classification latency with the PyTorch and Keras baselines (``latency``), end to end
and a folder's throughput (``end_to_end``), accuracy and robustness of trained bundles
(``accuracy``) and the machine facts (``machine``). Writes ``report.md``, ``report.json``
(its JSON Schema: ``leukedge/benchmarks/schema.json``), ``latency.png``,
``accuracy_size.png``, and the ``segmentation/`` and ``accuracy/<model>/`` reports to
``--out`` (default ``bench/<date>``), and prints the headline table. ``--quick`` (about a
minute, for CI) runs one thread, a few fields and 64 px models: a smoke test, not figures
to quote.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.layouts import find_dataset
from ..data.split import make_split
from ..edge.imageio import write_field
from ..edge.synth import synth_field, write_synth_dataset
from ..errors import UsageError
from . import accuracy, end_to_end, latency, plots, render, segmentation
from .machine import machine_facts
from .models import collect

#: Plots and the per-model accuracy reports need matplotlib (not in the edge extra).
HAVE_PLOTS = importlib.util.find_spec("matplotlib") is not None
SCHEMA_VERSION = 1
DEFAULT_DATA = segmentation.DEFAULT_DATA


def default_out() -> Path:
    return Path("bench") / datetime.date.today().isoformat()


def calibration_split(work: Path, quick: bool) -> Path:
    """A split of generated fields (train: INT8 calibration, val: export checks)."""
    write_synth_dataset(work / "synth", 4 if quick else 16)
    make_split(find_dataset(work / "synth"), work / "synth", ratios=(0.5, 0.5, 0.0))
    return work / "synth" / "split.csv"


def latency_field(data: Path, work: Path) -> Path:
    """The 224 px field file the latency workers classify: the data folder's first field,
    else a generated one."""
    found = sorted((data / "Original").glob("*/*.jpg"))[:1]
    if found:
        return found[0]
    path = work / "field.png"
    write_field(path, synth_field("Pre", seed=0)[0])
    return path


def _accuracy(models, data, split_csv, out: Path, quick: bool, reference) -> dict:
    trained = [m for m in models if m["trained"] and m.get("picked", True)]
    if not trained:
        return {"skipped": "no trained model (shipped, or given with --model): accuracy skipped"}
    if split_csv is None and not data.is_dir():
        return {"skipped": f"no data folder ({data}) or --split-csv: accuracy skipped"}
    rows = accuracy.split_test_rows(data, split_csv, out / "split", quick)
    if not rows:
        return {"skipped": "the split has no test fields: accuracy skipped"}
    result = accuracy.run(
        trained, rows, out / "accuracy", quick=quick, reference=reference, reports=HAVE_PLOTS
    )
    result["source"] = str(split_csv or data)
    return result


def run(
    out: Path,
    *,
    quick: bool = False,
    data: Path = DEFAULT_DATA,
    split_csv: Path | None = None,
    on_device: bool = False,
    threads: list[int] | None = None,
    models: Sequence[Path] = (),
    reference: Path | None = None,
) -> dict:
    """Run every benchmark and write the report to ``out``; returns ``report.json``'s dict."""
    t0 = time.perf_counter()
    out, data = Path(out), Path(data)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    threads = threads or ([1] if quick else [1, 2, 4])
    ref = None
    if reference is not None:
        ref = {"name": Path(reference).stem, **json.loads(Path(reference).read_text())}
    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "on_device": on_device,
        "settings": {
            "threads": threads,
            "data": str(data),
            "split_csv": str(split_csv) if split_csv else None,
            "opencv_threads": "1 for segmentation and end to end; the row's count in latency",
        },
        "machine": machine_facts(),
        "notes": [] if HAVE_PLOTS else ["matplotlib is not installed: no plots"],
    }
    seconds: dict[str, float] = {}

    def timed(part: str, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds[part] = time.perf_counter() - t
        return result

    report["segmentation"] = timed(
        "segmentation", segmentation.run, data, quick, out / "segmentation"
    )
    split = calibration_split(work, quick)
    zoo = timed(
        "models",
        collect,
        work,
        quick=quick,
        on_device=on_device,
        given=list(models),
        split_csv=split,
    )
    report["notes"] += zoo["notes"]
    report["models"], report["baselines"] = zoo["models"], zoo["baselines"]
    field = str(latency_field(data, work))
    report["latency"] = timed("latency", latency.run, zoo, threads, field, quick)
    report["end_to_end"] = timed("end_to_end", end_to_end.run, zoo["models"], data, quick)
    report["folder"] = timed("folder", end_to_end.folder_run, zoo["models"], data, quick, work)
    report["accuracy"] = timed(
        "accuracy", _accuracy, zoo["models"], data, split_csv, out, quick, ref
    )
    if "skipped" in report["accuracy"]:
        report["notes"].append(report["accuracy"]["skipped"])
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["machine"]["load_average_end"] = load
    report["notes"] += busy_notes(report)
    report["part_seconds"] = seconds
    report["seconds"] = time.perf_counter() - t0
    write(report, out)
    return report


def busy_notes(report: dict) -> list[str]:
    """Warnings that the figures are not those of an idle machine: a load average above the
    usable cores at the start or end, and latency rows whose repeated runs disagree."""
    machine, notes = report["machine"], []
    cores = machine.get("cores_usable") or 1
    loads = [la[0] for la in (machine.get("load_average"), machine.get("load_average_end")) if la]
    if loads and max(loads) > cores:
        notes.append(
            f"BUSY machine: 1-min load average up to {max(loads):.1f} on {cores} usable "
            "cores; latencies include waiting for a core: re-run when idle before quoting them"
        )
    if noisy := report["latency"].get("noisy"):
        notes.append(
            f"noisy: {len(noisy)} latency row(s) whose repeated runs differ by more than "
            f"{latency.NOISY_SPREAD:.0%} of their median ({'; '.join(noisy[:3])}"
            f"{'; ...' if len(noisy) > 3 else ''})"
        )
    return notes


def write(report: dict, out: Path) -> None:
    """``report.json``, ``report.md`` and the plots."""
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render.markdown(report))
    if not HAVE_PLOTS:
        return
    if report["latency"]["rows"]:
        plots.latency_plot(report["latency"]["rows"], out / "latency.png")
    if report["accuracy"].get("models"):
        plots.accuracy_size_plot(
            report["accuracy"]["models"],
            report["accuracy"].get("reference"),
            out / "accuracy_size.png",
        )


def parse_threads(text: str) -> list[int]:
    """Thread counts from "1,2,4"; ``UsageError`` unless they are positive integers."""
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise UsageError(f"--threads {text!r}: give positive counts such as 1,2,4")
    return threads
