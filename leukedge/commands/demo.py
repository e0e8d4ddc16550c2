"""``leukedge demo``: a synthetic slide through the whole pipeline, no arguments, no network."""

from __future__ import annotations

import time

import cv2
import numpy as np
import typer
from rich.table import Table

from ..console import console, err_console
from . import fail

#: Bounds of the synthetic slide: sides in pixels, and all fields' pixels together
#: (kept in memory at once: 40 MP is about 160 MB with the masks).
SIZES = (32, 2048)
MAX_PIXELS = 40_000_000


def demo(
    fields: int = typer.Option(8, help="Synthetic fields in the slide."),
    seed: int = typer.Option(0, help="Seed of the synthetic slide."),
    size: int = typer.Option(224, help="Field side in pixels."),
    threads: int = typer.Option(1, help="Inference threads."),
) -> None:
    """Segment and classify a synthetic slide with every shipped model on every installed backend.

    Synthetic fields exercise the pipeline; predictions on them say nothing about accuracy.
    """
    _check(fields, seed, size, threads)
    truth, masks, frames = _synthetic_slide(fields, seed, size)
    table = Table(title=f"synthetic slide: {fields} fields of {size}x{size} px")
    for name in ("field", "truth", "cells (found/true)"):
        table.add_column(name, justify="right" if name.startswith("cells") else "left")
    segs, t_seg = _segment_all(frames)
    true_cells = [cv2.connectedComponents(m.astype(np.uint8))[0] - 1 for m in masks]
    rows = [
        [f.source_id, t, f"{len(s.cells)}/{c}"]
        for f, t, s, c in zip(frames, truth, segs, true_cells)
    ]
    latency = Table(title=f"median latency per field, ms ({threads} thread(s))")
    for name in ("model", "backend", "segment", "preprocess", "infer", "total"):
        latency.add_column(name, justify="right" if name not in ("model", "backend") else "left")
    latency.add_row("(segmentation only)", "-", f"{t_seg:.2f}", "-", "-", f"{t_seg:.2f}")
    calls = []
    for bundle in _runnable_bundles():
        name, backend, cells, med, call = _run_model(bundle, frames, threads)
        table.add_column(f"{name} ({backend})")
        for row, cell in zip(rows, cells):
            row.append(cell)
        stages = (f"{med.get(k, 0.0):.2f}" for k in ("segment", "preprocess", "infer"))
        latency.add_row(name, backend, *stages, f"{sum(med.values()):.2f}")
        calls.append(f"{name}: slide call: {call}")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(latency)
    if not calls:
        console.print("No model bundle is shipped in this installation yet: the demo ran "
                      "segmentation only.")  # fmt: skip
    for line in calls:
        console.print(line)
    console.print(
        "Synthetic fields: predictions show the pipeline works, not how accurate it is. "
        "Decision support for research use only; not a diagnosis."
    )


def _synthetic_slide(fields: int, seed: int, size: int):
    """(true class per field, bool (H, W) true blast mask per field, the frames)."""
    from ..edge.classes import CLASSES
    from ..edge.sources import Frame
    from ..edge.synth import synth_field

    truth = [CLASSES[i % len(CLASSES)] for i in range(fields)]
    drawn = [synth_field(t, size=(size, size), seed=seed * 1000 + i) for i, t in enumerate(truth)]
    frames = [
        Frame(f"synthetic:{t}#{i}", rgb=rgb) for i, (t, (rgb, _)) in enumerate(zip(truth, drawn))
    ]
    return truth, [m for _, m in drawn], frames


def _runnable_bundles() -> list:
    """The shipped bundles whose backend is installed (the others are reported)."""
    from ..edge.backends import FORMAT_BACKEND, available_backends
    from ..edge.model import MODELS_DIR

    installed = set(available_backends())
    bundles = sorted(p.parent for p in MODELS_DIR.glob("*/leukedge.json"))
    runnable = [b for b in bundles if FORMAT_BACKEND[_model_suffix(b)] in installed]
    for b in sorted(set(bundles) - set(runnable)):
        err_console.print(f"[yellow]skipped[/yellow] {b.name}: its backend is not installed")
    return runnable


def _run_model(bundle, frames, threads: int):
    """(model name, backend, a table cell per frame, median stage timings in ms, the
    slide call) of ``frames`` as one slide through a ``Station`` on ``bundle``."""
    from ..edge.model import load_model
    from ..edge.results_log import MEMORY, ResultsLog
    from ..edge.station import Station

    station = Station(load_model(bundle, threads=threads), ResultsLog(MEMORY))
    logged = []
    station.run(frames, slide_id="demo", on_result=logged.append)
    done = {f.result.source: f.result for f in logged}
    cells = []
    for frame in frames:
        res = done[frame.source_id]
        flag = f" ? ({', '.join(res.reasons)})" if res.uncertain else ""
        cells.append(res.error or f"{res.label} {res.confidence:.2f}{flag}")
    # Stages differ between fields (an error stops early, a tiled frame adds some).
    timings = [r.timings_ms for r in done.values() if r.error is None]
    med = {
        k: float(np.median([t[k] for t in timings if k in t]))
        for k in sorted({k for t in timings for k in t})
    }
    call = station.log.slide("demo").call["text"]
    return station.model.name, station.model.backend.name, cells, med, call


def _check(fields: int, seed: int, size: int, threads: int) -> None:
    """One-line errors (exit 2) for options that cannot make a slide or would not fit."""
    from ..edge.config import ConfigError, check_threads

    if fields < 1:
        fail(f"--fields must be at least 1, got {fields}")
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed}")
    if not SIZES[0] <= size <= SIZES[1]:
        fail(f"--size must be {SIZES[0]}..{SIZES[1]} pixels, got {size}")
    if fields * size * size > MAX_PIXELS:
        fail(
            f"--fields {fields} of --size {size} make {fields * size * size:,} pixels; keep "
            f"fields x size x size under {MAX_PIXELS:,} (a Raspberry Pi has 2-8 GB)"
        )
    try:
        check_threads(threads, "--threads")
    except ConfigError as exc:
        fail(str(exc))


def _model_suffix(bundle) -> str:
    from ..edge.bundle import read_manifest

    return "." + read_manifest(bundle)["model"]["file"].rsplit(".", 1)[-1]


def _segment_all(frames):
    from ..edge.segment import segment

    segs, times = [], []
    for f in frames:
        t0 = time.perf_counter()
        segs.append(segment(f.rgb, mode="robust"))
        times.append((time.perf_counter() - t0) * 1e3)
    return segs, float(np.median(times))
