"""``leukedge results``: list slides and export a slide's per-field results."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail

app = typer.Typer(help="List slides and export their results.", no_args_is_help=True)

DIR_HELP = (
    "Results folder or .db file [default: $LEUKEDGE_RESULTS or ~/.local/share/leukedge/results]"
)


def _open(folder: Path | None):
    from ..edge.results_log import ResultsLog, SchemaError

    try:
        return ResultsLog(folder, create=False)
    except (FileNotFoundError, SchemaError) as exc:
        fail(str(exc))


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


@app.command("list")
def list_slides(
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """List the slides in the results log, oldest first."""
    with _open(folder) as log:
        table = Table(title=str(log.path))
        for name in ("slide", "started", "ended", "fields", "errors", "uncertain", "labels"):
            table.add_column(name, justify="right" if name in ("fields", "errors") else "left")
        for slide in log.slides():
            tally = log.tally(slide.id)
            labels = ", ".join(f"{k} {v}" for k, v in sorted(tally["labels"].items()))
            table.add_row(
                slide.id,
                _when(slide.started),
                _when(slide.ended),
                str(slide.fields),
                str(slide.errors),
                str(tally["uncertain"]),
                labels,
            )
        console.print(table)


@app.command()
def export(
    slide: str = typer.Option(..., "--slide", "-s", help="Slide id (see `leukedge results list`)."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or json."),
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file [default: stdout]."),
) -> None:
    """Export one slide's per-field results as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise typer.BadParameter(f"expected csv or json, got {fmt!r}", param_hint="--format")
    with _open(folder) as log:
        try:
            log.export(slide, fmt, out)
        except KeyError as exc:
            fail(exc.args[0])
    if out is not None:
        err_console.print(f"wrote {out}")
