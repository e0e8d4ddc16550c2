"""``leukedge segment``: blast-cell masks (and QC strips) for smear field images."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..console import err_console


class Mode(str, Enum):
    reference = "reference"
    fast = "fast"
    robust = "robust"


def _segment_one(path: Path, out: Path, mode: str, qc: bool) -> int:
    """Write ``<stem>_mask.png``, ``<stem>_masked.png`` (and ``<stem>_qc.png``); cell count."""
    from ..edge.imageio import read_field, write_field
    from ..edge.segment import qc_strip, segment

    rgb = read_field(path)
    result = segment(rgb, mode, stages=qc)
    write_field(out / f"{path.stem}_mask.png", result.mask)
    write_field(out / f"{path.stem}_masked.png", result.impose(rgb))
    if qc:
        write_field(out / f"{path.stem}_qc.png", qc_strip(rgb, result))
    return len(result.cells)


def segment(
    images: list[Path] = typer.Argument(..., help="Smear field images (JPEG, PNG, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (created)."),
    mode: Mode = typer.Option(
        Mode.robust, "--mode", help="robust (station default), fast or reference."
    ),
    qc: bool = typer.Option(
        False,
        "--qc",
        help="Also write <stem>_qc.png: raw, LAB a*, clusters, threshold, cleaned, imposed.",
    ),
) -> None:
    """Segment blast cells: writes <stem>_mask.png and <stem>_masked.png per image.

    Unreadable or unsuitable images are reported and skipped; the exit code is nonzero
    only when no image could be processed.
    """
    from rich.progress import track

    from ..edge.imageio import FieldError

    out.mkdir(parents=True, exist_ok=True)
    done = cells = 0
    for path in track(
        images, description="segmenting", console=err_console, disable=len(images) < 2
    ):
        try:
            cells += _segment_one(path, out, mode.value, qc)
            done += 1
        except FieldError as exc:
            err_console.print(f"[red]skipped[/red] {exc.source}: {exc.problem}")
    err_console.print(
        f"{done} of {len(images)} images segmented ({mode.value}): {cells} cells, in {out}"
    )
    if done == 0:
        raise typer.Exit(1)
