"""Data layer: layouts, class schemes, leak-safe splits, balancing and bad input."""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TALEQANI
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.data.balance import apply_aug, balance_rows
from leukedge.data.layouts import find_dataset
from leukedge.data.split import make_split, read_split
from leukedge.edge.classes import CLASSES
from leukedge.edge.synth import synth_field

SHARED = Path(__file__).resolve().parents[2] / "shared/data/taleqani-all"
KAGGLE = {
    "Benign": "Benign",
    "Early": "[Malignant] early Pre-B",
    "Pre": "[Malignant] Pre-B",
    "Pro": "[Malignant] Pro-B",
}
PER_CLASS = {"Benign": 8, "Early": 10, "Pre": 12, "Pro": 9}


def _write(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )


def _tree(root: Path, folder_of: dict[str, str]) -> Path:
    for label, n in PER_CLASS.items():
        for i in range(n):
            rgb, _ = synth_field(label, size=(64, 64), seed=i)
            _write(root / folder_of[label] / f"{label}-{i:03d}.jpg", rgb)
    return root


@pytest.fixture
def taleqani(tmp_path) -> Path:
    return _tree(tmp_path / "tq", {c: f"Original/{c}" for c in CLASSES})


@pytest.mark.parametrize(
    ("layout", "folders"),
    [
        ("taleqani", {c: f"Original/{c}" for c in CLASSES}),
        ("kaggle", {c: f"Blood cell Cancer [ALL]/{k}" for c, k in KAGGLE.items()}),
        (
            "folders",
            {"Benign": "hematogones", "Early": "early_pre-b", "Pre": "Pre-B", "Pro": "pro"},
        ),
    ],
)
def test_layouts_are_detected_and_labelled(tmp_path, layout, folders):
    ds = find_dataset(_tree(tmp_path, folders))
    assert ds.layout == layout
    assert Counter(c for _, c in ds.items) == PER_CLASS
    for path, label in ds.items:
        assert path.name.startswith(label)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("4", PER_CLASS),
        ("3", {"Benign": 8, "Pre": 12, "Pro": 9}),
        ("2", {"Benign": 8, "Malignant": 31}),
    ],
)
def test_class_schemes(taleqani, scheme, expected):
    items = find_dataset(taleqani).select(scheme)
    assert Counter(label for _, label, _ in items) == expected
    if scheme == "2":
        assert {src for _, label, src in items if label == "Malignant"} == {"Early", "Pre", "Pro"}


def test_unrecognised_folder_is_a_clear_error(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    with pytest.raises(ValueError, match="no recognised class folders.*cats, dogs"):
        find_dataset(tmp_path)
    result = CliRunner().invoke(app, ["data", "split", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no recognised class folders" in result.output


def test_duplicate_groups_never_straddle_splits(taleqani, tmp_path):
    pro = taleqani / "Original/Pro"
    exact = pro / "Pro-000-copy.jpg"
    shutil.copy(pro / "Pro-000.jpg", exact)
    # A near duplicate: the same field re-encoded at lower quality and shifted by one pixel.
    rgb = cv2.cvtColor(cv2.imread(str(pro / "Pro-001.jpg")), cv2.COLOR_BGR2RGB)
    _write(pro / "Pro-001-again.jpg", np.roll(rgb, 1, axis=1), quality=70)
    ds = find_dataset(taleqani)
    for seed in range(8):
        summary = make_split(ds, tmp_path / f"s{seed}", seed=seed, ratios=(0.5, 0.25, 0.25))
        rows = read_split(tmp_path / f"s{seed}" / "split.csv")
        by_name = {Path(r.path).name: r for r in rows}
        assert by_name["Pro-000.jpg"].group == by_name["Pro-000-copy.jpg"].group
        assert by_name["Pro-001.jpg"].group == by_name["Pro-001-again.jpg"].group
        assert by_name["Pro-000.jpg"].group != by_name["Pro-001.jpg"].group
        splits_of_group: dict[int, set[str]] = {}
        for r in rows:
            splits_of_group.setdefault(r.group, set()).add(r.split)
        assert all(len(s) == 1 for s in splits_of_group.values())
        assert summary["duplicate_groups"] == 2


def test_split_is_stratified_and_deterministic(taleqani, tmp_path):
    ds = find_dataset(taleqani)
    make_split(ds, tmp_path / "a", seed=3, ratios=(0.5, 0.25, 0.25))
    make_split(ds, tmp_path / "b", seed=3, ratios=(0.5, 0.25, 0.25))
    make_split(ds, tmp_path / "c", seed=4, ratios=(0.5, 0.25, 0.25))
    a = (tmp_path / "a/split.csv").read_text()
    assert a == (tmp_path / "b/split.csv").read_text()
    assert a != (tmp_path / "c/split.csv").read_text()
    rows = read_split(tmp_path / "a/split.csv")
    with open(tmp_path / "a/split.csv") as f:
        assert {"path", "label", "split", "group"} <= set(csv.DictReader(f).fieldnames)
    for label, n in PER_CLASS.items():
        counts = Counter(r.split for r in rows if r.label == label)
        for split, share in zip(("train", "val", "test"), (0.5, 0.25, 0.25)):
            assert abs(counts[split] - share * n) <= 1, (label, counts)


def test_kfold_keeps_test_out_and_spreads_classes(taleqani, tmp_path):
    ds = find_dataset(taleqani)
    make_split(ds, tmp_path, seed=1, ratios=(0.6, 0.2, 0.2), folds=3)
    rows = read_split(tmp_path / "split.csv")
    test = [r for r in rows if r.split == "test"]
    cv_rows = [r for r in rows if r.split != "test"]
    assert test and all(r.fold == -1 for r in test)
    assert {r.fold for r in cv_rows} == {0, 1, 2}
    for label in PER_CLASS:
        sizes = Counter(r.fold for r in cv_rows if r.label == label)
        assert max(sizes.values()) - min(sizes.values()) <= 1, (label, sizes)


def test_balancing_flips_train_rows_up_to_largest_class(taleqani, tmp_path):
    make_split(find_dataset(taleqani), tmp_path, seed=0, ratios=(0.6, 0.2, 0.2))
    train = read_split(tmp_path / "split.csv", split="train")
    balanced = balance_rows(train, seed=0)
    counts = Counter(r.label for r in balanced)
    assert len(set(counts.values())) == 1
    assert counts["Benign"] == max(Counter(r.label for r in train).values())
    assert all(r.split == "train" for r in balanced)
    extra = balanced[len(train) :]
    assert extra and all(r.aug in ("h", "v", "hv") for r in extra)
    assert balanced == balance_rows(train, seed=0)


def test_apply_aug_flips_field_and_mask_alike():
    rgb, mask = synth_field("Pre", size=(40, 60), seed=2)
    for aug, expected in (
        ("h", rgb[:, ::-1]),
        ("v", rgb[::-1]),
        ("hv", rgb[::-1, ::-1]),
        ("", rgb),
    ):
        out_rgb, out_mask = apply_aug(rgb, aug), apply_aug(mask, aug)
        np.testing.assert_array_equal(out_rgb, expected)
        np.testing.assert_array_equal(out_mask, (apply_aug(mask.astype(np.uint8), aug) > 0))
    with pytest.raises(ValueError, match="flip code"):
        apply_aug(rgb, "r90")


def test_bad_files_are_listed_and_skipped(taleqani, tmp_path):
    pre = taleqani / "Original/Pre"
    good = (pre / "Pre-000.jpg").read_bytes()
    (pre / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (pre / "empty.jpg").write_bytes(b"")
    (pre / "notes.jpg").write_text("not an image")
    cv2.imwrite(str(pre / "gray.png"), np.full((32, 32), 128, np.uint8))
    result = CliRunner().invoke(app, ["data", "split", str(taleqani), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "o/split.json").read_text()
    for name, reason in (
        ("truncated.jpg", "truncated"),
        ("empty.jpg", "empty"),
        ("notes.jpg", "not a readable image"),
        ("gray.png", "grayscale"),
    ):
        assert name in result.output and reason in result.output
        assert name in summary
    assert len(read_split(tmp_path / "o/split.csv")) == sum(PER_CLASS.values())


def test_cli_prints_count_table(taleqani, tmp_path):
    result = CliRunner().invoke(
        app, ["data", "split", str(taleqani), "--out", str(tmp_path), "--classes", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "taleqani" in result.output
    assert "Early" not in result.output.split("layout")[1].split("duplicate")[0]
    all_line = next(line for line in result.output.splitlines() if "all" in line)
    assert [int(x) for x in all_line.replace("│", " ").split()[1:]] == [8, 12, 9, 29]


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Taleqani data absent")
def test_shared_data_duplicates_stay_together_and_counts(tmp_path):
    ds = find_dataset(SHARED)
    assert ds.layout == "taleqani"
    summary = make_split(ds, tmp_path / "3", scheme="3")
    totals = {
        k: sum(c.get(k, 0) for c in summary["counts"].values()) for k in ("Benign", "Pre", "Pro")
    }
    assert totals == {"Benign": 428, "Pre": 819, "Pro": 682}

    make_split(ds, tmp_path / "4", scheme="4")
    rows = read_split(tmp_path / "4/split.csv")
    original = SHARED.resolve() / "Original"
    split_of = {str(Path(r.path).relative_to(original)): r.split for r in rows}
    groups = [
        [g.removeprefix("Original/") for g in line.split()]
        for line in (SHARED / "DUPLICATES.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "Segmented"))
    ]
    assert len(groups) >= 30
    for group in groups:
        assert len({split_of[name] for name in group}) == 1, group


@pytest.mark.shared
def test_shared_data_has_the_readmes_duplicate_groups(shared_split):
    """README (Data): 83 groups of 166 files, the exact pairs of DUPLICATES.txt, its
    near-duplicate pair and the re-photographed pairs, each within NEAR_DUPLICATE_BITS and
    each kept in one split."""
    from collections import defaultdict

    from leukedge.edge.imageio import read_field
    from leukedge.edge.phash import NEAR_DUPLICATE_BITS, hamming, perceptual_hash

    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    said = re.search(
        r"finds (\d+) groups \((\d+) files\): the (\d+) exact-duplicate pairs of "
        r"`DUPLICATES.txt`, its near-duplicate pair, and (\d+) more pairs",
        readme,
    )
    n_groups, n_files, n_exact, n_more = map(int, said.groups())
    groups = defaultdict(list)
    for row in read_split(shared_split):
        groups[row.group].append(row)
    groups = {g: rows for g, rows in groups.items() if len(rows) > 1}
    assert len(groups) == n_groups and sum(map(len, groups.values())) == n_files
    assert all(len({r.split for r in rows}) == 1 for rows in groups.values())
    original = TALEQANI.resolve() / "Original"
    members = {
        g: {str(Path(r.path).relative_to(original)) for r in rows} for g, rows in groups.items()
    }
    listed = [
        {name.removeprefix("Original/") for name in line.split()}
        for line in (TALEQANI / "DUPLICATES.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "Segmented/"))
    ]
    exact = [g for g, rows in groups.items() if len({r.sha256 for r in rows}) == 1]
    assert len(exact) == n_exact and len(listed) == n_exact + 1  # + its near pair
    assert sorted(map(sorted, listed)) == sorted(
        sorted(m) for m in members.values() if m in listed
    )  # every pair of DUPLICATES.txt is a group of its own
    near = [g for g in groups if g not in exact]
    assert len(near) == n_more + 1
    for g in near:
        hashes = [perceptual_hash(read_field(r.path)) for r in groups[g]]
        assert max(hamming(hashes[0], h) for h in hashes[1:]) <= NEAR_DUPLICATE_BITS, members[g]
