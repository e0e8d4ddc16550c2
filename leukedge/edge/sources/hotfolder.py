"""A hot folder that a microscope's own software saves fields into, a subfolder per slide."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..results_log import SlideError, validate_slide_id
from .base import Frame, Source
from .files import decode_frame, is_image_name, printable, read_file

logger = logging.getLogger(__name__)

#: (size in bytes, mtime in ns) of a file: a changed file is read again.
Key = tuple[int, int]


@dataclass
class _Incomplete:
    """A file that decoded as incomplete (empty or truncated): waiting for its writer."""

    key: Key
    since: float  # monotonic time it was first found incomplete with this key
    frame: Frame
    warned: bool = False


class FolderSource(Source):
    """Every image in ``folder`` and in its per-slide subfolders (oldest mtime first,
    then by path), then each new one, until ``stop()``.

    Slides: files in ``folder/S-0042/`` are fields of slide ``S-0042``
    (``Frame.slide``); files at the top level have ``slide`` None (the consumer's
    current slide). A subfolder whose name is not a valid slide id is reported
    once and not read. A slide ends when a file named ``end_marker`` is in its
    folder (at the top level: the top-level slide), or when no new file came for
    ``idle_end`` seconds (None: never): the source then yields a frame with
    ``ends_slide`` set and ``time`` the marker's mtime (or now), after the
    slide's own files.

    A file counts once its size and mtime have not changed for ``settle``
    seconds and it decodes. One that decodes as incomplete (empty or truncated:
    its writer may have stalled) is read again whenever it changes; if it stays
    incomplete it is reported after ``decode_timeout`` seconds and given up as
    an error frame when its slide ends (with ``once``: after ``decode_timeout``).
    Any other decode error is an error frame at once and is never decoded again.

    Each file is yielded at most once per process. Across restarts, the
    consumer's ``already_done`` (the station's results log) skips files already
    logged before they are decoded, with one log line per scan saying how many
    and why. Nothing is written into the folder, so it may be read-only.
    Entries that cannot be read (a symlink loop, no permission, a name that is
    not UTF-8 is fine) are reported once and skipped; the rest of the folder
    goes on. With ``once``, the files present at the first scan are processed
    and iteration ends; otherwise the folder is polled every ``poll`` seconds.
    """

    read_ahead = True

    def __init__(
        self,
        folder: str | Path,
        *,
        once: bool = False,
        poll: float = 0.5,
        settle: float = 1.0,
        decode_timeout: float = 10.0,
        end_marker: str = "END",
        idle_end: float | None = None,
    ):
        super().__init__()
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ValueError(f"folder:{folder}: not a folder (create it, or check the path)")
        if idle_end is not None and idle_end <= 0:
            raise ValueError(f"folder:{folder}: idle_end must be > 0 seconds, got {idle_end}")
        self.once, self.poll, self.settle, self.decode_timeout = once, poll, settle, decode_timeout
        self.endless = not once
        self.end_marker, self.idle_end = end_marker, idle_end
        self._root = os.fsencode(self.folder)
        self._handled: dict[bytes, Key] = {}  # yielded or skipped, as it was then
        self._seen: dict[bytes, Key] = {}  # last key seen at a scan
        self._pending: dict[bytes, tuple[Key, float]] = {}  # key, when first seen so
        self._incomplete: dict[bytes, _Incomplete] = {}
        self._reported: set[bytes] = set()
        self._last_new: dict[str | None, float] = {}  # slide -> when a new file last came
        self._markers: dict[str | None, Key] = {}  # end markers acted on

    def _report(self, path: bytes, problem: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            logger.warning("%s: %s", printable(path), problem)

    def _entries(self, folder: bytes) -> Iterator[tuple[str, bytes, os.stat_result]]:
        """(name, path, stat) of the visible entries of ``folder``; ``OSError`` only
        if the folder itself cannot be listed."""
        with os.scandir(folder) as entries:
            for entry in entries:
                name = os.fsdecode(entry.name)
                if name.startswith((".", "~")):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed since the listing, or a dangling link
                except OSError as exc:
                    self._report(entry.path, f"cannot read ({exc.strerror or exc}); skipped")
                    continue
                yield name, entry.path, st

    def _scan(self) -> tuple[list[tuple[int, bytes, str | None, Key]], dict]:
        """Image files as (mtime, path, slide, key), oldest first, and the end markers
        found as {slide: (path, key, mtime in s)}."""
        files, markers = [], {}

        def add(name: str, path: bytes, st: os.stat_result, slide: str | None) -> None:
            if not stat.S_ISREG(st.st_mode):
                return
            key = (st.st_size, st.st_mtime_ns)
            if name == self.end_marker:
                markers[slide] = (path, key, st.st_mtime)
            elif is_image_name(name):
                files.append((st.st_mtime_ns, path, slide, key))

        for name, path, st in self._entries(self._root):
            if not stat.S_ISDIR(st.st_mode):
                add(name, path, st, None)
                continue
            try:
                slide = validate_slide_id(name)
                inside = list(self._entries(path))
            except SlideError as exc:
                self._report(path, f"{exc}; its files are not read")
                continue
            except OSError as exc:
                self._report(path, f"cannot list folder ({exc.strerror or exc}); skipped")
                continue
            for sub_name, sub_path, sub_st in inside:
                add(sub_name, sub_path, sub_st, slide)
        return sorted(files), markers

    def _read(self, path: bytes, slide: str | None, key: Key, skipped: Counter) -> Frame | None:
        """The decoded frame of a settled file, or None when it changed while read,
        is already done (counted in ``skipped``) or is incomplete (kept waiting)."""
        frame = read_file(Path(os.fsdecode(path)), slide)
        try:
            after = os.stat(path)
        except OSError:
            return None
        if (after.st_size, after.st_mtime_ns) != key:
            return None
        del self._pending[path]
        why = self.already_done(frame) if frame.error is None and self.already_done else None
        if why:
            skipped[why] += 1
            self._handled[path] = key
            return None
        error = decode_frame(frame)
        if error is not None and not error.permanent:
            self._incomplete[path] = _Incomplete(key, time.monotonic(), frame)
            return None
        self._handled[path] = key
        self._incomplete.pop(path, None)
        return frame

    def _give_up(self, slide: str | None, waited: float = 0.0) -> Iterator[Frame]:
        """Error frames of ``slide``'s files that stayed incomplete for ``waited`` s."""
        now = time.monotonic()
        for path, inc in list(self._incomplete.items()):
            if inc.frame.slide == slide and now - inc.since >= waited:
                del self._incomplete[path]
                self._handled[path] = inc.key
                yield inc.frame

    def _generate(self) -> Iterator[Frame]:
        only: set[bytes] | None = None  # with once: the files present at the first scan
        listing_failed = False
        while not self.stopping:
            try:
                files, markers = self._scan()
                listing_failed = False
            except OSError as exc:
                if not listing_failed:
                    problem = f"cannot list folder ({exc.strerror or exc}); retrying"
                    yield Frame(
                        printable(self.folder), error=f"{printable(self.folder)}: {problem}"
                    )
                listing_failed = True
                files, markers = [], {}
            if self.once and only is None:
                only = {path for _, path, _, _ in files}
            now = time.monotonic()
            busy: set[str | None] = set()  # slides with files not settled yet
            skipped: Counter = Counter()
            for i, (_, path, slide, key) in enumerate(files):
                self.backlog = len(files) - i
                if only is not None and path not in only:
                    continue
                if self._seen.get(path) != key:
                    self._seen[path] = key
                    self._last_new[slide] = now
                if self._handled.get(path) == key:
                    continue
                inc = self._incomplete.get(path)
                if inc is not None and inc.key == key:
                    if now - inc.since < self.decode_timeout:
                        busy.add(slide)
                    elif not inc.warned:
                        inc.warned = True
                        logger.warning(
                            "%s: still incomplete after %g s; waiting for its writer (it is "
                            "logged as an error when its slide ends)",
                            inc.frame.source_id,
                            self.decode_timeout,
                        )
                    continue
                if self._pending.get(path, (None,))[0] != key:
                    self._pending[path] = (key, now)
                if now - self._pending[path][1] < self.settle:
                    busy.add(slide)
                    continue
                frame = self._read(path, slide, key, skipped)
                if frame is None:
                    if path in self._pending or path in self._incomplete:
                        busy.add(slide)
                    continue
                yield frame
                if self.stopping:
                    return
            for why, n in skipped.items():
                logger.warning("%s: skipped %d file(s): %s", printable(self.folder), n, why)
            present = {path for _, path, _, _ in files}
            self._pending = {p: v for p, v in self._pending.items() if p in present}
            self._incomplete = {p: v for p, v in self._incomplete.items() if p in present}
            yield from self._ends(markers, busy)
            if self.once and not busy:
                for slide in {inc.frame.slide for inc in self._incomplete.values()}:
                    yield from self._give_up(slide)
                return
            self.wait(self.poll)

    def _ends(self, markers: dict, busy: set[str | None]) -> Iterator[Frame]:
        """End frames for slides with a new end marker or idle for ``idle_end`` s,
        after their incomplete files (given ``decode_timeout`` s) as error frames."""
        for slide, (path, key, mtime) in markers.items():
            if slide in busy or self._markers.get(slide) == key:
                continue
            if any(i.frame.slide == slide for i in self._incomplete.values()):
                yield from self._give_up(slide, self.decode_timeout)
                if any(i.frame.slide == slide for i in self._incomplete.values()):
                    continue
            self._markers[slide] = key
            self._last_new.pop(slide, None)
            why = f"end marker {self.end_marker}"
            yield Frame(printable(path), slide=slide, ends_slide=why, time=mtime)
        if self.idle_end is None:
            return
        now = time.monotonic()
        for slide, last in list(self._last_new.items()):
            if slide not in busy and now - last >= self.idle_end:
                yield from self._give_up(slide)
                del self._last_new[slide]
                where = self.folder if slide is None else self.folder / slide
                why = f"no new file for {self.idle_end:g} s"
                yield Frame(printable(where), slide=slide, ends_slide=why)
