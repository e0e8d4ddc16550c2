"""How the work before the model scales on this machine's cores: threads against processes.

    python benchmarks/analysis_scaling.py [--fields 400] [--rounds 4] [--out benchmarks/results]

Decoding and ``FieldPipeline.analyse`` (trust gate, perceptual hash, robust segmentation:
what the station's read-ahead thread does for every field) of ``--fields`` 224 px Taleqani JPEGs,
the `default` bundle, one OpenCV thread, run by: one thread; two threads of one process (a
thread pool over the fields, as a second reader would); two processes (each half the
fields). Settings alternate in each of ``--rounds`` rounds. A thread holds Python's global
interpreter lock between OpenCV calls, so two threads gain only what the OpenCV calls leave
free; two processes show what the cores themselves give.

Writes ``analysis-scaling-<date>.md`` to ``--out``: median (range) analyses per second and
the speed-up over one thread, with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cv2

from leukedge.benchmarks.end_to_end import taleqani_jpegs
from leukedge.edge.imageio import decode_field
from leukedge.edge.model import MODELS_DIR, load_model
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.sources.base import Frame

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "taleqani-all"

_PIPELINE: FieldPipeline | None = None


def _pipeline() -> FieldPipeline:
    global _PIPELINE
    if _PIPELINE is None:
        cv2.setNumThreads(1)
        _PIPELINE = FieldPipeline(load_model(MODELS_DIR / "default", "onnxruntime", 1))
    return _PIPELINE


def _analyse(data: bytes) -> None:
    _pipeline().analyse(Frame("field", rgb=decode_field(data)))


def _analyse_all(chunk: list[bytes]) -> float:
    """Analyse every field of ``chunk`` here; the seconds it took."""
    t0 = time.perf_counter()
    for data in chunk:
        _analyse(data)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    data = taleqani_jpegs(DATA, args.fields)
    if not data:
        sys.exit(f"{DATA}: no Taleqani fields; put the shared data beside the checkout")
    half = len(data) // 2
    rates: dict[str, list[float]] = {}
    loads: list[float] = []
    with ProcessPoolExecutor(2) as procs:
        list(procs.map(_analyse_all, [data[:8], data[8:16]]))  # load the bundle in both
        _analyse_all(data[:8])
        for r in range(args.rounds):
            t0 = time.perf_counter()
            _analyse_all(data)
            rates.setdefault("one thread", []).append(len(data) / (time.perf_counter() - t0))
            with ThreadPoolExecutor(2) as threads:
                t0 = time.perf_counter()
                list(threads.map(_analyse, data))
            rates.setdefault("two threads", []).append(len(data) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            list(procs.map(_analyse_all, [data[:half], data[half:]]))
            rates.setdefault("two processes", []).append(len(data) / (time.perf_counter() - t0))
            loads.append(os.getloadavg()[0])
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
                file=sys.stderr,
            )
    one = statistics.median(rates["one thread"])
    date = datetime.date.today().isoformat()
    lines = [
        f"# Work before the model: threads against processes, {date}",
        "",
        f"{len(data)} Taleqani 224 px JPEG fields, decoded and `FieldPipeline.analyse`, the "
        f"`default` bundle, one OpenCV thread; {args.rounds} interleaved rounds; "
        f"{os.cpu_count()} cores; 1-minute load {min(loads):.1f}-{max(loads):.1f}. "
        "Reproduce: `python benchmarks/analysis_scaling.py`.",
        "",
        "| run | analyses/s | speed-up over one thread (medians) |",
        "|---|---|---|",
    ]
    for k, v in rates.items():
        med = statistics.median(v)
        lines.append(f"| {k} | {med:.0f} ({min(v):.0f}-{max(v):.0f}) | {med / one:.2f}x |")
    lines += ["", "Figures: median (min-max) over the rounds."]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"analysis-scaling-{date}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
