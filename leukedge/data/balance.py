"""Train-time class balancing by flips: copies of the smaller classes up to the largest.

Only training rows are balanced; validation and test are never augmented. A copy is the
same row with a flip code (``Row.aug``) that ``apply_aug`` applies to its field and its
mask alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from .split import Row

#: Flip codes: horizontal, vertical, both.
AUGS = ("h", "v", "hv")


def balance_rows(rows: Sequence[Row], seed: int = 0) -> list[Row]:
    """Train-time class balancing: the rows plus flipped copies up to the largest class.

    Copies are drawn at random (seeded) from each smaller class and given a random
    flip code in ``AUGS``; apply it to a field and its mask alike with ``apply_aug``.
    Only pass training rows: validation and test are never augmented.
    """
    counts = Counter(r.label for r in rows)
    if not counts:
        return []
    top = max(counts.values())
    rng = np.random.default_rng(seed)
    out = list(rows)
    for label in sorted(counts):
        members = [r for r in rows if r.label == label]
        for i in rng.integers(0, len(members), top - counts[label]):
            out.append(Row(**{**asdict(members[i]), "aug": AUGS[rng.integers(len(AUGS))]}))
    return out


def apply_aug(arr: np.ndarray, aug: str) -> np.ndarray:
    """Flip an (H, W, ...) array: "h" horizontally, "v" vertically, "hv" both, "" not at all."""
    if aug not in ("", *AUGS):
        raise ValueError(f"unknown flip code {aug!r}")
    if "h" in aug:
        arr = arr[:, ::-1]
    if "v" in aug:
        arr = arr[::-1]
    return np.ascontiguousarray(arr)
