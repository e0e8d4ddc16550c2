"""``leukedge export``: a trained model -> verified model bundles for the station."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console


def print_bundles(title: str, bundles: dict[str, Path], out: Path) -> None:
    """A table of the bundles, and each INT8 bundle's fidelity to its fp32 one."""
    from ..edge.bundle import read_manifest
    from ..export.fidelity import shortfalls

    table = Table(title=title)
    for column in ("bundle", "model bytes", "val accuracy"):
        table.add_column(column)
    reports = {}
    for bundle in bundles.values():
        manifest = read_manifest(bundle)
        evaluation = manifest["evaluation"]
        if "fidelity" in evaluation:
            reports[bundle.name] = evaluation["fidelity"]
        model_bytes = (bundle / manifest["model"]["file"]).stat().st_size
        table.add_row(bundle.name, f"{model_bytes:,}", f"{evaluation['accuracy']:.4f}")
    console.print(table)
    for name, report in reports.items():
        console.print(
            f"{name} vs fp32 on {report['n']} {report['split']} fields: top-1 agreement "
            f"{report['top1_agreement']:.4f}, max |dp| {report['max_abs_prob_diff']:.2e}, "
            f"{report['size_ratio']:.2f}x smaller."
        )
        if problems := shortfalls(report):
            err_console.print(f"[yellow]warning:[/yellow] {name}: {'; '.join(problems)}: "
                              "do not deploy it; try --activation or --per-channel")  # fmt: skip
    if reports:
        console.print(f"Reports: {out}/fidelity*.md")


def export(
    run: Path = typer.Argument(
        ..., help="Training run folder (weights/best.pt or best.keras), a .pt or a .keras file."
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        help="Format(s), comma-separated: onnx, tflite. Default: onnx (YOLO), tflite,onnx (Keras).",
    ),
    int8: bool = typer.Option(
        True, "--int8/--no-int8", help="Also write INT8 bundles and their fidelity reports."
    ),
    split_csv: Path | None = typer.Option(
        None,
        "--split-csv",
        help="The split the model was trained on (train: calibration, val: evaluation). "
        "Default: the run's recorded split, else split.csv in or next to the run folder.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Default: RUN/export."),
    calib: int = typer.Option(300, "--calib", help="Train fields used to calibrate INT8."),
    per_channel: bool = typer.Option(
        False, "--per-channel", help="ONNX INT8: per-channel weight scales."
    ),
    activation: str = typer.Option(
        "int8", "--activation", help="ONNX INT8 activations: int8 (S8S8) or uint8 (U8S8)."
    ),
    method: str = typer.Option(
        "minmax", "--method", help="ONNX INT8 calibration: minmax, entropy, percentile."
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
    """Export a YOLO classifier to ONNX bundles, or a Keras classifier to TFLite and ONNX
    bundles (fp32 and INT8), with fidelity reports."""
    from ..export.families import export_run

    given = {"input_mode": input_mode, "segmentation": segmentation, "size": imgsz}
    exported = export_run(
        run,
        out,
        formats=[f.strip().lower() for f in to.split(",") if f.strip()] if to else None,
        split_csv=split_csv,
        int8=int8,
        calib_n=calib,
        onnx_int8={"per_channel": per_channel, "activation": activation, "method": method},
        preprocess={k: v for k, v in given.items() if v},
        uncertain_threshold=uncertain,
    )
    err_console.print(f"preprocessing: {exported.spec}")
    print_bundles(f"{exported.model} -> {exported.out}", exported.bundles, exported.out)
