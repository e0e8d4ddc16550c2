"""``leukedge results``: list slides, show a slide's stored call, export its fields."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail

app = typer.Typer(
    help="List slides, show or end them, and export their results.", no_args_is_help=True
)

DIR_HELP = (
    "Results folder or .db file [default: $LEUKEDGE_RESULTS or ~/.local/share/leukedge/results]"
)


def _open(folder: Path | None):
    from ..edge.results_log import ResultsError, ResultsLog

    try:
        return ResultsLog(folder, create=False)
    except (FileNotFoundError, ResultsError) as exc:
        fail(str(exc))


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _call(call: dict[str, Any] | None) -> str:
    """A stored call in a few words: the class (or "none") and whether to refer."""
    if not call:
        return ""
    return (call["label"] or "none") + (", refer" if call["refer"] else "")


def print_slide(record: dict[str, Any], out=None) -> None:
    """Print a slide (``Station.slide`` or ``ResultsLog.record`` with a ``SlideTally``
    summary as ``tally``): per-class counts, then its stored call if it has ended,
    else the running call. ``leukedge run`` and ``results show`` both print this."""
    out = out or err_console
    info, tally = record["slide"], record["tally"]
    call = info["call"]
    table = Table(title=f"slide {info['id']} ({info['state']})")
    table.add_column("class")
    table.add_column("fields", justify="right")
    table.add_column("confident", justify="right")
    for label, n in sorted(tally["counts"].items()):
        table.add_row(label, str(n), str(tally["confident_counts"].get(label, 0)))
    out.print(table)
    who = f", operator {info['operator']}" if info.get("operator") else ""
    out.print(
        f"model {info['model']} ({(info['model_sha256'] or '')[:12]}){who}; "
        f"started {_when(info['started'])}" + (f", ended {_when(info['ended'])}" if call else "")
    )
    out.print(f"fields {tally['fields']}, uncertain {tally['uncertain']}, errors {tally['errors']}")
    if call:
        out.print(f"[bold]slide call:[/bold] {call['text']}")
        out.print(f"[italic]{call['notice']}[/italic]")
    else:
        when = "slide still open" if info["state"] == "open" else "ended before calls were stored"
        out.print(f"[bold]running slide call:[/bold] {tally['explanation']} ({when})")
        out.print(f"[italic]{tally['notice']}[/italic]")


@app.command("list")
def list_slides(
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """List the slides in the results log, oldest first, with their state and call."""
    from ..edge.results_log import ResultsError

    with _open(folder) as log:
        table = Table(title=str(log.path))
        for name in ("slide", "state", "started", "ended", "fields", "errors", "uncertain"):
            table.add_column(name, justify="right" if name in ("fields", "errors") else "left")
        table.add_column("labels")
        table.add_column("call")
        try:
            for slide in log.slides():
                tally = log.tally(slide.id)
                labels = ", ".join(f"{k} {v}" for k, v in sorted(tally["labels"].items()))
                table.add_row(
                    slide.id,
                    slide.state,
                    _when(slide.started),
                    _when(slide.ended),
                    str(slide.fields),
                    str(slide.errors),
                    str(tally["uncertain"]),
                    labels,
                    _call(slide.call),
                )
        except ResultsError as exc:
            fail(str(exc))
        console.print(table)


@app.command()
def show(
    slide: str = typer.Argument(..., help="Slide id (see `leukedge results list`)."),
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """Print a slide's stored call again, with its per-class counts."""
    _print_stored(folder, slide, end=False)


@app.command()
def end(
    slide: str = typer.Argument(..., help="Slide id (see `leukedge results list`)."),
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """End a slide and store its call, also while the station runs (it goes on with a
    new slide); prints the call. An ended slide's call is printed as stored."""
    _print_stored(folder, slide, end=True)


def _print_stored(folder: Path | None, slide: str, end: bool) -> None:
    """Print a slide's stored call and counts (after ending it first, with ``end``)."""
    from ..edge.results_log import ResultsError
    from ..edge.station import end_logged_slide, tally_from_rows

    with _open(folder) as log:
        try:
            if end:
                end_logged_slide(log, slide)
            record = log.record(slide)
        except (KeyError, ResultsError) as exc:
            fail(exc.args[0])
    record["tally"] = tally_from_rows(slide, record["fields"]).summary()
    print_slide(record, console)


@app.command()
def export(
    slide: str = typer.Option(..., "--slide", "-s", help="Slide id (see `leukedge results list`)."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or json."),
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file [default: stdout]."),
) -> None:
    """Export one slide's per-field results as CSV or JSON."""
    from ..edge.results_log import ResultsError

    if fmt not in ("csv", "json"):
        raise typer.BadParameter(f"expected csv or json, got {fmt!r}", param_hint="--format")
    with _open(folder) as log:
        try:
            log.export(slide, fmt, out)
        except KeyError as exc:
            fail(exc.args[0])
        except ResultsError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{out}: cannot write ({exc.strerror or exc}); choose another --out")
    if out is not None:
        err_console.print(f"wrote {out}")


@app.command()
def report(
    slide: str = typer.Argument(..., help="Slide id (see `leukedge results list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The HTML file to write."),
    folder: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
) -> None:
    """Write a slide's printable report: one self-contained HTML file (images inline, no
    network needed; print it or "save as PDF" from any browser)."""
    from ..edge.report import slide_report
    from ..edge.results_log import ResultsError

    with _open(folder) as log:
        try:
            html = slide_report(log, slide)
        except KeyError as exc:
            fail(exc.args[0])
        except ResultsError as exc:
            fail(str(exc))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or exc}); choose another --out")
    err_console.print(f"wrote {out}")
