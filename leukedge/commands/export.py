"""``leukedge export``: a trained model -> verified model bundles for the station."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail

FORMATS = ("onnx", "tflite")


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    if unknown := sorted(set(formats) - set(FORMATS)):
        fail(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    return formats


def _trained(run: Path) -> Path:
    """The model file to export: ``run`` itself (.pt or .keras) or a run folder's best."""
    from ..training.runs import find_run_config, trained_model

    try:
        model = trained_model(run)
    except FileNotFoundError as exc:
        fail(str(exc))
    if model is not None:
        return model
    if run.is_dir() and (find_run_config(run) or {}).get("family") == "keras":
        fail(f"{run}: a Keras run without best.keras (has its first epoch finished?)")
    fail(
        f"{run}: neither a .pt or .keras file nor a training run folder "
        "with weights/best.pt, train/weights/best.pt or best.keras"
    )


def _split_csv(record: dict, run_dir: Path) -> Path | None:
    """The split recorded for the run, else a ``split.csv`` in the run folder or next to it."""
    candidates = [Path(record["split_csv"])] if record.get("split_csv") else []
    candidates += [run_dir / "split.csv", run_dir.parent / "split.csv"]
    return next((p for p in candidates if p.is_file()), None)


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
    from ..edge.preprocess import Preprocess
    from ..training.runs import find_run_config

    model = _trained(run)
    keras_path = model if model.suffix == ".keras" else None
    formats = _formats(to or ("tflite,onnx" if keras_path else "onnx"))
    onnx_int8 = {"per_channel": per_channel, "activation": activation, "method": method}
    given = {"input_mode": input_mode, "segmentation": segmentation, "size": imgsz}
    given = {k: v for k, v in given.items() if v}
    if keras_path is not None:
        run_folder = keras_path.parent
        record = find_run_config(keras_path) or {}
        if "preprocess" not in record:
            fail(f"no run record with the preprocessing of {keras_path} (leukedge_train.json)")
        recorded = record["preprocess"]
    else:
        if "tflite" in formats:
            fail(
                "TFLite export of YOLO models is not implemented yet (it will need the optional "
                "'leukedge[export]' extra); export --to onnx, which the station runs as well"
            )
        from ..export.bundle_yolo import run_dir, training_config

        run_folder = run_dir(model)
        record = find_run_config(model) or {}
        recorded = (
            record.get("preprocess")
            or Preprocess(
                input_mode="field", size=training_config(model).get("imgsz", 224)
            ).to_dict()
        )
    split_csv = split_csv or _split_csv(record, run_folder)
    if split_csv is None:
        fail(f"no split.csv recorded for {model} or found next to it; pass --split-csv")
    out = out or (run if run.is_dir() else run_folder) / "export"
    try:
        spec = Preprocess.from_dict({**recorded, **given})
        err_console.print(f"preprocessing: {spec}")
        common = {"split_csv": split_csv, "int8": int8, "calib_n": calib}
        if keras_path is not None:
            from ..export.keras_export import export_keras_bundles

            bundles = export_keras_bundles(
                model,
                out,
                spec=spec,
                to=formats,
                onnx_int8=onnx_int8,
                uncertain_threshold=uncertain,
                **common,
            )
        else:
            from ..export.bundle_yolo import export_yolo_bundle

            bundles = export_yolo_bundle(
                model,
                out,
                preprocess=spec,
                uncertain_threshold=uncertain,
                **onnx_int8,
                **common,
            )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    _summary(f"{model} -> {out}", bundles, out)


def _summary(title: str, bundles: dict[str, Path], out: Path) -> None:
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
