"""``leukedge demo``: a synthetic slide through the whole pipeline, no arguments, no network."""

from __future__ import annotations

import time

import cv2
import numpy as np
import typer
from rich.table import Table

from ..console import console, err_console


def demo(
    fields: int = typer.Option(8, help="Synthetic fields in the slide."),
    seed: int = typer.Option(0, help="Seed of the synthetic slide."),
    size: int = typer.Option(224, help="Field side in pixels."),
    threads: int = typer.Option(1, help="Inference threads."),
) -> None:
    """Segment and classify a synthetic slide with every shipped model on every installed backend.

    Synthetic fields exercise the pipeline; predictions on them say nothing about accuracy.
    """
    from ..edge.backends import FORMAT_BACKEND, available_backends
    from ..edge.classes import CLASSES
    from ..edge.model import MODELS_DIR, load_model
    from ..edge.pipeline import FieldPipeline
    from ..edge.slide import SlideTally
    from ..edge.sources import Frame
    from ..edge.synth import synth_field

    truth = [CLASSES[i % len(CLASSES)] for i in range(fields)]
    drawn = [synth_field(t, size=(size, size), seed=seed * 1000 + i) for i, t in enumerate(truth)]
    frames = [
        Frame(f"synthetic:{t}#{i}", rgb=rgb) for i, (t, (rgb, _)) in enumerate(zip(truth, drawn))
    ]
    installed = set(available_backends())
    bundles = sorted(p.parent for p in MODELS_DIR.glob("*/leukedge.json"))
    runnable = [b for b in bundles if FORMAT_BACKEND[_model_suffix(b)] in installed]
    for b in sorted(set(bundles) - set(runnable)):
        err_console.print(f"[yellow]skipped[/yellow] {b.name}: its backend is not installed")

    table = Table(title=f"synthetic slide: {fields} fields of {size}x{size} px")
    table.add_column("field")
    table.add_column("truth")
    table.add_column("cells (found/true)", justify="right")
    segs, t_seg = _segment_all(frames)
    true_cells = [cv2.connectedComponents(m.astype(np.uint8))[0] - 1 for _, m in drawn]
    columns = [
        [f.source_id, t, f"{len(s.cells)}/{c}"]
        for f, t, s, c in zip(frames, truth, segs, true_cells)
    ]
    latency = Table(title=f"median latency per field, ms ({threads} thread(s))")
    for name in ("model", "backend", "segment", "preprocess", "infer", "total"):
        latency.add_column(name, justify="right" if name not in ("model", "backend") else "left")
    latency.add_row("(segmentation only)", "-", f"{t_seg:.2f}", "-", "-", f"{t_seg:.2f}")
    calls = []
    for bundle in runnable:
        model = load_model(bundle, threads=threads)
        pipeline = FieldPipeline(model)
        table.add_column(f"{model.name} ({model.backend.name})")
        tally, timings = SlideTally(model.name), []
        for row, frame in zip(columns, frames):
            res = pipeline(frame)
            tally.add(res.label, res.uncertain, res.error is not None)
            timings.append(res.timings_ms)
            row.append(
                res.error or f"{res.label} {res.confidence:.2f}" + (" ?" if res.uncertain else "")
            )
        med = {k: float(np.median([t[k] for t in timings])) for k in timings[0]}
        latency.add_row(
            model.name,
            model.backend.name,
            *(f"{med[k]:.2f}" for k in ("segment", "preprocess", "infer")),
            f"{sum(med.values()):.2f}",
        )
        calls.append((model.name, tally.call()[1]))
    for row in columns:
        table.add_row(*row)
    console.print(table)
    console.print(latency)
    if not runnable:
        console.print(
            "No model bundle is shipped in this installation yet: the demo ran segmentation only."
        )
    for name, call in calls:
        console.print(f"{name}: slide call: {call}")
    console.print(
        "Synthetic fields: predictions show the pipeline works, not how accurate it is. "
        "Decision support for research use only; not a diagnosis."
    )


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
