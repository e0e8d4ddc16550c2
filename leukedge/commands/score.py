"""``leukedge score``: an archive of fields through the station's pipeline, on this machine
or a Ray cluster, into a resumable folder of Parquet/CSV parts with per-slide calls."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path

import typer

from ..console import console, err_console

#: Slides listed on the terminal; all of them are in OUT/slides.json.
SHOWN_SLIDES = 30


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Format(str, Enum):
    parquet = "parquet"
    csv = "csv"


def field_progress(doing: str = "scoring"):
    """A Rich progress display of fields (``doing``, fields/s, ETA) and the
    ``progress(done, total)`` callback."""
    import sys

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Text,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} fields/s" if task.speed else "")

    display = Progress(
        TextColumn(doing),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not sys.stderr.isatty(),
    )
    task = display.add_task(doing, total=None)

    def update(done: int, total: int) -> None:
        display.update(task, completed=done, total=total)

    return display, update


def _note(message, *_) -> None:
    """A library warning (e.g. a bundle without a self-test) as one line on stderr."""
    err_console.print(f"[yellow]note:[/yellow] {message}")


def _print_slides(summary: dict, out: Path) -> None:
    from rich.table import Table

    from ..edge.slide import NOTICE

    slides = summary["slides"]
    table = Table(title=f"{len(slides)} slides, {summary['fields']} fields ({summary['model']})")
    for column in ("slide", "fields", "errors", "uncertain", "call"):
        table.add_column(column, justify="left" if column in ("slide", "call") else "right")
    for s in slides[:SHOWN_SLIDES]:
        cells = (str(s["fields"]), str(s["errors"]), str(s["uncertain"]))
        table.add_row(s["slide"], *cells, s["explanation"])
    console.print(table)
    if len(slides) > SHOWN_SLIDES:
        console.print(f"... {len(slides) - SHOWN_SLIDES} more slides in {out / 'slides.json'}")
    console.print(f"[italic]{NOTICE}[/italic]")


def score(
    src: str = typer.Argument(
        ...,
        help="Folder tree (dataset layout, per-slide subfolders or plain images), "
        "a list file (one path a line) or a glob such as 'scans/**/*.jpg'.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Results folder; an existing one is resumed (scored fields skipped).",
    ),
    model: str = typer.Option("default", "--model", "-m", help="'default' or a bundle folder."),
    engine: Engine = typer.Option(
        Engine.local, "--engine", help="local: a process pool here; ray: Ray Data."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (e.g. 10.0.0.1:6379); default: a local Ray."
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Processes/actors, one core each (default: all CPUs)."
    ),
    batch_size: int = typer.Option(
        128, "--batch-size", min=1, help="Fields per batch and per part file."
    ),
    fmt: Format = typer.Option(Format.parquet, "--format", help="Part files: parquet or csv."),
) -> None:
    """Score every field of an archive with the station's own pipeline: one row per field
    in OUT/parts, and each slide's call by the station's rule in OUT/slides.json."""
    from ..scale import score_archive

    display, update = field_progress()
    try:
        with display, warnings.catch_warnings():
            warnings.showwarning = _note
            report = score_archive(
                src, out, model, engine.value, workers, batch_size, address, fmt.value, update
            )
    except KeyboardInterrupt:
        err_console.print(f"interrupted; the same command resumes into {out}")
        raise typer.Exit(130) from None
    for text in report.summary["notes"]:
        _note(text)
    _print_slides(report.summary, report.out)
    err_console.print(
        f"scored {report.scored} fields ({report.errors} errors, {report.skipped} already in "
        f"{report.out}) in {report.seconds:.1f} s: {report.fields_per_s:.1f} fields/s; "
        f"rows in {report.out / 'parts'}, slide calls in {report.out / 'slides.json'}"
    )
