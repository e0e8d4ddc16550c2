"""Classification metrics, their 95% intervals and calibration (numpy only).

Every function takes ``y_true`` int (N,) class indices and, where it needs scores,
``probs`` float (N, C) class probabilities (rows summing to 1); C is the number of
classes, so classes absent from a sample still count.

Intervals: proportions of fields (accuracy, per-class sensitivity and specificity) get the
exact Clopper-Pearson interval with their k/n (``leukedge.evaluation.stats``); a percentile
bootstrap over fields is used only where there is no closed form (macro-F1, ECE). A
bootstrap whose resamples all agree (every field right, say) says nothing about the
uncertainty, so such an interval is widened as ``bootstrap_ci`` describes: no reported
interval has zero width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .stats import clopper_pearson, proportion

N_BOOTSTRAP = 1000
ECE_BINS = 15


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 (C, C) counts: row = true class, column = predicted class."""
    idx = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2TP / (2TP + FP + FN); NaN for a class neither present nor predicted."""
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / den, np.nan)


def _counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per class of (..., C, C) confusion matrices: each (..., C)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    return tp, cm.sum(-2) - tp, cm.sum(-1) - tp


def macro_f1_from_cm(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of (..., C, C) confusion matrices, averaged over the classes present in
    the truth or the predictions (as scikit-learn does by default): float (...)."""
    return np.nanmean(_f1(*_counts(cm)), axis=-1)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class sensitivity (recall), specificity, precision and F1 of a (C, C) matrix,
    each float (C,); NaN where undefined (e.g. sensitivity of a class with no fields)."""
    tp, fp, fn = _counts(cm)
    tn = cm.sum() - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
            "f1": _f1(tp, fp, fn),
        }


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(y_true)))


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro-F1 of the top-1 predictions (see ``macro_f1_from_cm``)."""
    cm = confusion_matrix(y_true, np.argmax(probs, axis=1), probs.shape[1])
    return float(macro_f1_from_cm(cm))


def _ece_of_resamples(conf: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of (R, N) resampled confidences and correctness: float (R,)."""
    r = conf.shape[0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    cell = (np.arange(r)[:, None] * bins + b).ravel()
    sum_conf = np.bincount(cell, conf.ravel(), r * bins).reshape(r, bins)
    sum_acc = np.bincount(cell, correct.ravel().astype(float), r * bins).reshape(r, bins)
    return np.abs(sum_acc - sum_conf).sum(axis=1) / conf.shape[1]


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
    bins: int = ECE_BINS,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of macro-F1 and ECE over ``n`` seeded resamples of the
    fields: {"macro_f1": (low, high), "ece": (low, high)}.

    When every resample gives the same value (no field wrong, or none right) the bootstrap
    shows no spread however few the fields; then macro-F1, which tracks accuracy when no
    class dominates, takes accuracy's exact interval, and ECE is widened by that interval's
    width on either side (within [0, 1]).
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.argmax(probs, axis=1)
    c = probs.shape[1]
    idx = np.random.default_rng(seed).integers(0, len(y_true), (n, len(y_true)), np.int32)
    cells = (np.arange(n)[:, None] * c + y_true[idx]) * c + y_pred[idx]
    cms = np.bincount(cells.ravel(), minlength=n * c * c).reshape(n, c, c)
    f1 = macro_f1_from_cm(cms)
    conf = np.max(probs, axis=1)
    ece = _ece_of_resamples(conf[idx], (y_pred == y_true)[idx], bins)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = {k: tuple(float(v) for v in np.percentile(x, q)) for k, x in (("macro_f1", f1),
           ("ece", ece))}  # fmt: skip
    k = int(np.sum(y_pred == y_true))
    exact = clopper_pearson(k, len(y_true), level)
    if out["macro_f1"][1] - out["macro_f1"][0] <= 0:
        out["macro_f1"] = exact
    if out["ece"][1] - out["ece"][0] <= 0:
        width, value = exact[1] - exact[0], out["ece"][0]
        out["ece"] = (max(0.0, value - width), min(1.0, value + width))
    return out


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Reliability-diagram data over ``bins`` equal confidence bins on [0, 1].

    Returns ``edges`` float (bins + 1,), and per bin ``count`` int (bins,),
    ``confidence`` (mean top probability) and ``accuracy``, float (bins,), NaN
    for empty bins. A confidence on an edge falls into the bin below it.
    """
    conf = np.max(probs, axis=1)
    correct = np.argmax(probs, axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, bins) / count
        mean_acc = np.bincount(b, correct.astype(float), bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS):
    """ECE: the count-weighted mean |accuracy - confidence| over ``bins`` confidence bins."""
    r = reliability(y_true, probs, bins)
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(np.nansum(gap * r["count"]) / max(r["count"].sum(), 1))


def _num(x) -> float | None:
    """A float, or None for NaN (JSON has no NaN)."""
    return None if np.isnan(x) else float(x)


def summarize(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """Every metric of one evaluation, JSON-ready (undefined values are None).

    Keys: n, correct, accuracy, accuracy_ci (exact), macro_f1, macro_f1_ci (bootstrap),
    ece, ece_ci (bootstrap), confusion (rows true, columns predicted, in ``classes``
    order), per_class (class -> support, sensitivity and specificity each with its exact
    ``_ci`` and ``_k``/``_n`` counts, precision, f1) and reliability.
    """
    y_true = np.asarray(y_true, np.int64)
    cm = confusion_matrix(y_true, np.argmax(probs, axis=1), len(classes))
    boot = bootstrap_ci(y_true, probs, n_bootstrap, seed)
    pc = per_class(cm)
    tp, fp, fn = _counts(cm)
    tn = cm.sum() - tp - fp - fn
    rel = reliability(y_true, probs)
    correct = int(np.trace(cm))

    def counted(name: str, k: int, n: int) -> dict:
        p = proportion(k, n)
        return {name: p["value"], f"{name}_ci": p["ci"], f"{name}_k": p["k"], f"{name}_n": p["n"]}

    return {
        "n": len(y_true),
        "correct": correct,
        "accuracy": correct / len(y_true),
        "accuracy_ci": list(clopper_pearson(correct, len(y_true))),
        "macro_f1": float(macro_f1_from_cm(cm)),
        "macro_f1_ci": list(boot["macro_f1"]),
        "ece": expected_calibration_error(y_true, probs),
        "ece_ci": list(boot["ece"]),
        "confusion": cm.tolist(),
        "per_class": {
            name: {
                "support": int(cm[i].sum()),
                **counted("sensitivity", int(tp[i]), int(tp[i] + fn[i])),
                **counted("specificity", int(tn[i]), int(tn[i] + fp[i])),
                "precision": _num(pc["precision"][i]),
                "f1": _num(pc["f1"][i]),
            }
            for i, name in enumerate(classes)
        },
        "reliability": {
            "edges": rel["edges"].tolist(),
            "count": rel["count"].tolist(),
            "confidence": [_num(v) for v in rel["confidence"]],
            "accuracy": [_num(v) for v in rel["accuracy"]],
        },
    }
