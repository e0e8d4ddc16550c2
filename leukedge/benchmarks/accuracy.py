"""Accuracy and robustness of every trained bundle on the test split of a data folder.

Each model goes through ``leukedge.evaluation.evaluate`` (accuracy with its exact
interval, macro-F1 with a bootstrap one, calibration error, the colour-shift suite, the
shortcut audit) and ``leukedge.evaluation.render.write_report`` (``report.md``, ``report.json``,
confusion, reliability and shift plots in ``<out>/<bundle name>/``). The test split comes
from ``split_csv`` when given, else from ``make_split`` (seed 0, default ratios) of the data
folder.
"""

from __future__ import annotations

from pathlib import Path

from ..data.layouts import find_dataset
from ..data.split import Row, make_split, read_split
from ..edge.classes import SCHEMES
from ..evaluation.evaluate import bundle_predictor, evaluate
from ..evaluation.metrics import N_BOOTSTRAP
from ..evaluation.render import lookup, write_report

#: Test fields per class in a quick run.
QUICK_PER_CLASS = 6


def split_test_rows(data_dir: Path, split_csv: Path | None, work: Path, quick: bool) -> list[Row]:
    """The test rows of ``split_csv``, else of a seed-0 split of ``data_dir`` (made in
    ``work``); a few per class when ``quick``."""
    if split_csv is None:
        make_split(find_dataset(data_dir), work, seed=0)
        split_csv = work / "split.csv"
    rows = read_split(split_csv, "test")
    if quick:
        per: dict[str, list[Row]] = {}
        for r in rows:
            per.setdefault(r.label, []).append(r)
        rows = [r for group in per.values() for r in group[:QUICK_PER_CLASS]]
    return rows


def items_for(rows: list[Row], classes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, label) items in a model's classes: labels mapped through the class scheme
    whose classes the model has (rows of classes the scheme drops are left out)."""
    scheme = next(
        (m for m in SCHEMES.values() if list(dict.fromkeys(m.values())) == list(classes)), None
    )
    if scheme is None:
        return [(r.path, r.label) for r in rows if r.label in classes]
    return [
        (r.path, scheme[r.source_class or r.label])
        for r in rows
        if (r.source_class or r.label) in scheme
    ]


def summary(result: dict, model: dict, out_dir: Path | None) -> dict:
    """The figures of one model that the benchmark report shows."""
    clean = result["clean"]
    return {
        "name": model["name"],
        "model": model["model"],
        "precision": model["precision"],
        "format": model["format"],
        "size_bytes": model["size_bytes"],
        "n": result["n"],
        "correct": clean["correct"],
        "accuracy": clean["accuracy"],
        "accuracy_ci": clean["accuracy_ci"],
        "macro_f1": clean["macro_f1"],
        "ece": clean["ece"],
        "shifts": {
            k: {"accuracy": v["accuracy"], "accuracy_drop": v["accuracy_drop"]}
            for k, v in result["shifts"].items()
        },
        "worst_shift": result["worst_shift"],
        "shortcut_accuracy": result["shortcut"]["accuracy"],
        "chance": result["shortcut"]["chance"],
        "report": str(out_dir) if out_dir else None,
    }


def reference_summary(reference: dict) -> dict:
    """The same figures from a reference ``report.json`` (None where it has none)."""
    shifts = reference.get("shifts") or {}
    return {
        "name": reference.get("name", "reference"),
        "accuracy": lookup(reference, "clean", "accuracy"),
        "macro_f1": lookup(reference, "clean", "macro_f1"),
        "ece": lookup(reference, "clean", "ece"),
        "shifts": {k: {"accuracy": lookup(v, "accuracy")} for k, v in shifts.items()},
        "shortcut_accuracy": lookup(reference, "shortcut", "accuracy"),
    }


def run(
    models: list[dict],
    rows: list[Row],
    out_dir: Path,
    *,
    quick: bool,
    reference: dict | None,
    reports: bool,
) -> dict:
    """Evaluate every bundle record in ``models`` on ``rows``; with ``reports`` (it needs
    matplotlib), write each model's ``write_report`` folder under ``out_dir``."""
    results = []
    for m in models:
        predictor = bundle_predictor(m["bundle"], m["backend"])
        result = evaluate(
            predictor,
            items_for(rows, predictor.classes),
            n_bootstrap=200 if quick else N_BOOTSTRAP,
        )
        title = f"{m['name']} (benchmark)"
        folder = write_report(result, out_dir / m["name"], title, reference) if reports else None
        results.append(summary(result, m, folder))
    out = {"n_test": len(rows), "models": results}
    if reference:
        out["reference"] = reference_summary(reference)
    return out
