"""``leukedge data``: leak-safe splits of real data and synthetic smear fields."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console

app = typer.Typer(help="Prepare data: leak-safe splits and synthetic fields.", no_args_is_help=True)


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise typer.BadParameter(f"expected three comma-separated numbers, got {text!r}")
    return parts


def count_table(summary: dict, title: str) -> Table:
    """Fields per split (or fold) and class of a ``make_split`` summary, with totals."""
    from ..data.split import SPLITS

    counts = summary["counts"]
    labels = sorted({label for c in counts.values() for label in c})
    order = [s for s in SPLITS if s in counts] + sorted(s for s in counts if s not in SPLITS)
    table = Table(title=title)
    table.add_column("split")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for s in order:
        row = [counts[s].get(label, 0) for label in labels]
        table.add_row(s, *map(str, row), str(sum(row)))
    totals = [sum(c.get(label, 0) for c in counts.values()) for label in labels]
    table.add_row("all", *map(str, totals), str(sum(totals)), style="bold")
    return table


@app.command()
def split(
    src: Path = typer.Argument(
        ..., help="Data folder (Taleqani, Kaggle or class-per-folder layout)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for split.csv and split.json."),
    classes: str = typer.Option(
        "4", help="Class scheme: 4 (Benign/Early/Pre/Pro), 3 (no Early), 2 (benign vs malignant)."
    ),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same split."),
    ratios: str = typer.Option("0.85,0.10,0.05", help="train,val,test shares."),
    folds: int = typer.Option(
        0, help="K > 1: keep the test share out and deal the rest into K cross-validation folds."
    ),
) -> None:
    """Write a stratified split where duplicates and near-duplicates never straddle two splits."""
    from ..data.layouts import find_dataset
    from ..data.split import make_split

    summary = make_split(find_dataset(src), out, classes, seed, _ratios(ratios), folds)
    err_console.print(f"layout: [bold]{summary['layout']}[/bold] ({summary['source']})")
    for name in summary["ignored_folders"]:
        err_console.print(f"[yellow]ignored folder[/yellow] {name}: not a recognised class")
    for bad in summary["skipped"]:
        err_console.print(f"[yellow]skipped[/yellow] {bad['path']}: {bad['problem']}")
    console.print(
        count_table(summary, f"{summary['files']} fields, classes={classes}, seed={seed}")
    )
    console.print(
        f"{summary['duplicate_groups']} duplicate groups "
        f"({summary['files_in_duplicate_groups']} files; "
        f"exact SHA-256 or perceptual hash within {summary['near_duplicate_bits']}/64 bits), "
        f"each kept inside one split. Train balancing by flips: "
        f"{summary['balanced_train_per_class']} per class. Wrote {out / 'split.csv'}"
    )


@app.command()
def synth(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write (Taleqani layout + Masks/)."
    ),
    n: int = typer.Option(20, help="Fields per class."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same fields."),
    size: int = typer.Option(224, help="Field side in pixels."),
) -> None:
    """Write synthetic fields with exact blast masks (demos and tests, never accuracy claims)."""
    from ..edge.synth import write_synth_dataset

    paths = write_synth_dataset(out, n, seed=seed, size=(size, size))
    console.print(f"wrote {len(paths)} fields and their masks under {out}")
