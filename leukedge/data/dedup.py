"""Exact and near-duplicate detection, so that a duplicate group never straddles splits.

Exact duplicates share a SHA-256 of the file bytes. Near duplicates (the same
field photographed twice, slightly shifted or refocused) share a 64-bit DCT
perceptual hash (``leukedge.edge.phash``, which the station uses too) within
``NEAR_DUPLICATE_BITS`` bits.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..edge.phash import NEAR_DUPLICATE_BITS


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def group_duplicates(
    sha: list[str], phash: np.ndarray, max_bits: int = NEAR_DUPLICATE_BITS
) -> np.ndarray:
    """Group ids (int64 (N,)) joining exact and near duplicates transitively.

    ``sha`` holds N content hashes and ``phash`` the (N, 8) uint8 perceptual
    hashes. Group ids are the index of each group's first member.
    """
    n = len(sha)
    parent = np.arange(n)

    def union(a: int, b: int) -> None:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, h in enumerate(sha):
        union(first.setdefault(h, i), i)
    bits = np.unpackbits(phash, axis=1).astype(np.float32)
    for start in range(0, n, 1024):  # Hamming distances in blocks: d = a(1-b) + (1-a)b
        a = bits[start : start + 1024]
        dist = a @ (1 - bits).T + (1 - a) @ bits.T
        for i, j in np.argwhere(dist <= max_bits):
            if start + i < j:
                union(start + i, j)
    return np.array([_find(parent, i) for i in range(n)], dtype=np.int64)
