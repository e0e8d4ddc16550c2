"""Temperature scaling of a model's probabilities, and the low-confidence threshold that goes
with it (the manifest's ``trust.calibration``).

One temperature ``T``, fitted on the validation fields by maximum likelihood (Guo et al.,
2017), softens (T > 1) or sharpens (T < 1) every output alike: ``softmax(log p / T)``; the
top class never changes. The model file's probabilities are the input, so an INT8 model's
own rounding is what gets calibrated. The threshold is then chosen on the same fields for a
stated accuracy among the fields above it, and replaces the manifest's
``uncertain_threshold``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .bundle import BundleError

#: Probabilities are floored here before the logarithm: an int8 softmax output is often 0.
PROB_FLOOR = 1e-6

#: Temperatures searched by ``fit_temperature`` (log-spaced bounds).
T_RANGE = (0.05, 20.0)


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, np.float64), PROB_FLOOR))


def scale_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """float (N, C) probabilities -> float32 (N, C) ``softmax(log p / temperature)``."""
    z = _log(probs) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of int (N,) ``labels`` under the scaled probabilities."""
    z = _log(probs) / temperature
    zmax = z.max(axis=1, keepdims=True)
    lse = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(z)), labels]))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, iterations: int = 80) -> float:
    """The temperature minimising ``nll`` on float (N, C) ``probs`` and int (N,) ``labels``.

    Golden-section search on log T over ``T_RANGE``: the NLL is convex in 1/T, so unimodal.
    """
    labels = np.asarray(labels, np.int64)
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(probs, labels, math.exp(a)), nll(probs, labels, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(probs, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(probs, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def confident_threshold(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The lowest confidence threshold at which the fields at or above it are at least
    ``target`` accurate (float (N, C) probabilities, int (N,) labels); 1.0 if none is."""
    conf = np.asarray(probs).max(axis=1)
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    acc = np.cumsum(correct) / np.arange(1, len(conf) + 1)  # accuracy of the top-i fields
    # A threshold keeps all fields with confidence >= it: only the last of equal values counts.
    last = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last & (acc >= target))
    return float(conf[ok[-1]]) if len(ok) else 1.0


@dataclass(frozen=True)
class Calibration:
    """The manifest's ``trust.calibration``: the temperature and the low-confidence threshold
    (on calibrated probabilities) chosen for ``target`` accuracy among confident fields, both
    fitted on ``n`` fields of ``split`` under ``conditions`` ("clean" and shift names), with
    the expected calibration error there before and after."""

    temperature: float
    threshold: float | None = None
    target: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    split: str = "val"
    conditions: tuple[str, ...] = ("clean",)
    n: int = 0

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """float (N, C) model probabilities -> float32 (N, C) calibrated ones."""
        if self.temperature == 1.0:
            return np.asarray(probs, np.float32)
        return scale_probabilities(probs, self.temperature)

    def to_dict(self) -> dict:
        return {**asdict(self), "conditions": list(self.conditions)}

    @classmethod
    def from_manifest(cls, d: dict, where: str) -> Calibration:
        """Parse ``trust.calibration``; ``BundleError`` naming ``where`` (the manifest path)."""
        try:
            cal = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
            t, th = float(cal.temperature), cal.threshold
            valid = math.isfinite(t) and t > 0 and (th is None or 0 <= float(th) <= 1)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise BundleError(
                f"{where}: trust.calibration needs a positive temperature and a threshold in "
                f"[0, 1] (got {d!r:.80}); re-run leukedge bundle add-trust"
            )
        return cal
