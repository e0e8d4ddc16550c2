"""k-fold cross-validation of a training recipe on the train and validation fields.

With a few hundred validation fields, two recipes one field apart cannot be told apart on
one split. Cross-validation trains the recipe K times, each time holding out one fold of
train+validation (duplicate groups stay whole, classes spread evenly: ``assign_folds``)
and scoring the held-out fold, so a recipe is judged on every non-test field and by the
spread across folds. The test split is never touched: it stays a single final report.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..data.split import Row, assign_folds, read_split, write_split
from ..errors import DataError, UsageError
from ..evaluation.evaluate import evaluate
from ..evaluation.render import write_report
from ..evaluation.stats import fraction
from .families import FAMILIES, best_model

CV_JSON, CV_MD = "cv.json", "cv.md"


def fold_splits(split_csv: str | Path, out: str | Path, k: int, seed: int = 0) -> list[Path]:
    """``k`` split files in ``out`` (``fold<i>/split.csv``): fold i's fields are ``val``, the
    other folds' ``train``; test rows are left out. The split's own ``fold`` column is used
    when it has ``k`` folds (``leukedge data split --folds K``), else folds are dealt over its
    train and val rows (seeded)."""
    if k < 2:
        raise UsageError(f"--folds {k}: cross-validation needs at least 2 folds")
    pool = [r for r in read_split(split_csv) if r.split != "test"]
    if not pool:
        raise DataError(f"{split_csv}: no train or val rows to cross-validate on")
    if sorted({r.fold for r in pool}) != list(range(k)):
        assign_folds(pool, k, seed)
    paths = []
    for i in range(k):
        rows = [Row(**{**vars(r), "split": "val" if r.fold == i else "train"}) for r in pool]
        path = Path(out) / f"fold{i}" / "split.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_split(rows, path)
        paths.append(path)
    return paths


def _spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def cross_validate(
    family: str,
    split_csv: str | Path,
    out: str | Path,
    k: int,
    *,
    seed: int = 0,
    threads: int | None = None,
    **recipe,
) -> dict:
    """Train ``family``'s ``recipe`` on each of ``fold_splits`` (``out/fold<i>/``; a fold
    whose run already holds a model is reused), evaluate it on its held-out fold
    (``out/fold<i>/report-val/``) and write ``out/cv.json`` and ``out/cv.md``: each fold's
    fields right, worst shift and shortcut audit, and their mean, standard deviation,
    minimum and maximum across folds. Returns the ``cv.json`` record."""
    out = Path(out)
    folds = []
    for i, fold_csv in enumerate(fold_splits(split_csv, out, k, seed)):
        run = fold_csv.parent
        fam = FAMILIES[family]
        best = best_model(run) or fam.train(fold_csv, run, seed=seed, threads=threads, **recipe)
        predictor = fam.predictor(best, threads)
        rows = read_split(fold_csv, "val")
        result = evaluate(predictor, [(r.path, r.label) for r in rows])
        write_report(result, run / "report-val", f"{predictor.name} (fold {i} of {k})")
        clean, worst = result["clean"], result["worst_shift"]
        folds.append({
            "fold": i,
            "n": result["n"],
            "correct": clean["correct"],
            "accuracy": clean["accuracy"],
            "accuracy_ci": clean["accuracy_ci"],
            "worst_shift": worst,
            "worst_shift_accuracy": result["shifts"][worst]["accuracy"] if worst else None,
            "shortcut_accuracy": result.get("shortcut", {}).get("accuracy"),
        })  # fmt: skip
    record = {"family": family, "split_csv": str(split_csv), "k": k, "seed": seed, "folds": folds}
    for key in ("accuracy", "worst_shift_accuracy", "shortcut_accuracy"):
        values = [f[key] for f in folds if f[key] is not None]
        if values:
            record[key] = _spread(values)
    (out / CV_JSON).write_text(json.dumps(record, indent=2) + "\n")
    (out / CV_MD).write_text(to_markdown(record))
    return record


def _pct(spread: dict | None) -> str:
    if not spread:
        return "–"
    return (
        f"{100 * spread['mean']:.1f} ± {100 * spread['sd']:.1f} "
        f"({100 * spread['min']:.1f}–{100 * spread['max']:.1f})"
    )


def _fold_row(f: dict) -> str:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    right = fraction({"k": f["correct"], "n": f["n"], "ci": f["accuracy_ci"]})
    worst = f"{f['worst_shift']} {pct(f['worst_shift_accuracy'])}" if f["worst_shift"] else "–"
    return f"| {f['fold']} | {right} | {worst} | {pct(f['shortcut_accuracy'])} |"


def to_markdown(record: dict) -> str:
    """``cv.md``: one row per fold, then mean ± standard deviation (min–max) across folds."""
    rows = [_fold_row(f) for f in record["folds"]]
    return "\n".join([
        f"# {record['k']}-fold cross-validation ({record['family']})",
        "",
        f"Train and validation fields of `{record['split_csv']}`, seed {record['seed']}; each "
        "fold is held out once and scored; the test split is not used.",
        "",
        "| fold | held-out fields right (95% CI) | worst shift % | shortcut % (lower is better) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Accuracy across folds, mean ± sd (min–max): {_pct(record.get('accuracy'))}%; "
        f"worst shift {_pct(record.get('worst_shift_accuracy'))}%; "
        f"shortcut audit {_pct(record.get('shortcut_accuracy'))}%.",
        "",
    ])  # fmt: skip
