"""Finding labelled smear fields on disk in the layouts leukedge understands.

Layouts:
- ``taleqani``: ``ROOT/Original/{Benign,Early,Pre,Pro}/*`` (optional ``ROOT/Segmented``).
- ``kaggle``: ``ROOT/{Benign, [Malignant] early Pre-B, [Malignant] Pre-B, [Malignant] Pro-B}``
  (also one folder down, as the Kaggle archive unpacks).
- ``folders``: a plain class-per-folder tree whose folder names are class names or
  common aliases ("benign", "hematogones", "early pre-b", "pre-b", "pro-b", ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..edge.classes import SCHEMES
from ..edge.imageio import IMAGE_SUFFIXES
from ..errors import DataError, MissingFileError, UsageError

KAGGLE_FOLDERS = {
    "Benign": "Benign",
    "[Malignant] early Pre-B": "Early",
    "[Malignant] Pre-B": "Pre",
    "[Malignant] Pro-B": "Pro",
}


def canonical_class(name: str) -> str | None:
    """Map a folder name to one of the four classes, or None if unrecognised."""
    key = re.sub(r"[\[\]_\-\s]+", " ", name.lower()).strip()
    key = key.removeprefix("malignant ").strip()
    if key in ("benign", "hematogone", "hematogones", "haematogones", "normal"):
        return "Benign"
    if key in ("early", "early pre b", "early preb"):
        return "Early"
    if key in ("pre", "pre b", "preb"):
        return "Pre"
    if key in ("pro", "pro b", "prob"):
        return "Pro"
    return None


@dataclass
class Dataset:
    """Labelled fields found under ``root``: ``items`` holds (path, source class)."""

    root: Path
    layout: str
    items: list[tuple[Path, str]]
    ignored_folders: list[str] = field(default_factory=list)

    def select(self, scheme: str = "4") -> list[tuple[Path, str, str]]:
        """(path, target label, source class) under a class scheme ("4", "3" or "2")."""
        if scheme not in SCHEMES:
            raise UsageError(f"unknown class scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
        mapping = SCHEMES[scheme]
        return [(p, mapping[c], c) for p, c in self.items if c in mapping]


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_folders(folder: Path, names: dict[str, str] | None) -> dict[Path, str]:
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = names.get(sub.name) if names is not None else canonical_class(sub.name)
        if label:
            found[sub] = label
    return found


def _kaggle_root(root: Path) -> Path | None:
    for cand in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if len(_class_folders(cand, KAGGLE_FOLDERS)) >= 2:
            return cand
    return None


def find_dataset(root: str | Path) -> Dataset:
    """Detect the layout under ``root`` and list its labelled image files.

    Raises ``MissingFileError`` if ``root`` is missing and ``DataError`` if it holds no
    recognised class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such folder")
    if (root / "Original").is_dir() and _class_folders(root / "Original", None):
        layout, base, names = "taleqani", root / "Original", None
    elif (kaggle := _kaggle_root(root)) is not None:
        layout, base, names = "kaggle", kaggle, KAGGLE_FOLDERS
    else:
        layout, base, names = "folders", root, None
    folders = _class_folders(base, names)
    if not folders:
        subs = ", ".join(p.name for p in sorted(root.iterdir()) if p.is_dir()) or "none"
        raise DataError(
            f"{root}: no recognised class folders (found sub-folders: {subs}); expected "
            "Original/{Benign,Early,Pre,Pro}, the Kaggle '[Malignant] ...' folders, "
            "or one folder per class"
        )
    items = [(p, label) for folder, label in folders.items() for p in _images(folder)]
    ignored = sorted(
        p.name for p in base.iterdir() if p.is_dir() and p not in folders and p.name != "Segmented"
    )
    return Dataset(root, layout, items, ignored)
