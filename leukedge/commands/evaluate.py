"""``leukedge eval``: a model bundle or training run on labelled fields, with the shift suite
and the shortcut audit (``leukedge.evaluation``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail


def print_result(result: dict) -> None:
    """The headline tables of an ``evaluate`` result: every condition, then per class."""

    def ci(lo_hi) -> str:
        return f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}"

    table = Table(title=f"{result['n']} fields ({len(result['skipped'])} skipped)")
    for column in ("condition", "accuracy", "95% CI", "macro-F1", "ECE"):
        table.add_column(column, justify="left" if column == "condition" else "right")
    rows = {"clean": result["clean"], **result["shifts"]}
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
    for name, m in result["clean"]["per_class"].items():
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
    from ..evaluation.evaluate import evaluate as run_evaluation
    from ..evaluation.evaluate import labelled_items, record_in_bundle
    from ..evaluation.render import check_plots, write_report
    from ..training.families import load_predictor, trained_model

    check_plots()
    if record and trained_model(model) is not None:
        fail(f"{model}: --record writes into a bundle's manifest; this is a training run")
    predictor = load_predictor(model, backend, threads)
    items = labelled_items(predictor.classes, data, split_csv, split, classes)
    ref = (
        None if reference is None else {"name": reference.stem, **json.loads(reference.read_text())}
    )
    result = run_evaluation(predictor, items, shifts=shifts, shortcut=shortcut, batch=batch)
    for skipped in result["skipped"]:
        err_console.print(f"[yellow]skipped[/yellow] {skipped['path']}: {skipped['problem']}")
    source = f"{split_csv} ({split})" if split_csv is not None else str(data)
    out = out or Path("runs") / "eval" / predictor.name
    write_report(result, out, f"{predictor.name} on {source}", ref)
    print_result(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text((out / "report.json").read_text())
    err_console.print(f"report: {out / 'report.md'}")
    if record:
        key = split if split_csv is not None else "data"
        manifest = record_in_bundle(model, result, key, source, split_csv)
        err_console.print(f"recorded as evaluation.{key} in {manifest}")
