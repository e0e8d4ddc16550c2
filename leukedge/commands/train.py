"""``leukedge train``: YOLO (Ultralytics) and Keras classifiers from a leak-safe split."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import console, err_console
from ..edge.preprocess import DEFAULT_WHITE_POINT

app = typer.Typer(help="Train classifiers (offline: nothing is downloaded).", no_args_is_help=True)

INPUT_HELP = "Model input: field, field-wb (white-balanced field) or mask (reference notebook)."
WHITE_POINT = typer.Option(
    DEFAULT_WHITE_POINT,
    "--white-point",
    help="How field-wb finds the background: bright-median, or local-max (the 0.1 models).",
)
# The data options of every command that trains (train yolo/keras, study).
SPLIT_CSV = typer.Option(None, "--split-csv", help="split.csv from `leukedge data split`.")
DATA = typer.Option(None, "--data", help="Data folder to split when no --split-csv.")
CLASSES = typer.Option("4", "--classes", help="Class scheme when splitting --data: 4, 3 or 2.")


FOLDS = typer.Option(
    0,
    "--folds",
    help="K > 1: K-fold cross-validation of the recipe on train+val instead (OUT/fold<i>/, "
    "OUT/cv.md: mean and spread across folds); the test split is not used.",
)


def train_and_report(
    family: str, split_csv: Path, out: Path, threads: int | None, folds: int, **recipe
) -> None:
    """Train a run of ``family`` (``leukedge.training.families``), evaluate it on its val
    and test splits (``out/report-<split>/``) and print the headline figures; or, with
    ``folds``, cross-validate the recipe (``leukedge.training.crossval``)."""
    from ..evaluation.render import check_plots, report_splits
    from ..training.crossval import CV_MD, cross_validate
    from ..training.families import FAMILIES

    check_plots()  # before training, not after
    if folds:
        seed = recipe.pop("seed")
        cross_validate(family, split_csv, out, folds, seed=seed, threads=threads, **recipe)
        console.print((out / CV_MD).read_text())
        return
    family = FAMILIES[family]
    best = family.train(split_csv, out, threads=threads, **recipe)
    err_console.print(f"best model: {best}")
    for split, result in report_splits(family.predictor(best, threads), split_csv, out).items():
        worst = result["worst_shift"]
        line = f"{split}: accuracy {result['clean']['accuracy']:.4f}"
        if worst:
            line += f", worst shift {worst} {result['shifts'][worst]['accuracy']:.4f}"
        if "shortcut" in result:
            line += f", shortcut audit {result['shortcut']['accuracy']:.4f} (lower is better)"
        err_console.print(f"{line}  -> {out / f'report-{split}' / 'report.md'}")


@app.command()
def yolo(
    out: Path = typer.Option(Path("runs/yolo"), "--out", "-o", help="Run folder."),
    split_csv: Path = SPLIT_CSV,
    data: Path = DATA,
    classes: str = CLASSES,
    arch: str = typer.Option(
        "yolo11n-cls", help="yolo11n-cls, yolov8n-cls, yolo12n-cls or a YAML."
    ),
    weights: Path = typer.Option(None, help="Local .pt to initialise from (never downloaded)."),
    input_mode: str = typer.Option("field-wb", "--input", help=INPUT_HELP),
    white_point: str = WHITE_POINT,
    seg: str = typer.Option("robust", help="Segmentation for the mask input: reference or robust."),
    epochs: int = typer.Option(30, help="Epochs."),
    imgsz: int = typer.Option(224, help="Input size in pixels."),
    batch: int = typer.Option(32, help="Batch size."),
    lr: float = typer.Option(
        None, help="AdamW learning rate, decayed linearly to 1% (default: Ultralytics' choice)."
    ),
    warmup: float = typer.Option(
        3.0, help="Warm-up epochs (0 when fine-tuning trained --weights)."
    ),
    jitter: bool = typer.Option(
        True, help="Stain/lamp jitter on the raw field before preprocessing."
    ),
    copies: int = typer.Option(2, help="Jittered copies of each training field."),
    flips: bool = typer.Option(True, help="Random horizontal and vertical flips (Ultralytics)."),
    turns: bool = typer.Option(
        False,
        help="A random flip or quarter turn of each jittered copy (Ultralytics only flips;"
        " measured: 20 epochs converged slower, validation 98.9% vs 99.6%).",
    ),
    crop: float = typer.Option(
        0.5,
        help="Random-crop jitter: crops keep 1-CROP to all of the field's area and are"
        " resized, so cells change apparent size (0: keep the microscope's magnification).",
    ),
    ultralytics_colour: bool = typer.Option(
        True,
        help="Ultralytics' own colour jitter on top of the stain/lamp jitter (brightness and"
        " contrast x0.6-1.4, saturation x0.3-1.7, hue +-2.7 OpenCV units).",
    ),
    balance: bool = typer.Option(True, help="Balance classes by flips up to the largest."),
    seed: int = typer.Option(0, help="Seed for the split, the jitter and training."),
    threads: int = typer.Option(None, help="CPU threads (default: all)."),
    device: str = typer.Option(None, help="cpu, or a CUDA index (default: GPU when present)."),
    workers: int = typer.Option(
        0, help="Data-loading processes (0: in the training process; 8 suits a GPU machine)."
    ),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    folds: int = FOLDS,
) -> None:
    """Train a YOLO classifier on what the station sees (same preprocessing), then evaluate it."""
    from ..edge.preprocess import Preprocess
    from ..training.jitter import Jitter
    from ..training.runs import training_split

    spec = Preprocess(input_mode=input_mode, segmentation=seg, size=imgsz, white_point=white_point)
    recipe = dict(spec=spec, arch=arch, epochs=epochs, batch=batch, seed=seed, copies=copies,
                  jitter_cfg=Jitter() if jitter else None, turns=turns, flips=flips, crop=crop,
                  ultralytics_colour=ultralytics_colour, balance=balance, lr=lr, warmup=warmup,
                  weights=weights, device=device, workers=workers, resume=resume)  # fmt: skip
    split_csv = training_split(out, split_csv, data, classes, seed)
    train_and_report("yolo", split_csv, out, threads, folds, **recipe)


@app.command()
def keras(
    out: Path = typer.Option(Path("runs/keras"), "--out", "-o", help="Run folder."),
    split_csv: Path = SPLIT_CSV,
    data: Path = DATA,
    classes: str = CLASSES,
    arch: str = typer.Option("mobilenetv2", help="mobilenetv2, efficientnetb0 or nasnetmobile."),
    dual: bool = typer.Option(
        False, help="Two inputs, the field and the masked field, one shared backbone."
    ),
    weights: Path = typer.Option(
        None, help="Local backbone weights (.h5/.weights.h5, no top); never downloaded."
    ),
    init: Path = typer.Option(
        None, help="Trained .keras of a run to fine-tune (fresh optimizer and schedule)."
    ),
    freeze: bool = typer.Option(False, help="Keep the --weights backbone fixed."),
    input_mode: str = typer.Option("field-wb", "--input", help=INPUT_HELP),
    white_point: str = WHITE_POINT,
    seg: str = typer.Option("robust", help="Segmentation for mask inputs: reference or robust."),
    epochs: int = typer.Option(30, help="Epochs."),
    imgsz: int = typer.Option(224, help="Input size in pixels."),
    batch: int = typer.Option(32, help="Batch size."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    cosine: bool = typer.Option(True, help="Cosine decay of the learning rate to 0."),
    alpha: float = typer.Option(1.0, help="MobileNetV2 width multiplier."),
    bn_momentum: float = typer.Option(
        None, help="BatchNormalization momentum (Keras: 0.99; ~0.9 for short runs)."
    ),
    jitter: bool = typer.Option(True, help="Stain/lamp jitter on the raw field, on the fly."),
    flips: bool = typer.Option(True, help="Random flips and quarter turns of training fields."),
    balance: bool = typer.Option(True, help="Balance classes by flips up to the largest."),
    seed: int = typer.Option(0, help="Seed for the split, the augmentation and training."),
    threads: int = typer.Option(None, help="CPU threads of the Keras backend (default: its own)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    folds: int = FOLDS,
) -> None:
    """Train a Keras classifier (reference notebook head) on what the station sees, then
    evaluate it on the val and test splits."""
    from ..training.jitter import Jitter
    from ..training.keras_train import keras_preprocess
    from ..training.runs import training_split

    spec = keras_preprocess(arch, input_mode, seg, imgsz, white_point)
    recipe = dict(arch=arch, spec=spec, dual=dual, epochs=epochs, batch=batch, seed=seed,
                  jitter_cfg=Jitter() if jitter else None, flips=flips, balance=balance,
                  weights=weights, init=init, freeze=freeze, bn_momentum=bn_momentum,
                  alpha=alpha, lr=lr, cosine=cosine, resume=resume)  # fmt: skip
    split_csv = training_split(out, split_csv, data, classes, seed)
    train_and_report("keras", split_csv, out, threads, folds, **recipe)
