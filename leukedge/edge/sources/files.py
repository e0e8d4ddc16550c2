"""Image files given by path, glob or folder."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..imageio import IMAGE_SUFFIXES, FieldError, decode_field
from .base import Frame, Source


def is_image_name(name: str) -> bool:
    """True for a visible image file name: an ``IMAGE_SUFFIXES`` suffix, no leading
    ``.`` or ``~`` (so dotfiles, ``x.jpg.part`` and ``x.jpg~`` are all False)."""
    return not name.startswith((".", "~")) and Path(name).suffix.lower() in IMAGE_SUFFIXES


def read_frame(path: Path) -> Frame:
    """Read one image file; a Frame with ``error`` set (and ``data`` when the bytes
    could be read) if it is not a usable field."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        error = FieldError(path, f"cannot read file ({exc.strerror or exc})")
        return Frame(str(path), error=str(error))
    try:
        return Frame(str(path), rgb=decode_field(data, path), data=data)
    except FieldError as exc:
        return Frame(str(path), data=data, error=str(exc))


def expand(pattern: str | Path) -> list[Path]:
    """Paths of one argument: a folder's images (by name), a glob's image matches
    (sorted), or the path itself."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p.name))
    if any(c in str(path) for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        return [p for p in matches if p.is_file() and is_image_name(p.name)]
    return [path]


class FilesSource(Source):
    """Image files, in the order given; each glob or folder expanded in sorted order."""

    def __init__(self, patterns: Sequence[str | Path]):
        super().__init__()
        self.patterns = list(patterns)

    def _generate(self) -> Iterator[Frame]:
        for pattern in self.patterns:
            paths = expand(pattern)
            if not paths:
                yield Frame(str(pattern), error=f"{pattern}: no image files match")
            for path in paths:
                if self.stopping:
                    return
                yield read_frame(path)
