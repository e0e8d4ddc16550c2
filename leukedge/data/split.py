"""Leak-safe, stratified, deterministic train/val/test splits and k-fold assignment.

Every file is read once: unusable files are reported and skipped, the rest are
hashed (content and perceptual) and grouped with their duplicates. Groups are
assigned whole, class by class, so a duplicate never sits on both sides of a split.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..edge.imageio import FieldError, decode_field
from ..edge.phash import NEAR_DUPLICATE_BITS, perceptual_hash
from ..errors import DataError, MissingFileError, UsageError
from ..progress import progress_bar
from .dedup import content_hash, group_duplicates
from .layouts import Dataset

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.85, 0.10, 0.05)


@dataclass
class Row:
    """One field of a split: ``aug`` is "" for the file as it is, else a flip code
    (``leukedge.data.balance``)."""

    path: str
    label: str
    split: str
    group: int
    source_class: str = ""
    sha256: str = ""
    fold: int = -1
    aug: str = ""


def scan(
    items: Sequence[tuple[Path, str, str]], near_bits: int = NEAR_DUPLICATE_BITS
) -> tuple[list[Row], list[tuple[str, str]]]:
    """Read, validate, hash and group ``(path, label, source_class)`` items.

    Returns the usable rows (``split`` empty) and ``(path, problem)`` for each
    file that could not be used.
    """
    rows, bad, hashes = [], [], []
    for path, label, source in progress_bar(items, "Reading fields"):
        try:
            data = Path(path).read_bytes()
            rgb = decode_field(data, path)
        except (OSError, FieldError) as exc:
            bad.append((str(path), getattr(exc, "problem", str(exc))))
            continue
        rows.append(Row(str(Path(path).resolve()), label, "", 0, source, content_hash(data)))
        hashes.append(perceptual_hash(rgb))
    if rows:
        groups = group_duplicates([r.sha256 for r in rows], np.stack(hashes), near_bits)
        for row, g in zip(rows, groups):
            row.group = int(g)
    return rows, bad


def _group_labels(rows: Sequence[Row]) -> dict[int, str]:
    """Each group's majority label (ties broken by label name)."""
    votes: dict[int, Counter] = {}
    for r in rows:
        votes.setdefault(r.group, Counter())[r.label] += 1
    return {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in votes.items()}


def _shuffled_groups_by_class(rows: Sequence[Row], seed: int) -> dict[str, list[tuple[int, int]]]:
    """class -> [(group, size)] in a seed-determined order."""
    sizes = Counter(r.group for r in rows)
    by_class: dict[str, list[int]] = {}
    for g, label in sorted(_group_labels(rows).items()):
        by_class.setdefault(label, []).append(g)
    rng = np.random.default_rng(seed)
    out = {}
    for label in sorted(by_class):
        groups = by_class[label]
        order = rng.permutation(len(groups))
        out[label] = [(groups[i], sizes[groups[i]]) for i in order]
    return out


def assign_splits(rows: list[Row], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> None:
    """Set ``row.split`` to train/val/test, stratified by class, groups kept whole.

    Groups are dealt, in a seeded random order, to the split furthest below its
    share of the class, which hits the ratios to within one group per class.
    """
    ratios = np.asarray(ratios, float)
    if ratios.shape != (3,) or (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0):
        raise UsageError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    split_of = {}
    for groups in _shuffled_groups_by_class(rows, seed).values():
        target = ratios * sum(size for _, size in groups)
        count = np.zeros(3)
        for g, size in groups:
            k = int(np.argmax(target - count))
            split_of[g] = SPLITS[k]
            count[k] += size
    for r in rows:
        r.split = split_of[r.group]


def assign_folds(rows: list[Row], k: int, seed: int = 0) -> None:
    """Set ``row.fold`` to 0..k-1 for train rows (test rows keep -1), classes spread evenly.

    For cross-validation fold ``i``, rows with ``fold == i`` are the validation set.
    """
    if k < 2:
        raise UsageError(f"--folds needs at least 2 folds, got {k}")
    pool = [r for r in rows if r.split != "test"]
    fold_of = {}
    for groups in _shuffled_groups_by_class(pool, seed).values():
        count = np.zeros(k)
        for g, size in groups:
            fold_of[g] = int(np.argmin(count))
            count[fold_of[g]] += size
    for r in pool:
        r.split, r.fold = "train", fold_of[r.group]


FIELDS = ("path", "label", "split", "group", "source_class", "sha256", "fold")


def write_split(rows: Iterable[Row], path: str | Path) -> None:
    """Write rows to ``split.csv`` (columns ``FIELDS``)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def read_split(path: str | Path, split: str | None = None) -> list[Row]:
    """Rows of a ``split.csv`` (optionally only one split); relative paths resolve to its folder."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such split file (make one with `leukedge data split`)")
    rows = []
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            missing = {"path", "label", "split", "group"} - d.keys()
            if missing:
                raise DataError(f"{path}: missing column(s) {sorted(missing)}")
            if split is not None and d["split"] != split:
                continue
            p = Path(d["path"])
            rows.append(
                Row(
                    str(p if p.is_absolute() else path.parent / p),
                    d["label"],
                    d["split"],
                    int(d["group"]),
                    d.get("source_class", ""),
                    d.get("sha256", ""),
                    int(d.get("fold") or -1),
                )
            )
    return rows


def count_table(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """split -> label -> count."""
    table: dict[str, dict[str, int]] = {}
    for r in rows:
        key = r.split if r.fold < 0 else f"fold{r.fold}"
        table.setdefault(key, {}).setdefault(r.label, 0)
        table[key][r.label] += 1
    return table


def make_split(
    dataset: Dataset,
    out: str | Path,
    scheme: str = "4",
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    folds: int = 0,
    near_bits: int = NEAR_DUPLICATE_BITS,
) -> dict:
    """Scan, group and split; write ``out/split.csv`` and ``out/split.json``; return the summary."""
    items = dataset.select(scheme)
    rows, bad = scan(items, near_bits)
    if not rows:
        raise DataError(f"{dataset.root}: no usable image among {len(items)} file(s)")
    assign_splits(rows, ratios, seed)
    if folds:
        assign_folds(rows, folds, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_split(rows, out / "split.csv")
    sizes = Counter(r.group for r in rows)
    summary = {
        "source": str(dataset.root.resolve()),
        "layout": dataset.layout,
        "classes": scheme,
        "seed": seed,
        "ratios": list(ratios),
        "folds": folds,
        "near_duplicate_bits": near_bits,
        "files": len(rows),
        "duplicate_groups": sum(1 for s in sizes.values() if s > 1),
        "files_in_duplicate_groups": sum(s for s in sizes.values() if s > 1),
        "counts": count_table(rows),
        "balanced_train_per_class": max(
            Counter(r.label for r in rows if r.split == "train").values(), default=0
        ),
        "skipped": [{"path": p, "problem": why} for p, why in bad],
        "ignored_folders": dataset.ignored_folders,
    }
    (out / "split.json").write_text(json.dumps(summary, indent=2))
    return summary
