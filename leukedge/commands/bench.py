"""``leukedge bench``: every benchmark of ``leukedge.benchmarks`` on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import console, err_console


def bench(
    quick: bool = typer.Option(
        False, "--quick", help="Smoke test (about a minute): one thread, few fields, 64 px models."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder (default: bench/<date>)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Taleqani data folder (default: ../shared/data/taleqani-all)."
    ),
    split_csv: Path | None = typer.Option(
        None, "--split-csv", help="split.csv whose test rows the accuracy part uses."
    ),
    on_device: bool = typer.Option(
        False, "--on-device", help="Edge packages only: shipped/given bundles, no baselines."
    ),
    threads: str | None = typer.Option(
        None, "--threads", help="Inference thread counts (default: 1,2,4; --quick: 1)."
    ),
    models: list[Path] = typer.Option(
        [], "--model", "-m", help="A trained bundle folder to measure too (repeatable)."
    ),
    reference: Path | None = typer.Option(
        None, "--reference", help="report.json of the reference recipe, shown beside."
    ),
) -> None:
    """Benchmark segmentation, classification latency (with the PyTorch and Keras baselines),
    the end-to-end pipeline and accuracy on this machine; writes report.md, report.json
    and plots, and prints the headline table. --on-device needs only the edge extra."""
    from ..benchmarks import render, run_all

    out = out or run_all.default_out()
    report = run_all.run(
        out,
        quick=quick,
        data=data or run_all.DEFAULT_DATA,
        split_csv=split_csv,
        on_device=on_device,
        threads=run_all.parse_threads(threads) if threads else None,
        models=models,
        reference=reference,
    )
    for note in report["notes"]:
        err_console.print(f"[yellow]note:[/yellow] {note}")
    console.print(render.headline(report), markup=False, highlight=False)
    err_console.print(f"report: {out / 'report.md'}")
