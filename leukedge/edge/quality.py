"""Frame quality before inference: focus, exposure and colour, judged against the training fields.

Each measure is taken on the frame at the training scale (``scale.normalise``; a frame over
``SAMPLE_FIELDS`` training fields across is measured on its centre), so it means the same on a
224 px field and on a camera frame:

- ``focus``: the variance of the grey image's Laplacian over that of its half-size copy's
  (``cv2.pyrDown``): the finest detail against the next coarser band. Defocus removes the
  finest first; a ratio, so contrast and exposure cancel.
- ``lightness``: mean grey level (0-255);
  ``highlights``: share of pixels white in all three channels (>= 254), so a background that
  saturates only the blue channel, common in the training fields, does not count;
  ``shadows``: share of pixels black (grey <= 10).
- ``cast``: the mean colour of the darkest ``STAIN_SHARE`` of the pixels (stained cells)
  divided by the background's (the mean of the brightest ``illumination.BRIGHT_SHARE``, as
  white balancing does, which cancels a lamp's colour), in LAB a*, b*, as a Mahalanobis
  distance from the training fields' mean: a stain or camera colour that white balancing
  cannot undo. Taken on a sample about ``COLOUR_SAMPLE`` px a side.
- ``stained``: share of stained pixels (``scale.stained_mask``); under ``MIN_STAINED`` the frame
  is empty (``no-cell``) and nothing else is judged.

``quality_reference`` turns training fields into the limits (``trust.quality`` in a bundle
manifest): each limit lies beyond the training fields' 0.5th or 99.5th percentile by a margin
(the ``*_MARGIN`` constants), so clean fields pass and degraded ones do not. ``judge`` names
the reasons a frame fails: ``blurred``, ``under-exposed``, ``over-exposed``, ``colour-cast``,
``no-cell``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import DataError
from .bundle import BundleError
from .illumination import BRIGHT_SHARE
from .scale import stained_mask

#: Frames wider than this many training fields are measured on their centre.
SAMPLE_FIELDS = 2
#: The colour cast is measured on a sample about this many pixels on its short side.
COLOUR_SAMPLE = 64
#: The colour cast is the colour of this share of a frame's pixels, the darkest.
STAIN_SHARE = 0.25
#: Below this share of stained pixels a frame is empty.
MIN_STAINED = 0.01
#: ``focus`` limit: this share of the training fields' 0.5th percentile.
FOCUS_MARGIN = 0.75
#: ``lightness`` limits: the 0.5th percentile times the first, the 99.5th times the second
#: (capped at 254.5: a grey of 255 is all white).
LIGHTNESS_MARGIN = (0.8, 1.05)
#: ``highlights`` and ``shadows`` limits: the 99.5th percentile plus this share of the frame.
CLIPPED_MARGIN = 0.2
#: ``cast`` limit: the 99.5th percentile of the training distances times this.
CAST_MARGIN = 1.25

#: Built-in limits for bundles without ``trust.quality``: ``quality_reference`` of the
#: training fields of the Taleqani set (``leukedge data split``, seed 0).
DEFAULT_QUALITY = {
    "focus_min": 0.347,
    "lightness": [153.55, 254.5],
    "highlights_max": 0.3036,
    "shadows_max": 0.2021,
    "cast_mean": [15.369, -31.483],
    "cast_cov": [[60.7, -84.92], [-84.92, 134.08]],
    "cast_max": 4.744,
    "n": 0,
}


def _sample(rgb: np.ndarray, field_px: int) -> np.ndarray:
    """The centre of a frame, at most ``SAMPLE_FIELDS * field_px`` px on a side."""
    side = SAMPLE_FIELDS * field_px
    h, w = rgb.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[top : top + side, left : left + side]


def focus(grey: np.ndarray) -> float:
    """Fine-over-coarse detail energy of a uint8 (H, W) grey image (module doc)."""
    fine = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S, ksize=1))[1][0, 0]
    coarse = cv2.meanStdDev(cv2.Laplacian(cv2.pyrDown(grey), cv2.CV_16S, ksize=1))[1][0, 0]
    return float(fine**2 / max(coarse**2, 1e-6))


def stain_colour(rgb: np.ndarray) -> np.ndarray:
    """LAB (a*, b*) of the mean colour of the darkest ``STAIN_SHARE`` of an RGB uint8
    (H, W, 3) field divided by its background (the mean of its brightest ``BRIGHT_SHARE``):
    float64 (2,).

    Measured on every ``k``-th pixel in each direction, about ``COLOUR_SAMPLE`` px a side.
    """
    k = max(1, min(rgb.shape[:2]) // COLOUR_SAMPLE)
    small = np.ascontiguousarray(rgb[::k, ::k])
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    cum = np.cumsum(cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel())
    dark = int(np.searchsorted(cum, STAIN_SHARE * grey.size))
    bright = int(np.searchsorted(cum, (1.0 - BRIGHT_SHARE) * grey.size))
    stain = np.array(cv2.mean(small, mask=cv2.inRange(grey, 0, dark))[:3])
    white = np.array(cv2.mean(small, mask=cv2.inRange(grey, bright, 255))[:3])
    balanced = np.minimum(255 * stain / np.maximum(white, 1.0) + 0.5, 255).astype(np.uint8)  # >= 0
    # 8-bit LAB (a*, b* offset by 128): a float conversion costs 100x more per call
    return cv2.cvtColor(balanced[None, None], cv2.COLOR_RGB2LAB)[0, 0, 1:] - 128.0


def measure(rgb: np.ndarray, field_px: int = 224, stained: float | None = None) -> dict:
    """The quality measures (module doc) of an RGB uint8 (H, W, 3) frame at the training
    scale, as a dict of floats. ``stained`` (``scale.measure_cells``) saves measuring it
    again; ``focus``, ``cast_a`` and ``cast_b`` are NaN for an empty frame (``stained``
    under ``MIN_STAINED``).
    """
    rgb = np.ascontiguousarray(_sample(rgb, field_px))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if stained is None or not np.isfinite(stained):
        stained = cv2.countNonZero(stained_mask(rgb)) / grey.size
    out = {
        "lightness": cv2.mean(grey)[0],
        "highlights": cv2.countNonZero(cv2.inRange(rgb, (254, 254, 254), (255, 255, 255)))
        / grey.size,
        "shadows": cv2.countNonZero(cv2.inRange(grey, 0, 10)) / grey.size,
        "stained": float(stained),
        "focus": float("nan"),
        "cast_a": float("nan"),
        "cast_b": float("nan"),
    }
    if out["stained"] >= MIN_STAINED:
        out["focus"] = focus(grey)
        out["cast_a"], out["cast_b"] = (float(v) for v in stain_colour(rgb))
    return out


def _cast_distance(m: dict, ref: dict) -> float:
    """Mahalanobis distance of ``m``'s (cast_a, cast_b) from ``ref``'s mean and covariance."""
    da = m["cast_a"] - ref["cast_mean"][0]
    db = m["cast_b"] - ref["cast_mean"][1]
    (saa, sab), (_, sbb) = ref["cast_cov"]
    det = saa * sbb - sab * sab  # a 2 x 2 inverse in closed form: no array work per frame
    return float(np.sqrt(max(0.0, (sbb * da * da - 2 * sab * da * db + saa * db * db) / det)))


def quality_reference(fields) -> dict:
    """The manifest's ``trust.quality`` limits from training fields (RGB uint8 (H, W, 3) each,
    at the training scale), as the module doc describes."""
    ms = [measure(f, min(f.shape[:2])) for f in fields]
    ms = [m for m in ms if m["stained"] >= MIN_STAINED]
    if len(ms) < 2:
        raise DataError("fewer than two non-empty fields; cannot compute trust.quality")

    def q(key: str, p: float) -> float:
        return float(np.quantile([m[key] for m in ms], p))

    ab = np.array([[m["cast_a"], m["cast_b"]] for m in ms])
    cast = {
        "cast_mean": ab.mean(axis=0).round(3).tolist(),
        "cast_cov": np.cov(ab.T).round(3).tolist(),
    }
    dist = [_cast_distance(m, cast) for m in ms]
    ref = {
        "focus_min": round(FOCUS_MARGIN * q("focus", 0.005), 4),
        "lightness": [
            round(LIGHTNESS_MARGIN[0] * q("lightness", 0.005), 2),
            round(min(254.5, LIGHTNESS_MARGIN[1] * q("lightness", 0.995)), 2),
        ],
        "highlights_max": round(q("highlights", 0.995) + CLIPPED_MARGIN, 4),
        "shadows_max": round(q("shadows", 0.995) + CLIPPED_MARGIN, 4),
        **cast,
        "cast_max": round(CAST_MARGIN * float(np.quantile(dist, 0.995)), 3),
        "n": len(ms),
    }
    return ref


def parse_quality_reference(
    manifest: dict, where: str = "leukedge.json"
) -> tuple[dict, str | None]:
    """(``trust.quality`` of a manifest, None), or (``DEFAULT_QUALITY``, a note) when it has
    none; ``BundleError`` naming ``where`` when the entry is malformed."""
    ref = (manifest.get("trust") or {}).get("quality")
    if ref is None:
        return DEFAULT_QUALITY, (
            f"{where}: no trust.quality; judging focus, exposure and colour with the built-in "
            "Taleqani limits (add them with 'leukedge bundle add-trust')"
        )
    try:
        float(ref["focus_min"])
        lo, hi = (float(v) for v in ref["lightness"])
        float(ref["highlights_max"]), float(ref["shadows_max"]), float(ref["cast_max"])
        cov = np.asarray(ref["cast_cov"], float)
        mean = np.asarray(ref["cast_mean"], float)
        if cov.shape != (2, 2) or mean.shape != (2,) or np.linalg.det(cov) <= 0 or lo >= hi:
            raise ValueError("cast_mean must be [a, b], cast_cov a positive 2x2, lightness lo < hi")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{where}: malformed trust.quality ({exc}); recompute it with "
            "'leukedge bundle add-trust'"
        ) from exc
    return ref, None


def judge(m: dict[str, float], ref: dict) -> tuple[str, ...]:
    """The reasons (stable strings, see ``pipeline.REASONS``) a frame's measures ``m`` fail
    the limits ``ref``; empty when it passes. An empty frame is judged on exposure only."""
    reasons = []
    lo, hi = ref["lightness"]
    if m["lightness"] < lo or m["shadows"] > ref["shadows_max"]:
        reasons.append("under-exposed")
    if m["lightness"] > hi or m["highlights"] > ref["highlights_max"]:
        reasons.append("over-exposed")
    if not m["stained"] >= MIN_STAINED:
        return (*reasons, "no-cell")
    if m["focus"] < ref["focus_min"]:
        reasons.insert(0, "blurred")
    if _cast_distance(m, ref) > ref["cast_max"]:
        reasons.append("colour-cast")
    return tuple(reasons)
