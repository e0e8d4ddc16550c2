"""Evaluating a classifier on labelled fields: clean, the colour-shift suite, the shortcut audit.

Every evaluator (``leukedge eval``, the reports that end a training run, the study, the
benchmarks) sees a model as a ``Predictor``: ``predict_proba(fields) -> probabilities`` in
the order of its ``classes``. ``bundle_predictor`` makes one of a model bundle (through
``leukedge.edge.load_model``, exactly as the station runs it); trained runs get theirs from
the family registry (``leukedge.training.families.load_predictor``, which takes bundles too).
``evaluate`` runs a predictor on ``(path, label)`` items: clean, under every shift of
``leukedge.evaluation.shifts.SHIFTS`` and with the cells painted out (``paint_out_cells``),
in this process or, for a large set, through an ``Engine`` whose workers run
``condition_scorer`` on a bundle (``leukedge eval --engine``: ``leukedge.scale``); either
way ``measure`` computes the figures and ``leukedge.evaluation.render`` writes the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.layouts import find_dataset
from ..data.split import read_split
from ..edge.classes import SCHEMES, scheme_classes
from ..edge.imageio import FieldError, read_field
from ..errors import DataError, StepFailed, UsageError
from ..progress import progress_bar
from .metrics import N_BOOTSTRAP, summarize
from .shifts import SHIFTS, paint_out_cells

if TYPE_CHECKING:
    from ..edge.model import Model

#: predict_proba(list of RGB uint8 (H, W, 3) fields) -> float (N, C) probabilities.
PredictProba = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    """A classifier as evaluators see it: ``predict_proba`` gives probabilities whose columns
    follow ``classes``; ``name`` titles its reports."""

    name: str
    classes: tuple[str, ...]
    predict_proba: PredictProba


def model_predictor(model: Model) -> Predictor:
    """The ``Predictor`` of a loaded model bundle: ``Model.predict_batch``, as on the station."""

    def predict_proba(fields: list[np.ndarray]) -> np.ndarray:
        preds = model.predict_batch(fields)
        return np.array([[p.probabilities[c] for c in model.classes] for p in preds])

    return Predictor(model.name, tuple(model.classes), predict_proba)


def bundle_predictor(bundle: str | Path, backend: str = "auto", threads: int | None = None):
    """The ``Predictor`` of a model bundle (a folder or a shipped name such as "default"),
    run by ``leukedge.edge.load_model`` as on the station; raises ``BundleError``."""
    from ..edge.model import load_model

    return model_predictor(load_model(bundle, backend, threads))


#: Figures kept for each shift and for the shortcut audit.
BRIEF = ("n", "correct", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "ece_ci")


def _conditions(shifts: bool, shortcut: bool, seg_mode: str) -> dict:
    """Condition name -> field transform (None: the field as read); module-level functions
    and partials of them, so they pickle to an engine's workers."""
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


#: Kept ``(path, label)`` items, skipped files (path, problem) and condition -> float64
#: (N, C) probabilities of the kept items: what ``evaluate`` measures.
Predictions = tuple[list[tuple[str, str]], list[dict], dict[str, np.ndarray]]


def predict_files(
    predictor: Predictor, paths: Sequence[str | Path], conditions: dict
) -> tuple[list[int], list[dict], dict[str, np.ndarray]]:
    """Read each file once and predict it under every condition: (indices of the files
    read, the others with their problem, condition -> float64 (n read, C) probabilities)."""
    n_classes = len(predictor.classes)
    read, fields, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            fields.append(read_field(path))
        except FieldError as exc:
            skipped.append({"path": str(path), "problem": exc.problem})
            continue
        read.append(i)
    probs = {name: np.zeros((0, n_classes)) for name in conditions}
    for name, transform in conditions.items() if fields else ():
        view = fields if transform is None else [transform(f) for f in fields]
        probs[name] = _probabilities(predictor.predict_proba, view, n_classes)
    return read, skipped, probs


def _predict_conditions(
    predictor: Predictor, items: Sequence[tuple[str | Path, str]], conditions: dict, batch: int
) -> Predictions:
    """``predict_files`` batch by batch, in this process."""
    probs: dict[str, list[np.ndarray]] = {name: [] for name in conditions}
    kept, skipped = [], []
    for start in progress_bar(range(0, len(items), batch), "Evaluating"):
        chunk = items[start : start + batch]
        read, problems, p = predict_files(predictor, [path for path, _ in chunk], conditions)
        kept += [(str(chunk[i][0]), chunk[i][1]) for i in read]
        skipped += problems
        for name, q in p.items():
            probs[name].append(q)
    return kept, skipped, {name: np.concatenate(chunks) for name, chunks in probs.items()}


#: Columns of ``condition_records`` (``leukedge.scale.Job.columns``).
RECORD_COLUMNS = {"path": "string", "problem": "string", "probabilities": "string"}

#: ``engine(paths, conditions)``: the files' ``condition_records`` computed elsewhere (a
#: process pool, a Ray cluster: ``leukedge.scale.run_paths``), batch by batch, records
#: keyed by absolute path.
Engine = Callable[[list[str], dict], Iterable[list[dict]]]


def condition_records(predictor: Predictor, conditions: dict, tasks: Sequence) -> list[dict]:
    """``predict_files`` of tasks (objects with a ``path``), one record per task: path,
    problem (None when read) and probabilities (JSON text: condition -> probabilities in
    the order of the classes; JSON keeps float64 exactly)."""
    paths = [task.path for task in tasks]
    read, skipped, probs = predict_files(predictor, paths, conditions)
    row_of = {i: row for row, i in enumerate(read)}
    problems = iter(s["problem"] for s in skipped)
    records = []
    for i, path in enumerate(paths):
        if i in row_of:
            text = json.dumps({name: q[row_of[i]].tolist() for name, q in probs.items()})
            records.append({"path": path, "problem": None, "probabilities": text})
        else:
            records.append({"path": path, "problem": next(problems), "probabilities": None})
    return records


def condition_scorer(model: Model, conditions: dict) -> Callable[[Sequence], list[dict]]:
    """An engine worker's scorer (``leukedge.scale.Job.scorer``) for ``leukedge eval``:
    ``condition_records`` of the loaded bundle's ``model_predictor``."""
    return partial(condition_records, model_predictor(model), conditions)


def _engine_predictions(
    engine: Engine, items: Sequence[tuple[str | Path, str]], conditions: dict, n_classes: int
) -> Predictions:
    """``Predictions`` of ``items`` from the ``condition_records`` an engine computed, kept
    as arrays as the batches arrive (a large set's records are not held)."""
    keys = [os.path.abspath(Path(path).expanduser()) for path, _ in items]
    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    probs = {name: np.zeros((len(items), n_classes)) for name in conditions}
    problems, seen = {}, set()
    for batch in engine([str(path) for path, _ in items], conditions):
        for record in batch:
            seen.add(record["path"])
            if record["problem"] is not None:
                problems[record["path"]] = record["problem"]
                continue
            for name, q in json.loads(record["probabilities"]).items():
                probs[name][rows[record["path"]]] = q
    if missing := rows.keys() - seen:
        raise StepFailed(
            f"the engine returned nothing for {len(missing)} file(s), e.g. {min(missing)}"
        )
    read = [i for i, key in enumerate(keys) if key not in problems]
    kept = [(str(items[i][0]), items[i][1]) for i in read]
    skipped = [
        {"path": str(path), "problem": problems[key]}
        for (path, _), key in zip(items, keys)
        if key in problems
    ]
    return kept, skipped, {name: q[read] for name, q in probs.items()}


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
    engine: Engine | None = None,
) -> dict:
    """Evaluate ``predictor`` on ``(path, label)`` items; labels are names in its classes.

    Each file is read once, in this process by ``predictor`` or, with ``engine``, by the
    engine's workers (``condition_scorer`` of the same bundle); unreadable ones are listed
    under ``skipped``. The figures are ``measure``'s.
    """
    classes = list(predictor.classes)
    if unknown := sorted({label for _, label in items} - set(classes)):
        raise DataError(f"label(s) {unknown} are not model classes {classes}")
    conditions = _conditions(shifts, shortcut, seg_mode)
    if engine is None:
        predictions = _predict_conditions(predictor, items, conditions, batch)
    else:
        predictions = _engine_predictions(engine, items, conditions, len(classes))
    return measure(classes, predictions, seg_mode, seed, n_bootstrap)


def measure(
    classes: Sequence[str],
    predictions: Predictions,
    seg_mode: str = "robust",
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict:
    """The figures of ``predictions`` (``evaluate``'s conditions, however computed).

    Returns a JSON-ready dict: classes, n, skipped, seg_mode, ``clean``
    (``metrics.summarize``), ``shifts`` (shift -> fields right, accuracy with its exact
    interval, macro-F1 and ECE with bootstrap intervals, and ``accuracy_drop`` from clean),
    ``worst_shift``, ``shortcut`` (the same figures on painted-out fields, with ``chance``:
    the share of the commonest class) and ``predictions`` (path, label, predicted,
    probabilities of each clean field, and ``under``: its prediction under each shift and
    the shortcut audit, for paired comparisons of two models).
    """
    kept, skipped, p = predictions
    if not kept:
        raise DataError(f"no usable field among {len(skipped)} file(s)")
    classes = list(classes)
    y = np.array([classes.index(label) for _, label in kept])
    clean = summarize(y, p["clean"], classes, n_bootstrap, seed)

    def brief(name: str) -> dict:
        full = summarize(y, p[name], classes, n_bootstrap, seed)
        return {k: full[k] for k in BRIEF}

    shift_metrics = {}
    for name in (n for n in p if n in SHIFTS):
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
    if "shortcut" in p:
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
