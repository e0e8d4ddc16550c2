"""A hot folder that a microscope's own software saves fields into."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .base import Frame, Source
from .files import is_image_name, read_frame
from .state import DoneSet, Key

STATE_NAME = ".leukedge-done.json"


class FolderSource(Source):
    """Every image in ``folder`` (oldest mtime first, then by name), then each new one.

    A file is read once its size and mtime have not changed for ``settle``
    seconds; one that is stable but does not decode is retried (it may still be
    written) and reported as an error frame after ``decode_timeout`` seconds.
    Files whose results were confirmed with ``mark_done`` are never yielded
    again, across restarts: their (name, size, mtime) keys live in a state file,
    ``folder/.leukedge-done.json`` or, for a read-only folder, a file named after
    the folder in ``state_dir``. With ``once`` the files present at the start
    are processed and iteration ends; otherwise the folder is polled every
    ``poll`` seconds until ``stop()``.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        once: bool = False,
        poll: float = 0.5,
        settle: float = 1.0,
        decode_timeout: float = 10.0,
        state_dir: str | Path | None = None,
    ):
        super().__init__()
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ValueError(f"folder:{folder}: not a folder")
        self.once, self.poll, self.settle, self.decode_timeout = once, poll, settle, decode_timeout
        if state_dir is None:
            state = self.folder / STATE_NAME
        else:
            tag = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            state = Path(state_dir) / f"hotfolder-{tag}.json"
        self.done = DoneSet(state)
        self._open: dict[str, Key] = {}  # source_id -> key: yielded, not yet marked done

    def mark_done(self, frame: Frame) -> None:
        """Persist that ``frame``'s result is logged; call only after the log commit.
        Frames not from this folder, or already marked, are ignored."""
        key = self._open.pop(frame.source_id, None)
        if key is not None:
            self.done.add(key)

    def _scan(self, only: set[str] | None) -> list[tuple[str, os.stat_result]]:
        """Image files of the folder as (name, stat), oldest mtime first, then by name."""
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not is_image_name(entry.name) or (only is not None and entry.name not in only):
                    continue
                try:
                    if entry.is_file():
                        st = entry.stat()
                        found.append((st.st_mtime_ns, entry.name, st))
                except FileNotFoundError:
                    continue
        return [(name, st) for _, name, st in sorted(found)]

    def _generate(self) -> Iterator[Frame]:
        pending: dict[str, tuple[Key, float]] = {}  # name -> (key, when first seen so)
        only: set[str] | None = None  # with once: the files present at the first scan
        listing_failed = False
        while not self.stopping:
            try:
                files = self._scan(only)
                listing_failed = False
                if self.once and only is None:
                    only = {name for name, _ in files}
            except OSError as exc:
                if not listing_failed:
                    problem = f"cannot list folder ({exc.strerror or exc}); retrying"
                    yield Frame(str(self.folder), error=f"{self.folder}: {problem}")
                listing_failed = True
                files = []
            waiting = False
            for name, st in files:
                key = (name, st.st_size, st.st_mtime_ns)
                if key in self.done or key in self._open.values():
                    continue
                now = time.monotonic()
                if pending.get(name, (None,))[0] != key:
                    pending[name] = (key, now)
                stable_for = now - pending[name][1]
                if stable_for < self.settle:
                    waiting = True
                    continue
                path = self.folder / name
                frame = read_frame(path)
                try:
                    after = path.stat()
                except FileNotFoundError:
                    continue
                if (after.st_size, after.st_mtime_ns) != key[1:] or (
                    frame.error and stable_for < self.decode_timeout
                ):
                    waiting = True  # changed while read, or not decodable yet
                    continue
                del pending[name]
                self._open[frame.source_id] = key
                yield frame
                if self.stopping:
                    return
            names = {name for name, _ in files}
            pending = {n: v for n, v in pending.items() if n in names}
            if self.once and not waiting:
                return
            self.wait(self.poll)
