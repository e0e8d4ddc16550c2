"""Image files given by path, glob or folder."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..imageio import IMAGE_SUFFIXES, FieldError, decode_field, read_image_bytes
from .base import Frame, Source


def is_image_name(name: str) -> bool:
    """True for a visible image file name: an ``IMAGE_SUFFIXES`` suffix, no leading
    ``.`` or ``~`` (so dotfiles, ``x.jpg.part`` and ``x.jpg~`` are all False)."""
    return not name.startswith((".", "~")) and Path(name).suffix.lower() in IMAGE_SUFFIXES


def printable(path: str | Path) -> str:
    """``path`` as text that can always be printed and stored: name bytes that are
    not UTF-8 (kept by Python as surrogates) appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file(path: Path, slide: str | None = None) -> Frame:
    """A frame with the file's bytes in ``data`` (not decoded yet), or ``error`` set
    when the file cannot be read or is too large to be a field (then left unread)."""
    name = printable(path)
    try:
        return Frame(name, data=read_image_bytes(path), path=path, slide=slide)
    except FieldError as exc:
        return Frame(name, error=str(FieldError(name, exc.problem)), path=path, slide=slide)


def decode_frame(frame: Frame) -> FieldError | None:
    """Decode a ``read_file`` frame in place: ``rgb`` set, or ``error`` if the bytes
    are not a usable field. Returns that error (its ``permanent`` False: the file may
    still be being written), else None."""
    if frame.error is not None or frame.rgb is not None:
        return None
    try:
        frame.rgb = decode_field(frame.data, frame.source_id)
    except FieldError as exc:
        frame.error = str(exc)
        return exc
    return None


def read_frame(path: Path) -> Frame:
    """Read and decode one image file; a Frame with ``error`` set (and ``data`` when
    the bytes could be read) if it is not a usable field."""
    frame = read_file(path)
    decode_frame(frame)
    return frame


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

    read_ahead = True

    def __init__(self, patterns: Sequence[str | Path]):
        super().__init__()
        self.patterns = list(patterns)

    def _generate(self) -> Iterator[Frame]:
        expanded = [(pattern, expand(pattern)) for pattern in self.patterns]
        self.backlog = sum(len(paths) for _, paths in expanded)
        for pattern, paths in expanded:
            if not paths:
                yield Frame(str(pattern), error=f"{pattern}: no image files match")
            for path in paths:
                if self.stopping:
                    return
                yield read_frame(path)
                self.backlog -= 1
