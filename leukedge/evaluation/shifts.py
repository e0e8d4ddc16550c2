"""Colour shifts and the shortcut audit, applied to the raw field (numpy + OpenCV only).

The shift suite (``SHIFTS``) is the one every leukedge evaluation reports: training
reports, ``leukedge eval`` and the benchmarks. Each shift takes the raw RGB uint8
field, before segmentation and preprocessing, as a different stain batch or lamp
would change it:

- ``hue+8``, ``hue-8``: OpenCV HSV hue (0..179) moved by +-8, wrapping mod 180;
- ``dim15``: RGB x 0.85 (a dimmer lamp);
- ``warm``: R x 1.08, B x 0.92, clipped (a warmer lamp);
- ``desat30``: HSV saturation x 0.7 (a paler stain).

``paint_out_cells`` is the shortcut audit: the detected cells are painted over with
the background colour, so a model that reads cell morphology should fall towards
chance on such fields (lower is better).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from ..edge.segment import scaled_params, segment
from ..errors import UsageError

#: Dilation of the cell mask before painting, in px for a 224x224 field (scaled like
#: the segmentation kernels): covers the cells' soft rims.
PAINT_DILATION = 5


def adjust_hsv(rgb: np.ndarray, hue: int = 0, sat: float = 1.0, val: float = 1.0) -> np.ndarray:
    """RGB uint8 (H, W, 3) with OpenCV HSV hue moved by ``hue`` (mod 180) and S, V scaled."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    if hue:
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(hue)) % 180
    for channel, k in ((1, sat), (2, val)):
        if k != 1.0:
            hsv[..., channel] = np.clip(hsv[..., channel] * np.float32(k) + 0.5, 0, 255)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def scale_channels(rgb: np.ndarray, gains: float | tuple[float, float, float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) times a gain (one, or one per R, G, B channel), rounded and clipped."""
    g = np.broadcast_to(np.asarray(gains, np.float32), (3,))
    return np.clip(rgb * g + np.float32(0.5), 0, 255).astype(np.uint8)


#: The shift suite: name -> function(RGB uint8 (H, W, 3)) -> RGB uint8 (H, W, 3).
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hue+8": partial(adjust_hsv, hue=8),
    "hue-8": partial(adjust_hsv, hue=-8),
    "dim15": partial(scale_channels, gains=0.85),
    "warm": partial(scale_channels, gains=(1.08, 1.0, 0.92)),
    "desat30": partial(adjust_hsv, sat=0.7),
}


def apply_shift(rgb: np.ndarray, name: str) -> np.ndarray:
    """The RGB uint8 (H, W, 3) field under the shift ``name`` (a key of ``SHIFTS``)."""
    if name not in SHIFTS:
        raise UsageError(f"unknown shift {name!r}; choose one of {list(SHIFTS)}")
    return SHIFTS[name](rgb)


def paint_out_cells(
    rgb: np.ndarray, mask: np.ndarray | None = None, seg: str = "robust"
) -> np.ndarray:
    """The field with its cells painted in the median background colour: uint8 (H, W, 3).

    ``mask`` (bool (H, W), True on cells) defaults to ``segment(rgb, seg).mask``; it is
    dilated by ``PAINT_DILATION`` (scaled to the field size) before painting. The
    background colour is the per-channel median of the pixels outside the dilated mask
    (of the whole field when the mask covers it all).
    """
    if mask is None:
        mask = segment(rgb, seg).mask
    kernel = scaled_params(*rgb.shape[:2], (PAINT_DILATION, 1, 0))[0]
    cells = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    outside = rgb[~cells]
    colour = np.median(outside if len(outside) else rgb.reshape(-1, 3), axis=0)
    out = rgb.copy()
    out[cells] = np.round(colour).astype(np.uint8)
    return out
