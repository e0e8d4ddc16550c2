"""``leukedge eval``: a model bundle or training run on labelled fields, with the shift suite
and the shortcut audit (``leukedge.evaluation``)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail
from .score import Engine, field_progress


def print_result(result: dict, reference: dict | None = None) -> None:
    """The headline tables of an ``evaluate`` result: every condition with its fields right
    and exact interval, per class, and the paired comparison with ``reference``."""
    from ..evaluation.render import class_figure, paired_results, right

    table = Table(
        title=f"{result['n']} fields ({len(result['skipped'])} skipped)",
        caption="fields right: exact interval; shortcut audit: lower is better",
    )
    for column in ("condition", "fields right (95% CI)", "macro-F1 (95% CI)", "ECE"):
        table.add_column(column, justify="left" if column == "condition" else "right", no_wrap=True)
    rows = {"clean": result["clean"], **result["shifts"]}
    if "shortcut" in result:
        rows["shortcut"] = result["shortcut"]
    for name, m in rows.items():
        lo, hi = m["macro_f1_ci"]
        f1 = f"{m['macro_f1']:.3f} ({lo:.3f}–{hi:.3f})"
        style = "bold" if name == result["worst_shift"] else None
        table.add_row(name, right(m), f1, f"{m['ece']:.3f}", style=style)
    console.print(table)
    per_class = Table(title="per class (clean; 95% CI, exact)")
    for column in ("class", "support", "sensitivity", "specificity", "F1"):
        per_class.add_column(column, justify="left" if column == "class" else "right", no_wrap=True)
    for name, m in result["clean"]["per_class"].items():
        f1 = "–" if m["f1"] is None else f"{m['f1']:.3f}"
        cells = (class_figure(m, "sensitivity"), class_figure(m, "specificity"), f1)
        per_class.add_row(name, str(m["support"]), *cells)
    console.print(per_class)
    if result["worst_shift"]:
        console.print(f"worst shift: [bold]{result['worst_shift']}[/bold]")
    if reference and (comparison := paired_results(result, reference, ("this", "reference"))):
        paired = Table(title=f"paired with {reference.get('name', 'reference')} (exact McNemar)")
        for column in ("condition", "both right", "only this", "only reference", "p", "verdict"):
            paired.add_column(column, justify="left" if column == "condition" else "right")
        for name, m in comparison.items():
            counts = (m["both_right"], m["only_a_right"], m["only_b_right"])
            paired.add_row(name, *map(str, counts), f"{m['p_value']:.3g}", m["verdict"])
        console.print(paired)


def _run_engine(model, backend: str, engine: str, workers, address, batch, paths, conditions):
    """``evaluate``'s ``Engine``: the fields' predictions under ``conditions`` in the
    workers of ``engine`` (``leukedge.scale``), with a progress display of fields."""
    from ..evaluation.evaluate import RECORD_COLUMNS, condition_scorer
    from ..scale import Job, run_paths

    scorer = partial(condition_scorer, conditions=conditions)
    job = Job(model.bundle, model.sha256, scorer, RECORD_COLUMNS, backend)
    display, update = field_progress("evaluating")
    total, done = len(set(paths)), 0
    with display:
        update(done, total)
        for records in run_paths(paths, job, engine, workers, batch, address):
            done += len(records)
            update(done, total)
            yield records


def _predictor(model: str, backend: str, threads, engine: Engine | None, workers, address, batch):
    """The ``Predictor`` of ``model`` and, with ``--engine``, the ``Engine`` that runs its
    bundle in workers (None: in this process)."""
    from ..edge.model import load_model
    from ..evaluation.evaluate import model_predictor
    from ..scale import check_options
    from ..training.families import load_predictor, trained_model

    check_options(engine.value if engine else "local", workers, batch, address)
    if engine is None:
        if workers is not None:
            fail("--workers sets an engine's processes: use it with --engine local or ray")
        return load_predictor(model, backend, threads), None
    if trained_model(model) is not None:
        fail(f"{model}: a training run; --engine runs bundles: export it first or drop --engine")
    net = load_model(model, backend, threads)
    run = partial(_run_engine, net, backend, engine.value, workers, address, batch)
    return model_predictor(net), run


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
    threads: int | None = typer.Option(
        None, "--threads", help="Inference threads (in this process; engine workers use one)."
    ),
    batch: int = typer.Option(
        32, "--batch", min=1, help="Fields per inference (and engine) batch."
    ),
    engine: Engine | None = typer.Option(
        None,
        "--engine",
        help="Bundles on large sets: read and predict in a process pool (local) or on Ray "
        "Data (ray), as 'leukedge score' (default: in this process).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="--engine processes/actors (default: all CPUs)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="--engine ray: the Ray cluster to join (default: a local Ray)."
    ),
    record: bool = typer.Option(
        False,
        "--record",
        help="Keep the figures in the bundle's manifest (evaluation.<split>; hashes rewritten).",
    ),
) -> None:
    """Evaluate a model on labelled fields: accuracy, per-class sensitivity and specificity
    (k/n with exact 95% intervals), macro-F1 and calibration (bootstrap intervals), colour
    shifts and the shortcut audit; with --reference, a paired McNemar comparison."""
    from ..evaluation.evaluate import evaluate as run_evaluation
    from ..evaluation.evaluate import labelled_items, record_in_bundle
    from ..evaluation.render import check_plots, write_report
    from ..training.families import trained_model

    check_plots()
    if record and trained_model(model) is not None:
        fail(f"{model}: --record writes into a bundle's manifest; this is a training run")
    predictor, run = _predictor(model, backend, threads, engine, workers, address, batch)
    items = labelled_items(predictor.classes, data, split_csv, split, classes)
    ref = (
        None if reference is None else {"name": reference.stem, **json.loads(reference.read_text())}
    )
    result = run_evaluation(
        predictor, items, shifts=shifts, shortcut=shortcut, batch=batch, engine=run
    )
    for skipped in result["skipped"]:
        err_console.print(f"[yellow]skipped[/yellow] {skipped['path']}: {skipped['problem']}")
    source = f"{split_csv} ({split})" if split_csv is not None else str(data)
    out = out or Path("runs") / "eval" / predictor.name
    write_report(result, out, f"{predictor.name} on {source}", ref)
    print_result(result, ref)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text((out / "report.json").read_text())
    err_console.print(f"report: {out / 'report.md'}")
    if record:
        key = split if split_csv is not None else "data"
        manifest = record_in_bundle(model, result, key, source, split_csv)
        err_console.print(f"recorded as evaluation.{key} in {manifest}")
