"""``leukedge study``: the reference notebook's seven-model comparison on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import console, err_console
from .train import CLASSES, DATA, SPLIT_CSV


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
    folds: int = typer.Option(
        0,
        help="K > 1: cross-validate each recipe on train+val in K folds instead (OUT/cv<K>/: "
        "mean and spread across folds); the test split is not used.",
    ),
) -> None:
    """Train and evaluate EfficientNet-B0, MobileNetV2, NASNet-Mobile, dual MobileNetV2,
    YOLOv8n/11n/12n-cls (and MobileNetV2 on the notebook's own recipe) on one leak-safe
    split; write study.md/json/png beside the notebook's published figures, each model
    paired with the best (McNemar), or with --folds a cross-validated table. Finished runs
    in --out are reused."""
    from ..training.runs import training_split
    from ..training.study import (
        choose_models,
        quick_data,
        run_study,
        run_study_cv,
        train_options,
    )

    chosen = choose_models(models)
    epochs, ratios = {"yolo": epochs_yolo, "keras": epochs_keras}, None
    if quick:
        imgsz, epochs = 64, {"yolo": 1, "keras": 1}
        if split_csv is None and data is None:
            data, ratios = quick_data(out, seed)
    split_csv = training_split(out, split_csv, data, classes, seed, ratios)
    extra = train_options(seed, threads, workers, quick)
    settings = {"models": chosen, "epochs": epochs, "imgsz": imgsz, "extra": extra}
    if folds:
        run_study_cv(split_csv, out, folds, **settings)
        page = out / f"cv{folds}" / "study-cv.md"
    else:
        run_study(split_csv, out, **settings)
        page = out / "study.md"
    console.print(page.read_text())
    err_console.print(f"study: {page} ({len(chosen)} models)")
