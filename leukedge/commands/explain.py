"""``leukedge explain``: what the model was given and why it decided, per field image."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import typer

from ..console import console, err_console


def output_stems(images: list[Path]) -> list[str]:
    """One output name per image: its stem, or, for stems that two inputs share (same name
    in different folders), the stem and 8 hex digits of the SHA-256 of its resolved path."""
    counts = Counter(p.stem for p in images)
    return [
        p.stem
        if counts[p.stem] == 1
        else f"{p.stem}-{hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:8]}"
        for p in images
    ]


def explain(
    images: list[Path] = typer.Argument(..., help="Smear field images (JPEG, PNG, ...)."),
    model: str = typer.Option("default", "--model", "-m", help="Bundle folder or shipped name."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the images (created)."),
    grid: int = typer.Option(7, "--grid", help="Patch positions per side (grid^2 inferences)."),
) -> None:
    """Write, per field, what the model was given (<name>_view.png) and its occlusion map
    drawn over the field with the blast-mask outline (<name>_explain.png).

    The map shows how much the predicted class's probability falls when a patch of the
    model's view is covered with background: red areas are what the decision rests on.
    Unreadable images are reported and skipped; the exit code is nonzero only when no image
    could be explained.
    """
    import time

    from rich.progress import track

    from ..edge.explain import occlusion_map, overlay, preprocessed_view
    from ..edge.imageio import FieldError, read_field, write_field
    from ..edge.model import load_model
    from ..edge.segment import segment

    bundle = load_model(model)
    out.mkdir(parents=True, exist_ok=True)
    done, seconds = 0, 0.0
    pairs = list(zip(images, output_stems(images)))
    for path, stem in track(pairs, description="explaining", console=err_console):
        try:
            rgb = read_field(path)
        except FieldError as exc:
            err_console.print(f"[red]skipped[/red] {exc.source}: {exc.problem}")
            continue
        t0 = time.perf_counter()
        mask = segment(rgb, bundle.preprocess.segmentation).mask
        pred = bundle.predict(rgb, mask)
        heat = occlusion_map(rgb, bundle, grid=grid, mask=mask)
        seconds += time.perf_counter() - t0
        write_field(out / f"{stem}_view.png", preprocessed_view(rgb, bundle, mask))
        write_field(out / f"{stem}_explain.png", overlay(rgb, heat, mask))
        console.print(f"{path}\t{pred.label}\t{pred.confidence:.3f}\t{out / stem}_explain.png")
        done += 1
    if done:
        err_console.print(
            f"{done} of {len(images)} fields explained with {bundle.name}, "
            f"{seconds / done:.2f} s per field, in {out}"
        )
    else:
        err_console.print(f"no field of {len(images)} could be explained")
        raise typer.Exit(1)
