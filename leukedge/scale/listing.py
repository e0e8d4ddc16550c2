"""The fields of an archive: SRC (a folder tree, a list file or a glob) -> (path, slide).

A field's slide is its folder, relative to the folder SRC names (a list file's or a glob's
slides are relative to the folder all their fields share); fields directly in that folder
belong to a slide named after it. A folder in one of the labelled dataset layouts
(``find_dataset``) gives its dataset fields (so the Taleqani ``Segmented`` copies are not
scored); any other folder gives every image file below it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.layouts import find_dataset
from ..edge.imageio import IMAGE_SUFFIXES
from ..edge.sources.files import is_image_name
from ..errors import DataError, MissingFileError


@dataclass(frozen=True)
class FieldRef:
    """One field file (absolute path) and the slide it belongs to."""

    path: str
    slide: str


def _walk(root: Path) -> list[Path]:
    """Image files below ``root``, hidden files and folders left out, in sorted order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if is_image_name(f)]
    return found


def _folder(root: Path) -> list[Path]:
    try:
        dataset = find_dataset(root)
    except ValueError:
        dataset = None
    if dataset is not None and not dataset.ignored_folders:
        return [p for p, _ in dataset.items if is_image_name(p.name)]
    return _walk(root)


def _list_file(path: Path) -> list[Path]:
    """One path a line (relative to the list file's folder); blank lines and ``#`` skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable list of paths ({exc})") from exc
    entries = [line.strip() for line in lines]
    return [path.parent / e for e in entries if e and not e.startswith("#")]


def field_refs(paths: Sequence[str | Path], base: str | Path | None = None) -> list[FieldRef]:
    """FieldRefs with slides relative to ``base`` (default: the folder all the paths share);
    each path once, in the given order."""
    paths = [Path(p).expanduser() for p in paths]
    if base is None:
        base = os.path.commonpath([os.path.abspath(p.parent) for p in paths]) if paths else "."
    base = Path(os.path.abspath(base))
    refs, seen = [], set()
    for p in paths:
        p = Path(os.path.abspath(p))
        if p in seen:
            continue
        seen.add(p)
        rel = p.parent.relative_to(base).as_posix() if p.parent.is_relative_to(base) else "."
        refs.append(FieldRef(str(p), base.name if rel == "." else rel))
    return refs


def list_fields(src: str | Path) -> list[FieldRef]:
    """The fields SRC names (see the module doc), each once.

    Raises ``MissingFileError`` for a SRC that does not exist and ``DataError`` for one
    that names no field; a listed file that cannot be read is a field all the same
    (it becomes an error row).
    """
    text = str(src)
    path = Path(text).expanduser()
    if path.is_dir():
        base, paths = path, _folder(path)
    elif any(c in text for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        paths = [p for p in matches if p.is_file() and is_image_name(p.name)]
        base = None
    elif path.is_file():
        paths = [path] if path.suffix.lower() in IMAGE_SUFFIXES else _list_file(path)
        base = None
    else:
        raise MissingFileError(f"{src}: no such folder, list file or image")
    if not paths:
        raise DataError(
            f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)}); give a folder of fields, "
            "a list file with one path a line, or a glob such as 'scans/**/*.jpg'"
        )
    return field_refs(paths, base)
