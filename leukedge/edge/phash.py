"""A 64-bit perceptual hash of a field: evidence that two images show the same field.

The hash keeps the signs of the 8 x 8 lowest-frequency DCT coefficients (of a 32 x 32 grey
copy) around their median, so re-encoding, a small shift or a refocus flips few bits while
another field differs in about half of them. On the Taleqani set the number of pairs within
d bits grows slowly up to 10 bits (83 pairs, each the same field on inspection) and jumps after
13 bits (272 pairs), hence ``NEAR_DUPLICATE_BITS``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Largest Hamming distance (of 64 bits) at which two fields are near duplicates.
NEAR_DUPLICATE_BITS = 10


def perceptual_hash(rgb: np.ndarray) -> np.ndarray:
    """64-bit DCT hash of an RGB uint8 (H, W, 3) field as uint8 (8,) packed bits."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    return np.packbits(low > np.partition(low[1:], 31)[31])  # the median of 63 values


#: Bits set in each byte value (numpy < 2 has no ``bitwise_count``).
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def distances(hashes: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Differing bits between each of ``hashes`` (uint8 (n, 8), packed) and ``h`` (uint8
    (8,)): int (n,). As 64-bit words, so a slide's thousands of hashes cost microseconds."""
    words = np.ascontiguousarray(hashes).view(np.uint64).ravel()
    x = words ^ np.ascontiguousarray(h).view(np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT[x.view(np.uint8)].reshape(-1, 8).sum(axis=1)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of differing bits of two packed hashes (uint8 (8,) each)."""
    return int(distances(a.reshape(1, 8), b)[0])
