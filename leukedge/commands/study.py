"""``leukedge study``: the reference notebook's seven-model comparison on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import console, err_console
from . import fail
from .train import CLASSES, DATA, SPLIT_CSV, split_for


def study(
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="Study folder."),
    split_csv: Path = SPLIT_CSV,
    data: Path = DATA,
    classes: str = CLASSES,
    models: str = typer.Option(None, help="Comma-separated subset of the study's run names."),
    epochs_yolo: int = typer.Option(40, help="Epochs for the YOLO models."),
    epochs_keras: int = typer.Option(30, help="Epochs for the Keras models."),
    imgsz: int = typer.Option(224, help="Input size in pixels."),
    threads: int = typer.Option(None, help="CPU threads for each training run."),
    workers: int = typer.Option(0, help="YOLO data-loading processes (8 suits a GPU machine)."),
    seed: int = typer.Option(0, help="Seed for the split and every run."),
    quick: bool = typer.Option(
        False, help="CI-sized: generated fields, 64 px, one epoch (checks the machinery only)."
    ),
) -> None:
    """Train and evaluate EfficientNet-B0, MobileNetV2, NASNet-Mobile, dual MobileNetV2,
    YOLOv8n/11n/12n-cls (and MobileNetV2 on the notebook's own recipe) on one leak-safe
    split; write study.md/json/png beside the notebook's published figures. Finished runs
    in --out are reused."""
    from ..training.study import STUDY_MODELS, run_study

    chosen = STUDY_MODELS
    if models:
        names = [m.strip() for m in models.split(",")]
        known = {m.name for m in STUDY_MODELS}
        if unknown := [n for n in names if n not in known]:
            fail(f"unknown model(s) {unknown}; choose from {sorted(known)}")
        chosen = tuple(m for m in STUDY_MODELS if m.name in names)
    common = ["--seed", str(seed), *(["--threads", str(threads)] if threads else [])]
    extra = {
        "yolo": [*common, "--copies", "3", "--batch", "64", "--workers", str(workers)],
        "keras": [*common, "--bn-momentum", "0.99"],
    }
    epochs, ratios = {"yolo": epochs_yolo, "keras": epochs_keras}, None
    if quick:
        if split_csv is None and data is None:
            from ..edge.synth import write_synth_dataset

            data, ratios = out / "data", (0.6, 0.2, 0.2)  # 2 test fields a class
            write_synth_dataset(data, 10, seed=seed, size=(64, 64))
        imgsz, epochs = 64, {"yolo": 1, "keras": 1}
        extra = {
            "yolo": [*common, "--copies", "0", "--batch", "8"],
            "keras": [*common, "--bn-momentum", "0.9", "--batch", "8"],
        }
    split_csv = split_for(out, split_csv, data, classes, seed, ratios)
    try:
        result = run_study(split_csv, out, models=chosen, epochs=epochs, imgsz=imgsz, extra=extra)
    except RuntimeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print((out / "study.md").read_text())
    err_console.print(f"study: {out / 'study.md'} ({len(result['models'])} models)")
