"""Evaluating a classifier on labelled fields: clean, the colour-shift suite, the shortcut audit.

Every evaluator (``leukedge eval``, the reports that end a training run, the study, the
benchmarks) sees a model as a ``Predictor``: ``predict_proba(fields) -> probabilities`` in
the order of its ``classes``. ``bundle_predictor`` makes one of a model bundle (through
``leukedge.edge.load_model``, exactly as the station runs it); trained runs get theirs from
the family registry (``leukedge.training.families.load_predictor``, which takes bundles too).
``evaluate`` runs a predictor on ``(path, label)`` items: clean, under every shift of
``leukedge.evaluation.shifts.SHIFTS`` and with the cells painted out (``paint_out_cells``);
``leukedge.evaluation.render`` writes the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..data.layouts import find_dataset
from ..data.split import read_split
from ..edge.classes import SCHEMES, scheme_classes
from ..edge.imageio import FieldError, read_field
from ..errors import DataError, UsageError
from ..progress import progress_bar
from .metrics import N_BOOTSTRAP, summarize
from .shifts import SHIFTS, paint_out_cells

#: predict_proba(list of RGB uint8 (H, W, 3) fields) -> float (N, C) probabilities.
PredictProba = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    """A classifier as evaluators see it: ``predict_proba`` gives probabilities whose columns
    follow ``classes``; ``name`` titles its reports."""

    name: str
    classes: tuple[str, ...]
    predict_proba: PredictProba


def bundle_predictor(bundle: str | Path, backend: str = "auto", threads: int | None = None):
    """The ``Predictor`` of a model bundle (a folder or a shipped name such as "default"),
    run by ``leukedge.edge.load_model`` as on the station; raises ``BundleError``."""
    from ..edge.model import load_model

    model = load_model(bundle, backend, threads)

    def predict_proba(fields: list[np.ndarray]) -> np.ndarray:
        preds = model.predict_batch(fields)
        return np.array([[p.probabilities[c] for c in model.classes] for p in preds])

    return Predictor(model.name, tuple(model.classes), predict_proba)


#: Figures kept for each shift and for the shortcut audit.
BRIEF = ("n", "correct", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "ece_ci")


def _conditions(shifts: bool, shortcut: bool, seg_mode: str) -> dict:
    """Condition name -> field transform (None: the field as read)."""
    conditions: dict[str, Callable | None] = {"clean": None}
    if shifts:
        conditions.update(SHIFTS)
    if shortcut:
        conditions["shortcut"] = partial(paint_out_cells, seg=seg_mode)
    return conditions


def _probabilities(predict: PredictProba, fields: list[np.ndarray], n_classes: int) -> np.ndarray:
    probs = np.asarray(predict(fields), np.float64)
    if probs.shape != (len(fields), n_classes):
        raise ValueError(
            f"predict returned shape {probs.shape} for {len(fields)} fields, {n_classes} classes"
        )
    return probs


def worst_shift(shifts: dict[str, dict]) -> str | None:
    """The shift with the lowest accuracy (then macro-F1), or None for no shifts."""
    scored = {k: v for k, v in shifts.items() if v.get("accuracy") is not None}
    if not scored:
        return None
    return min(scored, key=lambda k: (scored[k]["accuracy"], scored[k].get("macro_f1") or 0))


def _predict_conditions(
    predictor: Predictor, items: Sequence[tuple[str | Path, str]], conditions: dict, batch: int
) -> tuple[list[tuple[str, str]], list[dict], dict[str, np.ndarray]]:
    """Read each file once and predict it under every condition: (kept (path, label) items,
    skipped files with their problem, condition -> float64 (N, C) probabilities)."""
    n_classes = len(predictor.classes)
    probs: dict[str, list[np.ndarray]] = {name: [] for name in conditions}
    kept, skipped = [], []
    for start in progress_bar(range(0, len(items), batch), "Evaluating"):
        fields = []
        for path, label in items[start : start + batch]:
            try:
                fields.append(read_field(path))
            except FieldError as exc:
                skipped.append({"path": str(path), "problem": exc.problem})
                continue
            kept.append((str(path), label))
        for name, transform in conditions.items() if fields else ():
            view = fields if transform is None else [transform(f) for f in fields]
            probs[name].append(_probabilities(predictor.predict_proba, view, n_classes))
    if not kept:
        raise DataError(f"no usable field among {len(items)} file(s)")
    return kept, skipped, {name: np.concatenate(chunks) for name, chunks in probs.items()}


def evaluate(
    predictor: Predictor,
    items: Sequence[tuple[str | Path, str]],
    *,
    shifts: bool = True,
    shortcut: bool = True,
    seg_mode: str = "robust",
    batch: int = 32,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict:
    """Evaluate ``predictor`` on ``(path, label)`` items; labels are names in its classes.

    Each file is read once; unreadable ones are listed under ``skipped``. Returns a
    JSON-ready dict: classes, n, skipped, seg_mode, ``clean`` (``metrics.summarize``),
    ``shifts`` (shift -> fields right, accuracy with its exact interval, macro-F1 and ECE
    with bootstrap intervals, and ``accuracy_drop`` from clean), ``worst_shift``,
    ``shortcut`` (the same figures on painted-out fields, with ``chance``: the share of the
    commonest class) and ``predictions`` (path, label, predicted, probabilities of each
    clean field, and ``under``: its prediction under each shift and the shortcut audit,
    for paired comparisons of two models).
    """
    classes = list(predictor.classes)
    if unknown := sorted({label for _, label in items} - set(classes)):
        raise DataError(f"label(s) {unknown} are not model classes {classes}")
    conditions = _conditions(shifts, shortcut, seg_mode)
    kept, skipped, p = _predict_conditions(predictor, items, conditions, batch)
    y = np.array([classes.index(label) for _, label in kept])
    clean = summarize(y, p["clean"], classes, n_bootstrap, seed)

    def brief(name: str) -> dict:
        full = summarize(y, p[name], classes, n_bootstrap, seed)
        return {k: full[k] for k in BRIEF}

    shift_metrics = {}
    for name in SHIFTS if shifts else ():
        m = brief(name)
        shift_metrics[name] = {**m, "accuracy_drop": clean["accuracy"] - m["accuracy"]}
    result = {
        "classes": classes,
        "n": len(kept),
        "skipped": skipped,
        "seg_mode": seg_mode,
        "clean": clean,
        "shifts": shift_metrics,
        "worst_shift": worst_shift(shift_metrics),
    }
    if shortcut:
        chance = float(np.bincount(y, minlength=len(classes)).max() / len(y))
        result["shortcut"] = {**brief("shortcut"), "chance": chance}
    others = {name: np.argmax(q, axis=1) for name, q in p.items() if name != "clean"}
    result["predictions"] = [
        {
            "path": path,
            "label": label,
            "predicted": classes[int(np.argmax(q))],
            "probabilities": q,
            "under": {name: classes[int(pred[i])] for name, pred in others.items()},
        }
        for i, ((path, label), q) in enumerate(zip(kept, p["clean"].tolist()))
    ]
    return result


def headline(result: dict, split: str) -> dict:
    """The figures of an ``evaluate`` result that a bundle manifest keeps
    (``evaluation.<split>``): n, fields right, accuracy with its exact interval, macro-F1,
    ECE, the same accuracy figures for each shift, the worst shift and the shortcut audit."""
    keys = ("correct", "accuracy", "accuracy_ci")
    clean = result["clean"]
    out = {"split": split, "n": result["n"], "interval": "clopper-pearson 95%"}
    out |= {k: clean[k] for k in (*keys, "macro_f1", "ece")}
    out["shifts"] = {name: {k: m[k] for k in keys} for name, m in result["shifts"].items()}
    out["worst_shift"] = result["worst_shift"]
    if "shortcut" in result:
        out["shortcut"] = {k: result["shortcut"][k] for k in (*keys, "chance")}
    return out


def labelled_items(
    classes: Sequence[str],
    data: str | Path | None = None,
    split_csv: str | Path | None = None,
    split: str = "test",
    scheme: str | None = None,
) -> list[tuple[str, str]]:
    """``(path, label)`` items to evaluate a model of ``classes`` on: the ``split`` rows of
    ``split_csv``, else every field of the dataset folder ``data`` under the class
    ``scheme`` (default: the scheme whose classes are the model's)."""
    if split_csv is not None:
        rows = read_split(split_csv, split)
        if not rows:
            raise DataError(f"{split_csv}: no rows of split {split!r}")
        return [(r.path, r.label) for r in rows]
    if data is None:
        raise UsageError("give --data or --split-csv")
    if scheme is None:
        scheme = next((s for s in SCHEMES if set(scheme_classes(s)) == set(classes)), None)
        if scheme is None:
            raise UsageError(f"model classes {list(classes)} match no class scheme; pass --classes")
    return [(str(p), label) for p, label, _ in find_dataset(data).select(scheme)]


def record_in_bundle(
    bundle: str | Path, result: dict, key: str, source: str, split_csv: str | Path | None
) -> Path:
    """Keep ``headline(result, key)`` as ``evaluation[key]`` in the manifest of the (verified)
    ``bundle``, with the data it was measured on; the hashes are rewritten. Returns the
    manifest's path."""
    from ..edge.bundle import MANIFEST, read_manifest, sha256_file, write_manifest
    from ..edge.model import resolve_bundle

    folder = resolve_bundle(bundle)
    manifest = read_manifest(folder)
    manifest.pop("files")
    figures = {**headline(result, key), "data": source}
    if split_csv is not None:
        figures["data_sha256"] = sha256_file(split_csv)
    manifest["evaluation"] = {**manifest.get("evaluation", {}), key: figures}
    write_manifest(folder, manifest)
    return folder / MANIFEST
