"""The a* channel of OpenCV's 8-bit LAB conversion by table lookup.

Segmentation splits a field on a* alone, and ``cv2.cvtColor(..., COLOR_RGB2LAB)`` spends
about 250 us on a 224 px field computing L*, a* and b* of every pixel. One table of a* for
all 2**24 colours (16 MB, made by that same conversion, so the values are OpenCV's) answers
with one lookup per pixel in about a third of the time. Making it takes about 0.1 s, so a
process makes it once it has asked for a* of ``MAKE_AFTER`` images (a station, a folder or
an archive): a one-field command, and a process's cold start, never pay for it.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Images converted by ``cv2.cvtColor`` before the table is made.
MAKE_AFTER = 16

_TABLE: np.ndarray | None = None  # uint8 (2**24,): a* of R | G << 8 | B << 16
_asked = 0


def _make_table() -> np.ndarray:
    """uint8 (2**24,): a* of every colour, one 256 x 256 (G, R) plane per blue level."""
    table = np.empty((256, 256, 256), np.uint8)
    plane = np.empty((256, 256, 3), np.uint8)
    plane[..., 0] = np.arange(256, dtype=np.uint8)[None, :]
    plane[..., 1] = np.arange(256, dtype=np.uint8)[:, None]
    for blue in range(256):
        plane[..., 2] = blue
        cv2.extractChannel(cv2.cvtColor(plane, cv2.COLOR_RGB2LAB), 1, dst=table[blue])
    return table.reshape(-1)


def a_star(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W): ``cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1]`` of an RGB uint8
    (H, W, 3) C-contiguous image (a* offset by 128)."""
    global _TABLE, _asked
    if _TABLE is None:
        _asked += 1
        if _asked < MAKE_AFTER:
            return cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 1)
        _TABLE = _make_table()
    colour = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA).view("<u4")[..., 0]  # alpha 255 on top
    np.bitwise_and(colour, 0xFFFFFF, out=colour)
    return _TABLE.take(colour)
