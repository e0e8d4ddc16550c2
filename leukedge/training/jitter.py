"""Stain and illumination jitter for training, on the raw field before preprocessing.

The measured recipe (``Jitter()``): OpenCV HSV hue +-12 units, saturation x 0.6-1.4,
value x 0.75-1.15, then a per-channel (R, G, B) gain x 0.9-1.1. Set a part to None
to switch it off. ``dihedral`` gives the 8 flips and 90-degree rotations of a field
(and its mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation.shifts import adjust_hsv, scale_channels


@dataclass(frozen=True)
class Jitter:
    """Jitter ranges; a part set to None is not applied.

    hue : maximum hue move in OpenCV units (of 180), drawn as an integer in [-hue, hue].
    sat, val : (low, high) factors for HSV saturation and value, drawn uniformly.
    gain : (low, high) factor drawn uniformly for each of R, G and B.
    """

    hue: int | None = 12
    sat: tuple[float, float] | None = (0.6, 1.4)
    val: tuple[float, float] | None = (0.75, 1.15)
    gain: tuple[float, float] | None = (0.9, 1.1)


def jitter(rgb: np.ndarray, rng: np.random.Generator, cfg: Jitter = Jitter()) -> np.ndarray:
    """A randomly re-stained, re-lit copy of an RGB uint8 (H, W, 3) field: uint8 (H, W, 3).

    Draws, in order, only for the parts switched on: hue, saturation, value, gains.
    """
    hue = int(rng.integers(-cfg.hue, cfg.hue + 1)) if cfg.hue else 0
    sat = float(rng.uniform(*cfg.sat)) if cfg.sat else 1.0
    val = float(rng.uniform(*cfg.val)) if cfg.val else 1.0
    if hue or sat != 1.0 or val != 1.0:
        rgb = adjust_hsv(rgb, hue, sat, val)
    if cfg.gain:
        rgb = scale_channels(rgb, tuple(rng.uniform(*cfg.gain, 3)))
    return rgb


def dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of an (H, W, ...) array: ``k % 4`` quarter turns, flipped
    left-right first when ``k % 8 >= 4``. Apply the same ``k`` to a field and its mask."""
    if k % 8 >= 4:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(np.rot90(arr, k % 4))
