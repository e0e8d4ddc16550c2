"""``leukedge train``: YOLO (Ultralytics) and Keras classifiers from a leak-safe split."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import err_console

app = typer.Typer(help="Train classifiers (offline: nothing is downloaded).", no_args_is_help=True)

INPUT_HELP = "Model input: field, field-wb (white-balanced field) or mask (reference notebook)."


def split_for(run_dir: Path, split_csv: Path | None, data: Path | None, classes: str, seed: int):
    """The split.csv to train on: the given one, or a new leak-safe split of ``data``."""
    if split_csv is not None:
        return split_csv
    if data is None:
        err_console.print("[red]error:[/red] give --split-csv or --data")
        raise typer.Exit(2)
    from ..training.datasets import find_dataset
    from ..training.split import make_split

    make_split(find_dataset(data), run_dir / "split", classes, seed)
    return run_dir / "split" / "split.csv"


@app.command()
def yolo(
    out: Path = typer.Option(Path("runs/yolo"), "--out", "-o", help="Run folder."),
    split_csv: Path = typer.Option(
        None, "--split-csv", help="split.csv from `leukedge data split`."
    ),
    data: Path = typer.Option(None, "--data", help="Data folder to split when no --split-csv."),
    classes: str = typer.Option("4", help="Class scheme when splitting --data: 4, 3 or 2."),
    arch: str = typer.Option(
        "yolo11n-cls", help="yolo11n-cls, yolov8n-cls, yolo12n-cls or a YAML."
    ),
    weights: Path = typer.Option(None, help="Local .pt to initialise from (never downloaded)."),
    input_mode: str = typer.Option("field-wb", "--input", help=INPUT_HELP),
    seg: str = typer.Option("robust", help="Segmentation for the mask input: reference or robust."),
    epochs: int = typer.Option(30, help="Epochs."),
    imgsz: int = typer.Option(224, help="Input size in pixels."),
    batch: int = typer.Option(32, help="Batch size."),
    jitter: bool = typer.Option(
        True, help="Stain/lamp jitter on the raw field before preprocessing."
    ),
    copies: int = typer.Option(2, help="Jittered copies of each training field."),
    balance: bool = typer.Option(True, help="Balance classes by flips up to the largest."),
    seed: int = typer.Option(0, help="Seed for the split, the jitter and training."),
    threads: int = typer.Option(None, help="CPU threads (default: all)."),
    device: str = typer.Option(None, help="cpu, or a CUDA index (default: GPU when present)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
) -> None:
    """Train a YOLO classifier on what the station sees (same preprocessing), then evaluate it."""
    from dataclasses import asdict
    from functools import partial

    from ..edge.preprocess import Preprocess, view
    from ..training.jitter import Jitter
    from ..training.jitter import jitter as jitter_fn
    from ..training.runs import write_run_config
    from ..training.yolo import build_imagefolder, train_yolo

    spec = Preprocess(input_mode=input_mode, segmentation=seg, size=imgsz)
    split_csv = split_for(out, split_csv, data, classes, seed)
    tree = out / "data"
    if not (resume and (tree / "train").is_dir()):
        build_imagefolder(
            split_csv,
            tree,
            partial(view, spec=spec),
            balance=balance,
            augment=partial(jitter_fn, cfg=Jitter()) if jitter else None,
            copies=copies if jitter else 0,
            seed=seed,
        )
    config = {
        "family": "yolo",
        "arch": arch,
        "preprocess": spec.to_dict(),
        "jitter": asdict(Jitter()) if jitter else None,
        "copies": copies if jitter else 0,
        "balance": balance,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "weights": str(weights) if weights else None,
    }
    write_run_config(out, config, split_csv)
    best = train_yolo(
        tree,
        out / "train",
        arch=arch,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        weights=weights,
        threads=threads,
        device=device,
        resume=resume,
    )
    err_console.print(f"best weights: {best}")
