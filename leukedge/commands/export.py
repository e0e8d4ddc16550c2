"""``leukedge export``: a trained model -> verified model bundles for the station."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.table import Table

from ..console import console, err_console

FORMATS = ("onnx", "tflite")


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if unknown := sorted(set(formats) - set(FORMATS)):
        _fail(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if "tflite" in formats:
        _fail(
            "TFLite export of YOLO models is not implemented yet (it will need the optional "
            "'leukedge[export]' extra); export --to onnx, which the station runs as well"
        )
    return formats


def _weights(run: Path) -> Path:
    """``run`` if it is a .pt file, else ``weights/best.pt`` in the run folder or one below it."""
    if run.is_file() and run.suffix == ".pt":
        return run
    found = sorted(run.glob("weights/best.pt")) + sorted(run.glob("*/weights/best.pt"))
    if not found:
        _fail(f"{run}: neither a .pt file nor a training run folder with weights/best.pt")
    return found[0]


def _split_csv(record: dict, run_dir: Path) -> Path | None:
    """The split recorded for the run, else a ``split.csv`` in the run folder or next to it."""
    candidates = [Path(record["split_csv"])] if record.get("split_csv") else []
    candidates += [run_dir / "split.csv", run_dir.parent / "split.csv"]
    return next((p for p in candidates if p.is_file()), None)


def export(
    run: Path = typer.Argument(..., help="Training run folder (weights/best.pt) or a .pt file."),
    to: str = typer.Option("onnx", "--to", help="Format(s), comma-separated: onnx, tflite."),
    int8: bool = typer.Option(
        True, "--int8/--no-int8", help="Also write an INT8 bundle and its fidelity report."
    ),
    split_csv: Path | None = typer.Option(
        None,
        "--split-csv",
        help="The split the model was trained on (train: calibration, val: evaluation). "
        "Default: the run's recorded split, else split.csv in or next to the run folder.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Default: RUN/export."),
    calib: int = typer.Option(300, "--calib", help="Train fields used to calibrate INT8."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Per-channel weight scales."),
    activation: str = typer.Option("uint8", "--activation", help="INT8 activations: uint8, int8."),
    method: str = typer.Option(
        "minmax", "--method", help="Calibration: minmax, entropy, percentile."
    ),
    input_mode: str | None = typer.Option(
        None,
        "--input-mode",
        help="What the model was trained on: field, field-wb, mask. "
        "Default: the run's recorded preprocessing, else field.",
    ),
    segmentation: str | None = typer.Option(
        None, "--segmentation", help="Segmentation for the mask input mode."
    ),
    imgsz: int | None = typer.Option(
        None, "--imgsz", help="Input size. Default: the run's recorded size, else args.yaml imgsz."
    ),
    uncertain: float = typer.Option(
        0.6, "--uncertain-threshold", help="Below this top probability a result is 'uncertain'."
    ),
) -> None:
    """Export a YOLO classifier to ONNX bundles (fp32 and INT8) with a fidelity report."""
    _formats(to)
    pt = _weights(run)

    from ..edge.preprocess import Preprocess
    from ..export.bundle_yolo import export_yolo_bundle, run_dir, training_config
    from ..training.runs import find_run_config

    record = find_run_config(pt) or {}
    split_csv = split_csv or _split_csv(record, run_dir(pt))
    if split_csv is None:
        _fail(f"no split.csv recorded for {pt} or found next to it; pass --split-csv")
    out = out or (run if run.is_dir() else run_dir(pt)) / "export"
    recorded = record.get("preprocess") or {
        "input_mode": "field",
        "size": training_config(pt).get("imgsz", 224),
    }
    given = {"input_mode": input_mode, "segmentation": segmentation, "size": imgsz}
    try:
        spec = Preprocess.from_dict({**recorded, **{k: v for k, v in given.items() if v}})
        err_console.print(f"preprocessing: {spec}")
        bundles = export_yolo_bundle(
            pt,
            out,
            split_csv=split_csv,
            preprocess=spec,
            int8=int8,
            calib_n=calib,
            per_channel=per_channel,
            activation=activation,
            method=method,
            uncertain_threshold=uncertain,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))

    from ..edge.bundle import read_manifest

    table = Table(title=f"{pt} -> {out}")
    for column in ("bundle", "model bytes", "val accuracy"):
        table.add_column(column)
    evaluations = {}
    for precision, bundle in bundles.items():
        manifest = read_manifest(bundle)
        evaluations[precision] = manifest["evaluation"]
        model_bytes = (bundle / manifest["model"]["file"]).stat().st_size
        table.add_row(bundle.name, f"{model_bytes:,}", f"{manifest['evaluation']['accuracy']:.4f}")
    console.print(table)
    if "int8" in evaluations:
        report = evaluations["int8"]["fidelity"]
        console.print(
            f"INT8 vs fp32 on {report['n']} {report['split']} fields: top-1 agreement "
            f"{report['top1_agreement']:.4f}, max |dp| {report['max_abs_prob_diff']:.2e}, "
            f"{report['size_ratio']:.2f}x smaller. Report: {out / 'fidelity.md'}"
        )
