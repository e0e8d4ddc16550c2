"""Frame quality before inference: focus, exposure and colour, judged against the training fields.

Each measure is taken on the frame at the training scale (``scale.normalise``; a frame over
``SAMPLE_FIELDS`` training fields across is measured on its centre), so it means the same on a
224 px field and on a camera frame:

- ``focus``: the energy of the finest detail over that of coarser detail, ``var(I - G1 * I) /
  var(G1 * I - G3 * I)`` on the grey image (``G1``, ``G3``: Gaussian blurs of sigma 1 and 3 px).
  A ratio of two bands, so contrast and exposure cancel; defocus removes the fine band first.
- ``lightness``: mean grey level (0-255);
  ``highlights``: share of pixels white in all three channels (>= 254), so a background that
  saturates only the blue channel, common in the training fields, does not count;
  ``shadows``: share of pixels black (grey <= 10).
- ``cast``: after white balancing (``illumination.white_balance``, which cancels a lamp's colour),
  the mean LAB a*, b* of the darker half of the pixels (the stained cells), as a Mahalanobis
  distance from the training fields' mean: a stain or camera colour white balance cannot undo.
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

from .bundle import BundleError
from .illumination import white_balance
from .scale import stained_mask

#: Frames wider than this many training fields are measured on their centre.
SAMPLE_FIELDS = 2
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
    "focus_min": 0.1072,
    "lightness": [153.55, 254.5],
    "highlights_max": 0.3036,
    "shadows_max": 0.2021,
    "cast_mean": [10.167, -22.862],
    "cast_cov": [[34.262, -54.481], [-54.481, 97.842]],
    "cast_max": 4.268,
    "n": 0,
}


def _sample(rgb: np.ndarray, field_px: int) -> np.ndarray:
    """The centre of a frame, at most ``SAMPLE_FIELDS * field_px`` px on a side."""
    side = SAMPLE_FIELDS * field_px
    h, w = rgb.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[top : top + side, left : left + side]


def focus(grey: np.ndarray) -> float:
    """Fine-over-coarse detail energy of a uint8 (H, W) grey image (see module doc)."""
    g = grey.astype(np.float32)
    fine = cv2.GaussianBlur(g, (0, 0), 1.0)
    coarse = cv2.GaussianBlur(fine, (0, 0), np.sqrt(8.0))  # G1 then sqrt(3^2 - 1^2): G3
    return float(np.var(g - fine) / max(float(np.var(fine - coarse)), 1e-6))


def stain_colour(rgb: np.ndarray) -> np.ndarray:
    """Mean LAB (a*, b*) of the darker half of a white-balanced field: float64 (2,)."""
    small = rgb[::2, ::2] if min(rgb.shape[:2]) >= 64 else rgb
    lab = cv2.cvtColor(white_balance(np.ascontiguousarray(small)), cv2.COLOR_RGB2LAB)
    lab = lab.reshape(-1, 3)
    dark = lab[:, 0] <= np.median(lab[:, 0])
    return lab[dark, 1:].mean(axis=0) - 128.0


def measure(rgb: np.ndarray, field_px: int = 224) -> dict[str, float]:
    """The quality measures (module doc) of an RGB uint8 (H, W, 3) frame at the training scale.

    ``focus``, ``cast_a`` and ``cast_b`` are NaN for an empty frame (``stained`` under
    ``MIN_STAINED``).
    """
    rgb = np.ascontiguousarray(_sample(rgb, field_px))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = {
        "lightness": float(grey.mean()),
        "highlights": float(np.count_nonzero(rgb.min(axis=2) >= 254) / grey.size),
        "shadows": float(np.count_nonzero(grey <= 10) / grey.size),
        "stained": float(stained_mask(rgb).mean()),
        "focus": float("nan"),
        "cast_a": float("nan"),
        "cast_b": float("nan"),
    }
    if out["stained"] >= MIN_STAINED:
        out["focus"] = focus(grey)
        out["cast_a"], out["cast_b"] = (float(v) for v in stain_colour(rgb))
    return out


def _cast_distance(m: dict, ref: dict) -> float:
    d = np.array([m["cast_a"], m["cast_b"]]) - np.asarray(ref["cast_mean"])
    return float(np.sqrt(d @ np.linalg.inv(np.asarray(ref["cast_cov"])) @ d))


def quality_reference(fields) -> dict:
    """The manifest's ``trust.quality`` limits from training fields (RGB uint8 (H, W, 3) each,
    at the training scale), as the module doc describes."""
    ms = [measure(f, min(f.shape[:2])) for f in fields]
    ms = [m for m in ms if m["stained"] >= MIN_STAINED]
    if len(ms) < 2:
        raise ValueError("fewer than two non-empty fields; cannot compute trust.quality")

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
    the limits ``ref``; empty when it passes."""
    if not m["stained"] >= MIN_STAINED:
        return ("no-cell",)
    reasons = []
    if m["focus"] < ref["focus_min"]:
        reasons.append("blurred")
    lo, hi = ref["lightness"]
    if m["lightness"] < lo or m["shadows"] > ref["shadows_max"]:
        reasons.append("under-exposed")
    if m["lightness"] > hi or m["highlights"] > ref["highlights_max"]:
        reasons.append("over-exposed")
    if _cast_distance(m, ref) > ref["cast_max"]:
        reasons.append("colour-cast")
    return tuple(reasons)
