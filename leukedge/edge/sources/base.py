"""The frame type and the interface every source implements."""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass
class Frame:
    """One smear field from a source.

    source_id : where it came from: a file path (printable: bytes that are not
        UTF-8 appear as ``\\xNN``), ``picamera2:0#123``, ``usb:0#17``,
        ``video:PATH#42`` or ``synthetic:Pro#3`` (``#n``: frame number in the stream).
    rgb : uint8 (H, W, 3) RGB pixels; None when ``error`` is set.
    data : the encoded bytes of a field read from a file, else None.
    error : what is wrong with this frame (names the source and the problem), else None.
    time : wall-clock time (``time.time()``) at which the source acquired the frame.
    path : the file a field was read from (the exact name on disk), else None.
    slide : the slide a source files this frame under (a hot folder's per-slide
        subfolder), else None: the consumer's current slide.
    ends_slide : set on a frame that carries no field but ends ``slide`` (a hot
        folder's end marker or idle time): why it ends, e.g. "end marker END".
    """

    source_id: str
    rgb: np.ndarray | None = None
    data: bytes | None = None
    error: str | None = None
    time: float = field(default_factory=time.time)
    path: Path | None = None
    slide: str | None = None
    ends_slide: str | None = None

    @cached_property
    def sha256(self) -> str | None:
        """Hex SHA-256 of ``data`` (same as ``sha256sum`` of the file), else of the
        raw ``rgb`` bytes, else None."""
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        if self.rgb is not None:
            return hashlib.sha256(np.ascontiguousarray(self.rgb)).hexdigest()
        return None


class Source(ABC):
    """An iterator (and context manager) of ``Frame`` objects.

    Iteration never raises for a bad file or a lost camera: the problem arrives
    as a ``Frame`` with ``error`` set and iteration goes on (or ends, when the
    source cannot go on). ``stop()`` is safe from another thread or a signal
    handler: iteration ends before the next frame. ``close()`` releases the
    device; call it from the iterating thread (``with`` does).

    ``already_done``, set by the consumer before iterating, lets sources that
    read files (the hot folder) skip a field before decoding it: it gets the
    frame read but not decoded (``data``, ``path``, ``slide``) and returns why
    the field needs no processing (e.g. "already logged in slide S-0042"), or None.

    ``read_ahead`` is True for sources whose frames may be taken before the
    consumer is ready for them (files; not a camera, which takes a field when
    asked). Such a consumer may iterate on a thread of its own (and then closes
    the source only once that thread is done) and sets ``idle``, called when
    the source has nothing more to give for now (before it ``wait``s).

    ``endless`` is True for a source that gives fields until stopped (a watched
    folder), so a consumer's investment in a long run (``station``'s worker
    processes) pays off; ``backlog`` is how many files it has found and not yet
    given (at most: some may be skipped), where it knows, else None.
    """

    read_ahead = False
    endless = False

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.failed = False  # set when a camera source gives up
        self._iter: Iterator[Frame] | None = None
        self.already_done: Callable[[Frame], str | None] | None = None
        self.idle: Callable[[], None] | None = None
        self.backlog: int | None = None

    @abstractmethod
    def _generate(self) -> Iterator[Frame]:
        """Yield frames until exhausted or ``stopping``; release devices in ``finally``."""

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> Frame:
        if self._iter is None:
            self._iter = self._generate()
        return next(self._iter)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask iteration to end (thread- and signal-safe)."""
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on ``stop()``; True when stopping.
        Calls ``idle`` first."""
        if self.idle is not None:
            self.idle()
        return self._stop.wait(seconds) if seconds > 0 else self.stopping

    def close(self) -> None:
        """Stop and release the device (runs the generator's ``finally``)."""
        self.stop()
        if self._iter is not None:
            self._iter.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CameraSource(Source):
    """A camera that is reopened after a failure, waiting ``backoff`` seconds doubled
    with each failure in a row (at most ``max_backoff``), and given up after ``tries``
    failures in a row: a final error frame ends the stream and sets ``failed``."""

    def __init__(self, tries: int, backoff: float, max_backoff: float) -> None:
        super().__init__()
        self.tries, self.backoff, self.max_backoff = tries, backoff, max_backoff

    def _failure(
        self, name: str, n: int, problem: str, failures: int, give_up: str
    ) -> Generator[Frame, None, bool]:
        """Error frame ``name#n`` for the ``failures``-th failure in a row, then the
        back-off wait; at ``tries``, the ``give_up`` error instead. True: stop."""
        if failures >= self.tries:
            self.failed = True
            yield Frame(f"{name}#{n}", error=give_up)
            return True
        delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
        yield Frame(
            f"{name}#{n}",
            error=f"{name}: {problem} (failure {failures}/{self.tries}); retrying in {delay:g} s",
        )
        self.wait(delay)
        return False


def as_size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """A (width, height) pair from an int (square), a pair or None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    width, height = (int(v) for v in value)
    return width, height
