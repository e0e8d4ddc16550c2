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


def output_names(paths: list[Path]) -> list[str]:
    """A distinct output name per image: its stem; images sharing a stem get as many of
    their folders as tell them apart (``a/x.jpg``, ``b/x.jpg`` -> ``a__x``, ``b__x``), else
    their suffix (``x.jpg``, ``x.png`` -> ``x_jpg``, ``x_png``); a name still taken gets
    ``-2``, ``-3``..."""
    full = [p.resolve() for p in paths]
    names = [p.stem for p in full]
    for stem in {n for n in names if names.count(n) > 1}:
        group = [i for i, n in enumerate(names) if n == stem]
        folders = [full[i].parent.parts for i in group]
        depth = next(
            (k for k in range(1, max(map(len, folders)) + 1)
             if len({f[-k:] for f in folders}) == len(group)),
            None,
        )  # fmt: skip
        for i, f in zip(group, folders):
            if depth is None:
                names[i] = f"{stem}_{full[i].suffix.lstrip('.')}"
            else:
                names[i] = "__".join([*f[-depth:], stem])
    taken: set[str] = set()
    for i, name in enumerate(names):
        n, unique = 1, name
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique)
        names[i] = unique
    return names


def _segment_one(path: Path, name: str, out: Path, mode: str, qc: bool) -> int:
    """Write ``<name>_mask.png``, ``<name>_masked.png`` (and ``<name>_qc.png``); cell count."""
    from ..edge.imageio import read_field, write_field
    from ..edge.segment import qc_strip, segment

    rgb = read_field(path)
    result = segment(rgb, mode, stages=qc)
    write_field(out / f"{name}_mask.png", result.mask)
    write_field(out / f"{name}_masked.png", result.impose(rgb))
    if qc:
        write_field(out / f"{name}_qc.png", qc_strip(rgb, result))
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

    Images sharing a stem (a/x.jpg, b/x.jpg) get their folder in the name (a__x_mask.png);
    an image given twice is segmented once. Unreadable or unsuitable images are reported
    and skipped; the exit code is nonzero only when no image could be processed.
    """
    from rich.progress import track

    from ..edge.imageio import FieldError

    out.mkdir(parents=True, exist_ok=True)
    images = list({p.resolve(): p for p in images}.values())
    done = cells = 0
    for path, name in track(
        list(zip(images, output_names(images))),
        description="segmenting",
        console=err_console,
        disable=len(images) < 2,
    ):
        try:
            cells += _segment_one(path, name, out, mode.value, qc)
            done += 1
        except FieldError as exc:
            err_console.print(f"[red]skipped[/red] {exc.source}: {exc.problem}")
    err_console.print(
        f"{done} of {len(images)} images segmented ({mode.value}): {cells} cells, in {out}"
    )
    if done == 0:
        raise typer.Exit(1)
