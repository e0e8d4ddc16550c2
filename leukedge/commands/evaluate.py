"""``leukedge eval``: a model bundle or YOLO checkpoint on labelled fields, with the
shift suite and the shortcut audit (``leukedge.training.report``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail


def _trained_file(model: str) -> Path | None:
    """The YOLO ``.pt`` or Keras ``.keras`` of a training run (``model`` is either file or
    a run folder holding one); None when ``model`` is none of these."""
    from ..training.runs import trained_model

    try:
        return trained_model(model)
    except FileNotFoundError as exc:
        fail(str(exc))


def _trained_predictor(path: Path, threads: int | None):
    """(name, classes, predict) for a training run's ``.pt`` or ``.keras``."""
    if path.suffix == ".pt":
        from ..training.yolo import yolo_predictor

        return yolo_predictor(path, threads)
    from ..training.keras_train import keras_predictor

    try:
        return keras_predictor(path)
    except ValueError as exc:
        fail(str(exc))


def _bundle_predictor(model: str, backend: str, threads: int | None):
    """(name, classes, predict) for a model bundle; probabilities in the bundle's class order."""
    import numpy as np

    from ..edge.bundle import BundleError
    from ..edge.model import load_model

    try:
        m = load_model(model, backend, threads)
    except BundleError as exc:
        fail(str(exc))

    def predict(fields: list[np.ndarray]) -> np.ndarray:
        preds = m.predict_batch(fields)
        return np.array([[p.probabilities[c] for c in m.classes] for p in preds])

    return m.name, list(m.classes), predict


def _items(data: Path | None, split_csv: Path | None, split: str, scheme: str | None, classes):
    """(path, label) items: the ``split`` rows of ``split_csv``, else every field of ``data``."""
    if split_csv is not None:
        from ..data.split import read_split

        rows = read_split(split_csv, split)
        if not rows:
            fail(f"{split_csv}: no rows of split {split!r}")
        return [(r.path, r.label) for r in rows]
    if data is None:
        fail("give --data or --split-csv")
    from ..data.layouts import find_dataset
    from ..edge.classes import SCHEMES, scheme_classes

    if scheme is None:
        scheme = next((s for s in SCHEMES if set(scheme_classes(s)) == set(classes)), None)
        if scheme is None:
            fail(f"model classes {classes} match no class scheme; pass --classes")
    try:
        return [(str(p), label) for p, label, _ in find_dataset(data).select(scheme)]
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _print(result: dict) -> None:
    def ci(lo_hi) -> str:
        return f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}"

    clean = result["clean"]
    table = Table(title=f"{result['n']} fields ({len(result['skipped'])} skipped)")
    for column in ("condition", "accuracy", "95% CI", "macro-F1", "ECE"):
        table.add_column(column, justify="left" if column == "condition" else "right")
    rows = {"clean": clean, **result["shifts"]}
    if "shortcut" in result:
        rows["shortcut (lower is better)"] = result["shortcut"]
    for name, m in rows.items():
        style = "bold" if name == result["worst_shift"] else None
        cells = (name, f"{m['accuracy']:.3f}", ci(m["accuracy_ci"]), f"{m['macro_f1']:.3f}")
        table.add_row(*cells, f"{m['ece']:.3f}", style=style)
    console.print(table)
    per_class = Table(title="per class (clean)")
    for column in ("class", "support", "sensitivity", "specificity", "F1"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name, m in clean["per_class"].items():
        cells = [m[k] for k in ("sensitivity", "specificity", "f1")]
        per_class.add_row(
            name, str(m["support"]), *("–" if v is None else f"{v:.3f}" for v in cells)
        )
    console.print(per_class)
    if result["worst_shift"]:
        console.print(f"worst shift: [bold]{result['worst_shift']}[/bold]")


def evaluate(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="Bundle folder or name ('default'), training run folder, .pt or .keras.",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset folder (Taleqani, Kaggle or class folders): all its fields."
    ),
    split_csv: Path | None = typer.Option(
        None, "--split-csv", help="split.csv: evaluate only its --split rows instead of --data."
    ),
    split: str = typer.Option("test", "--split", help="Split of --split-csv to evaluate."),
    classes: str | None = typer.Option(
        None, "--classes", help="Class scheme for --data: 4, 3 or 2 [default: the model's]."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report JSON here."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder [default: runs/eval/<model name>]."
    ),
    shifts: bool = typer.Option(True, "--shifts/--no-shifts", help="Run the colour-shift suite."),
    shortcut: bool = typer.Option(
        True, "--shortcut/--no-shortcut", help="Run the shortcut audit (cells painted out)."
    ),
    reference: Path | None = typer.Option(
        None, "--reference", help="JSON of figures to show beside (e.g. another report.json)."
    ),
    backend: str = typer.Option("auto", "--backend", help="Bundles: auto, onnxruntime or litert."),
    threads: int | None = typer.Option(None, "--threads", help="Inference threads."),
    batch: int = typer.Option(32, "--batch", help="Fields per inference batch."),
    record: bool = typer.Option(
        False,
        "--record",
        help="Keep the figures in the bundle's manifest (evaluation.<split>; hashes rewritten).",
    ),
) -> None:
    """Evaluate a model on labelled fields: accuracy, macro-F1, per-class sensitivity and
    specificity, calibration, colour shifts and the shortcut audit, with 95% bootstrap CIs."""
    from ..training.report import evaluate as run_evaluation
    from ..training.report import write_report

    trained = _trained_file(model)
    if record and trained is not None:
        fail(f"{model}: --record writes into a bundle's manifest; this is a training run")
    if trained is not None:
        name, model_classes, predict = _trained_predictor(trained, threads)
    else:
        name, model_classes, predict = _bundle_predictor(model, backend, threads)
    items = _items(data, split_csv, split, classes, model_classes)
    ref = None
    if reference is not None:
        ref = {"name": reference.stem, **json.loads(reference.read_text())}
    try:
        result = run_evaluation(
            predict, items, model_classes, shifts=shifts, shortcut=shortcut, batch=batch
        )
    except ValueError as exc:
        fail(str(exc))
    for skipped in result["skipped"]:
        err_console.print(f"[yellow]skipped[/yellow] {skipped['path']}: {skipped['problem']}")
    source = f"{split_csv} ({split})" if split_csv is not None else str(data)
    out = out or Path("runs") / "eval" / name
    write_report(result, out, f"{name} on {source}", ref)
    _print(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text((out / "report.json").read_text())
    err_console.print(f"report: {out / 'report.md'}")
    if record:
        _record(model, result, split if split_csv is not None else "data", source, split_csv)


def _record(model: str, result: dict, key: str, source: str, split_csv: Path | None) -> None:
    """Store ``headline`` figures as ``evaluation[key]`` of the (verified) bundle ``model``."""
    from ..edge.bundle import read_manifest, sha256_file, write_manifest
    from ..edge.model import resolve_bundle
    from ..training.report import headline

    bundle = resolve_bundle(model)
    manifest = read_manifest(bundle)
    manifest.pop("files")
    figures = {**headline(result, key), "data": source}
    if split_csv is not None:
        figures["data_sha256"] = sha256_file(split_csv)
    manifest["evaluation"] = {**manifest.get("evaluation", {}), key: figures}
    write_manifest(bundle, manifest)
    err_console.print(f"recorded as evaluation.{key} in {bundle / 'leukedge.json'}")
