"""The lower-magnification discriminant of ``trust.scale.lower`` (``leukedge.edge.scale``).

Each ruler alone misjudges about one training field in two hundred (crowded smears, sparse
ones, a large blast), and flagging a frame under either ruler's band added those errors
up: about 1% of clean fields, half the gate's whole budget. The two energies the rulers
read hold more than their peaks: the shape of each curve over all scales. A linear
discriminant of both curves (``scale._spectrum``), fitted between the training fields and
the same smears seen at half the magnification, judges that shape at once.

The half-magnification examples are mosaics: each training field beside three others of
its class and fold (other duplicate groups: the same kind of smear; wider where a small
split has too few), 2 x 2, area-averaged to one field's size. Mosaics of distinct fields
have no repeated content, so the discriminant cannot learn the repetition of a field tiled
onto itself (how the benchmark makes its 0.5x condition) instead of the cells' size. The
threshold is the ``PERCENTILE`` of the training fields' scores, each scored by a
discriminant fitted without its fold (``FOLDS`` folds by duplicate group).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from leukedge.edge.scale import measure_cells, scale_reference
from leukedge.errors import DataError
from leukedge.progress import progress_bar

from .common import FOLDS, held_out_folds

#: Ridge added to the pooled covariance, as a share of its mean eigenvalue.
RIDGE = 1e-3
#: Percentile of the training fields' held-out scores under which a frame is flagged.
PERCENTILE = 0.5


def mosaic(fields: Sequence[np.ndarray]) -> np.ndarray:
    """Four RGB uint8 (H, W, 3) fields of one size, 2 x 2, area-averaged to that size: the
    smear at half the magnification."""
    a, b, c, d = fields
    h, w = a.shape[:2]
    grid = np.vstack([np.hstack([a, b]), np.hstack([c, d])])
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_AREA)


def discriminant(clean: np.ndarray, lower: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """float64 (D,) weights of Fisher's linear discriminant between float (N, D) ``clean``
    and float (M, D) ``lower`` spectra: higher scores are clean."""
    pooled = np.vstack([clean - clean.mean(0), lower - lower.mean(0)])
    cov = np.cov(pooled.T)
    cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.solve(cov, clean.mean(0) - lower.mean(0))


def _spectra(n: int, frame, description: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(float32 (M, D) spectra, bool (n,) which frames had one, the step they were read at)
    of ``frame(i)``, i < n (RGB uint8 (H, W, 3) each, one size)."""
    measures = [measure_cells(frame(i)) for i in progress_bar(range(n), description)]
    ok = np.array([m.spectrum is not None for m in measures])
    if not ok.any():
        raise DataError(f"{description}: no frame with measurable cells")
    spectra = np.stack([m.spectrum for m in measures if m.spectrum is not None])
    return spectra, ok, measures[int(np.argmax(ok))].spectrum_step


def _partners(i: int, labels: np.ndarray, groups: np.ndarray, fold: np.ndarray, rng) -> list:
    """Three fields to sit beside field ``i`` in its mosaic: of its class and fold where it
    has three others there, else of its class, else any (never of its duplicate group)."""
    other = groups != groups[i]
    same = labels == labels[i]
    for pool in (other & same & (fold == fold[i]), other & same, other):
        if pool.sum() >= 3:
            return list(rng.choice(np.flatnonzero(pool), 3, replace=False))
    raise DataError("a half-magnification mosaic needs four training fields of other groups")


def fit_lower_magnification(
    fields: Sequence[np.ndarray],
    labels: Sequence[int],
    groups: Sequence[int],
    *,
    seed: int = 0,
) -> dict:
    """``trust.scale.lower`` from training fields (RGB uint8 (H, W, 3), one size), their
    classes and duplicate groups (module doc): weights, threshold, what they were fitted on."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    fold = held_out_folds(groups)
    rng = np.random.default_rng(seed)
    n = len(fields)
    partners = [_partners(i, labels, groups, fold, rng) for i in range(n)]
    clean, ok, step = _spectra(n, lambda i: fields[i], "Spectra of training fields")
    half, half_ok, _ = _spectra(
        n,
        lambda i: mosaic([fields[i], *(fields[j] for j in partners[i])]),
        "Spectra of half-magnification mosaics",
    )
    fold_clean, fold_half = fold[ok], fold[half_ok]
    held_out = np.empty(len(clean))
    for k in range(FOLDS):
        w = discriminant(clean[fold_clean != k], half[fold_half != k])
        held_out[fold_clean == k] = clean[fold_clean == k] @ w
    weights = discriminant(clean, half)
    threshold = float(np.percentile(held_out, PERCENTILE))
    return {
        "statistic": "Fisher discriminant of the mask and grey LoG-energy curves (log, "
        "relative to each peak); under the threshold: a lower magnification",
        "weights": [round(float(v), 6) for v in weights],
        "threshold": round(threshold, 6),
        "step": step,
        "percentile": PERCENTILE,
        "ridge": RIDGE,
        "against": "2 x 2 mosaics of distinct training fields of one class, area-averaged (0.5x)",
        "n": int(len(clean)),
        "train_held_out_flagged": round(float(np.mean(held_out < threshold)), 5),
        "mosaics_passed": round(float(np.mean(half @ weights >= threshold)), 5),
    }


def scale_figures(
    fields: Sequence[np.ndarray], labels: Sequence[int], groups: Sequence[int]
) -> dict:
    """The manifest's whole ``trust.scale`` from training fields, their classes and
    duplicate groups: the rulers' bands (``scale_reference``) with the discriminant."""
    return {**scale_reference(fields), "lower": fit_lower_magnification(fields, labels, groups)}
