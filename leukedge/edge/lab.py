"""The a* channel of OpenCV's 8-bit LAB conversion by table lookup.

Segmentation splits a field on a* alone, and ``cv2.cvtColor(..., COLOR_RGB2LAB)`` spends
about 250 us on a 224 px field computing L*, a* and b* of every pixel. One table of a*
for all 2**24 colours (16 MB, made by that same conversion, so the values are OpenCV's)
answers with one lookup per pixel, in about a third of the time. Making the table takes about
0.2 s of CPU, so it is made on a thread of its own the first time a* is asked for, and
until it is ready ``a_star`` converts as before: a one-field command never waits for it.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

_TABLE: np.ndarray | None = None  # uint8 (2**24,): a* of R | G << 8 | B << 16
_STARTED = threading.Event()


def _make_table() -> None:
    global _TABLE
    table = np.empty(1 << 24, np.uint8)
    step = 1 << 20
    for start in range(0, 1 << 24, step):
        packed = np.arange(start, start + step, dtype="<u4").view(np.uint8).reshape(1024, 1024, 4)
        rgb = np.ascontiguousarray(packed[..., :3])
        table[start : start + step] = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1].ravel()
    _TABLE = table


def _table() -> np.ndarray | None:
    """The table, or None while it is being made (the first call starts making it)."""
    if _TABLE is None and not _STARTED.is_set():
        _STARTED.set()
        threading.Thread(target=_make_table, name="leukedge-a-star", daemon=True).start()
    return _TABLE


def a_star(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W): ``cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1]`` of an RGB uint8
    (H, W, 3) C-contiguous image (a* offset by 128)."""
    table = _table()
    if table is None:
        return cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 1)
    colour = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA).view("<u4")[..., 0]  # alpha 255 on top
    np.bitwise_and(colour, 0xFFFFFF, out=colour)
    return table.take(colour)
