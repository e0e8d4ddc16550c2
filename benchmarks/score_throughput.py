"""Fields per second of the station loop and of ``leukedge score`` on a folder of fields.

    python benchmarks/score_throughput.py [--data DIR] [--repeats 3] [--limit N]
        [--batch-size 32] [--only local-1,local-2] [--tag TAG] [--out benchmarks/results]

Configurations, run in turn in each repeat (so load from other users falls on all):
- ``station``: the station loop (``Station.run`` over the files, SQLite log), one
  process with one OpenCV and one inference thread;
- ``local-1`` / ``local-2``: ``score --engine local`` with 1 and 2 worker processes;
- ``ray-N``: ``score --engine ray`` on a local Ray with N CPUs (N: this machine's cores),
  its workers at normal priority (``RAY_worker_niceness=0``) like the local engine's: Ray
  starts them at nice 15, which on a machine shared with other users measures those users.

Two rates per run: ``wall`` (fields / seconds from the call to its return: listing, model
loads, worker or Ray start-up included) and ``steady`` (fields scored between the first
and the last finished batch / the time between them: what a long run sustains, and the
figure a per-node estimate should use). ``steady`` counts the batches other workers had
in flight when the first one finished, so it may overstate a W-worker rate by up to
(W - 1) x batch size fields (1% for 2 workers, batches of 32 and 2,766 fields).

``cpu_s`` is the CPU time the run used in this process and its worker processes (not
Ray's, whose workers are not its children): fields per CPU second show whether the
engine wastes work, whatever other users of the machine take from the wall rate.

Writes ``score-throughput-<date>.md`` and ``.json`` to ``--out`` with the load average
before and after each run; on 2 shared cores, quote the spread, not one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from leukedge.benchmarks.machine import machine_facts
from leukedge.edge.model import load_model
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.sources.files import FilesSource
from leukedge.edge.station import Station
from leukedge.scale import list_fields, score_archive

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "taleqani-all"


def _station(paths: list[str], model: str) -> dict:
    cv2.setNumThreads(1)
    net = load_model(model, threads=1)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        station = Station(net, ResultsLog(Path(tmp)))
        t0 = time.perf_counter()
        station.run(FilesSource(paths), slide_id="bench", on_result=lambda _: times.append(1))
        wall = time.perf_counter() - t0
    return {"fields": len(times), "wall_s": wall, "steady_s": None}


def _score(src: Path, limit: int | None, model: str, engine: str, workers: int, batch: int):
    finished: list[tuple[float, int]] = []  # (time, fields done) at each batch

    def progress(done: int, total: int) -> None:
        finished.append((time.perf_counter(), done))

    with tempfile.TemporaryDirectory() as tmp:
        if limit is not None:
            listing = Path(tmp) / "fields.txt"
            listing.write_text("\n".join(r.path for r in list_fields(src)[:limit]))
            src = listing
        t0 = time.perf_counter()
        report = score_archive(
            src, Path(tmp) / "out", model, engine, workers, batch, progress=progress
        )
        wall = time.perf_counter() - t0
    (t_first, n_first), (t_last, n_last) = finished[min(1, len(finished) - 1)], finished[-1]
    steady = (t_last - t_first) if n_last > n_first else None
    return {
        "fields": report.scored,
        "wall_s": wall,
        "steady_s": steady,
        "steady_fields": n_last - n_first,
    }


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its reaped children so far."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _rates(run: dict) -> dict:
    steady = run["steady_fields"] / run["steady_s"] if run.get("steady_s") else None
    return {**run, "wall_fps": run["fields"] / run["wall_s"], "steady_fps": steady}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N fields.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", default=None, help="Comma-separated configurations.")
    parser.add_argument("--tag", default="", help="Appended to the report's file name.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_worker_niceness", "0")
    paths = [r.path for r in list_fields(args.data)][: args.limit]
    cores, batch = os.cpu_count() or 1, args.batch_size
    configs = {
        "station": lambda: _station(paths, args.model),
        "local-1": lambda: _score(args.data, args.limit, args.model, "local", 1, batch),
        "local-2": lambda: _score(args.data, args.limit, args.model, "local", 2, batch),
        f"ray-{cores}": lambda: _score(args.data, args.limit, args.model, "ray", cores, batch),
    }
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name, run in configs.items():
            before, cpu = os.getloadavg()[0], _cpu_s()
            result = _rates(run())
            cpu = None if name.startswith("ray") else _cpu_s() - cpu
            result |= {"load_before": before, "load_after": os.getloadavg()[0], "cpu_s": cpu}
            runs[name].append(result)
            steady = result["steady_fps"]
            per_cpu = "-" if cpu is None else f"{result['fields'] / cpu:.1f}"
            print(
                f"repeat {repeat + 1} {name}: {result['fields']} fields, "
                f"wall {result['wall_fps']:.1f}/s, steady "
                f"{'-' if steady is None else f'{steady:.1f}'}/s, "
                f"{per_cpu} fields/CPU s, "
                f"load {before:.1f} -> {result['load_after']:.1f}",
                flush=True,
            )
    summary = {
        name: {
            "wall_fps": _spread([r["wall_fps"] for r in rs]),
            "steady_fps": _spread([r["steady_fps"] for r in rs])
            if all(r["steady_fps"] for r in rs)
            else None,
            "fields_per_cpu_s": _spread([r["fields"] / r["cpu_s"] for r in rs])
            if all(r["cpu_s"] for r in rs)
            else None,
        }
        for name, rs in runs.items()
    }
    pairs = list(zip(runs.get("local-1", []), runs.get("local-2", [])))
    result = {
        "date": datetime.date.today().isoformat(),
        "data": str(args.data),
        "fields": len(paths),
        "model": args.model,
        "model_sha256": load_model(args.model).sha256,
        "batch_size": batch,
        "nice": os.nice(0),
        "machine": machine_facts(),
        "runs": runs,
        "summary": summary,
        "local2_over_local1": {
            k: _spread([b[k] / a[k] for a, b in pairs]) for k in ("steady_fps", "wall_fps")
        }
        if pairs
        else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "-".join(filter(None, ("score-throughput", result["date"], args.tag)))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(result: dict) -> str:
    """The markdown report of a ``main`` result."""
    m = result["machine"]
    loads = [
        r[k] for rs in result["runs"].values() for r in rs for k in ("load_before", "load_after")
    ]
    lines = [
        f"# Scoring throughput, {result['date']}",
        "",
        f"{result['fields']} fields of `{result['data']}`, model `{result['model']}` "
        f"(model file SHA-256 {result['model_sha256'][:12]}...), "
        f"batch {result['batch_size']}, nice {result['nice']}; "
        f"{m['cpu_model']}, {m['cores_usable']} cores; "
        f"{len(next(iter(result['runs'].values())))} repeats, configurations interleaved; "
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} around the runs.",
        "",
        "| configuration | steady fields/s | wall fields/s | fields per CPU second |",
        "|---|---|---|---|",
    ]

    def cell(spread: dict | None) -> str:
        if spread is None:
            return "–"
        return f"{spread['median']:.1f} ({spread['min']:.1f}-{spread['max']:.1f})"

    for name, s in result["summary"].items():
        cells = (cell(s[k]) for k in ("steady_fps", "wall_fps", "fields_per_cpu_s"))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    if ratio := result["local2_over_local1"]:
        steady, wall = ratio["steady_fps"], ratio["wall_fps"]
        lines += [
            "",
            f"local-2 / local-1, per repeat: steady {steady['median']:.2f}x "
            f"({steady['min']:.2f}-{steady['max']:.2f}x), wall {wall['median']:.2f}x "
            f"({wall['min']:.2f}-{wall['max']:.2f}x); acceptance >= 1.8x.",
        ]
    lines += [
        "",
        "Figures: median (min-max) over the repeats. The station loop is one process (one "
        "field at a time, SQLite log per field): its wall rate is its steady rate. Fields "
        "per CPU second: the driver and its worker processes (Ray's workers are not counted).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
