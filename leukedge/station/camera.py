"""The camera as the web page sees it: a thread reads a source and a ``CaptureTrigger``
decides which frames become fields; the live view is drawn when someone watches.

Every frame goes to the trigger (``edge.capture_trigger``): on demand (the page's capture
button calls ``capture``) or automatically (a sharp, still view after the stage moved).
A source with a ``trigger`` of its own (the Pi camera watches its low-resolution stream
and takes full resolution only for a field) yields fields only; its trigger is used.
The live view is the trigger's latest low-resolution frame with the blast mask outline,
the focus indicator and the last result drawn on it. A camera that fails (unplugged,
busy) is reported in ``status`` and opened again after a pause: the server keeps running,
and a capture meanwhile raises ``CameraError`` naming the problem.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..edge.capture_trigger import CaptureTrigger
from ..edge.segment import draw_outline, segment
from ..edge.sources.base import Frame, Source
from ..errors import LeukedgeError
from .images import encode_jpeg

logger = logging.getLogger(__name__)

#: Width of the live view in pixels.
VIEW_WIDTH = 480
#: Most frames a second read from a source (a camera may give fewer).
READ_FPS = 8.0
#: A capture waits this long for the trigger to take a frame.
CAPTURE_WAIT = 5.0
#: Seconds before a failed or ended source is opened again.
REOPEN_AFTER = 5.0
#: The camera's state before its first frame (a capture then waits for one).
STARTING = "starting"


class CameraError(LeukedgeError, RuntimeError):
    """No frame to capture: the camera is gone, busy or not started; says what to check."""


@dataclass(frozen=True)
class CameraStatus:
    """What the page shows about the camera: ``ok``, the ``source`` URI, ``frames`` read
    since start (fields, for a camera with its own trigger), the trigger's state
    (``CaptureTrigger.status``: mode, focus, sharp, still, captures) and ``error``: the
    camera's last problem while it gives no frame."""

    ok: bool
    source: str
    frames: int
    trigger: dict
    error: str | None

    def to_json(self) -> dict:
        return asdict(self)


def live_view(
    rgb: np.ndarray, trigger: CaptureTrigger, caption: str | None, width: int = VIEW_WIDTH
) -> np.ndarray:
    """The live view of an RGB uint8 (H, W, 3) frame: scaled to ``width`` px, with the blast
    mask outline, a focus bar (the trigger's focus; full at 4x its ``min_focus``, green when
    sharp) and ``caption`` (the last result) drawn on it; RGB uint8 (h, width, 3)."""
    focus, sharp = trigger.focus, trigger.sharp
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    out = draw_outline(small, segment(small, mode="robust").mask)
    full = width // 3
    bar = int(min(1.0, focus / (4 * trigger.auto.min_focus)) * full)
    cv2.rectangle(out, (6, 6), (6 + full, 18), (255, 255, 255), -1)
    cv2.rectangle(out, (6, 6), (6 + bar, 18), (40, 170, 40) if sharp else (230, 140, 0), -1)
    _text(out, f"focus {focus:.0f}" + ("" if sharp else " - not sharp"), (12 + full, 17))
    if caption:
        _text(out, caption, (6, out.shape[0] - 8))
    return out


def _text(img: np.ndarray, text: str, at: tuple[int, int]) -> None:
    """``text`` (shown as ASCII) at ``at`` (its baseline's left end), dark on a white box,
    readable on any smear."""
    text = text.encode("ascii", "replace").decode()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    x, y = at
    cv2.rectangle(img, (x - 3, y - h - 3), (x + w + 3, y + base + 1), (255, 255, 255), -1)
    cv2.putText(img, text, (x, y), font, scale, (20, 20, 20), 1, cv2.LINE_AA)


class LiveCamera:
    """Read frames from ``open_source()`` in a thread until ``stop()``.

    open_source : makes a new ``Source`` (called again after the source fails or ends).
    name : the source as the page shows it (its URI).
    trigger : decides which frames become fields (default: on demand only).
    on_auto : called from the thread with each field the trigger took by itself
        (auto-capture), not for fields taken for ``capture``.
    """

    def __init__(
        self,
        open_source: Callable[[], Source],
        name: str,
        *,
        trigger: CaptureTrigger | None = None,
        on_auto: Callable[[Frame], None] | None = None,
        fps: float = READ_FPS,
        reopen_after: float = REOPEN_AFTER,
    ):
        self.open_source, self.name = open_source, name
        self.trigger = trigger or CaptureTrigger("demand")
        self.on_auto = on_auto
        self.period, self.reopen_after = 1.0 / fps, reopen_after
        self.caption: str | None = None  # the last result, drawn on the live view
        self._cond = threading.Condition()
        self._frames = 0
        self._waiting = 0  # captures waiting for a field
        self._field: Frame | None = None  # the last field taken for a capture
        self._fields = 0
        self._error: str | None = STARTING
        self._logged: str | None = None  # the problem last logged
        self._adopted = False  # whether a source's own trigger is in use
        self._view_lock = threading.Lock()
        self._view: tuple[object, str | None, bytes] | None = None  # (frame, caption, JPEG)
        self._stop = threading.Event()
        self._source: Source | None = None
        self._thread = threading.Thread(target=self._loop, name="leukedge-camera", daemon=True)

    def start(self) -> LiveCamera:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and release the camera (waits up to ``timeout`` s for the thread)."""
        self._stop.set()
        source = self._source
        if source is not None:
            source.stop()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def status(self) -> CameraStatus:
        with self._cond:
            return CameraStatus(self._error is None, self.name, self._frames,
                                self.trigger.status(), self._error)  # fmt: skip

    def view_jpeg(self) -> bytes | None:
        """The live view as JPEG (None before the first frame); drawn again only when the
        frame or the caption changed, so it costs nothing while nobody watches."""
        latest, caption = self.trigger.latest, self.caption
        if latest is None:
            return None
        with self._view_lock:
            if self._view is None or self._view[0] is not latest or self._view[1] != caption:
                jpeg = encode_jpeg(live_view(latest, self.trigger, caption))
                self._view = (latest, caption, jpeg)
            return self._view[2]

    def capture(self, timeout: float = CAPTURE_WAIT) -> Frame:
        """The next frame the trigger takes, at full resolution (waits up to ``timeout`` s);
        ``CameraError`` naming the camera's problem when none comes."""
        with self._cond:
            if self._error not in (None, STARTING):
                raise CameraError(f"camera {self.name}: {self._error}")
            self._waiting += 1
            seen = self._fields
            self.trigger.request()
            try:
                done = self._cond.wait_for(
                    lambda: (
                        self._fields > seen or self._error not in (None, STARTING) or self.stopped
                    ),
                    timeout,
                )
            finally:
                self._waiting -= 1
            if self._fields > seen:
                return self._field
            problem = self._error or ("stopped" if done else f"no frame in {timeout:g} s")
            raise CameraError(f"camera {self.name}: {problem}")

    # -- the thread --------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopped:
            try:
                self._source = self.open_source()
                with self._source as source:
                    ended = self._read(source) or "the source ended"
            except Exception as exc:  # a broken driver must not end the thread
                ended = f"camera failed ({exc})"
            finally:
                self._source = None
            if self.stopped:
                return
            self._set_error(ended, f"; trying again in {self.reopen_after:g} s")
            self._stop.wait(self.reopen_after)

    def _read(self, source: Source) -> str | None:
        """Read ``source`` to its end; the last problem it reported since its last frame."""
        own = getattr(source, "trigger", None)
        owns_trigger = isinstance(own, CaptureTrigger)
        if owns_trigger:  # its mode at first (the config's), then the page's on a reopening
            own.mode = self.trigger.mode if self._adopted else own.mode
            self.trigger, self._adopted = own, True
            with self._cond:  # it yields fields only: open means ready (or an error frame)
                self._error = None
        problem = None
        for frame in source:
            if self.stopped:
                return None
            started = time.monotonic()
            if frame.error is not None or frame.rgb is None:
                problem = frame.error or "a frame without an image"
                self._set_error(problem)
                continue
            problem = self._logged = None
            taken = owns_trigger or self.trigger.observe(frame.rgb)
            with self._cond:
                self._frames += 1
                self._error = None
                if taken and self._waiting:
                    self._field, self._fields = frame, self._fields + 1
                    taken = False
                self._cond.notify_all()
            if taken and self.on_auto is not None:
                self.on_auto(frame)
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))
        return problem

    def _set_error(self, problem: str, retry: str = "") -> None:
        """Show ``problem`` (and the ``retry`` note) until the next frame; logged once."""
        if problem != self._logged:
            logger.warning("camera %s: %s%s", self.name, problem, retry)
            self._logged = problem
        with self._cond:
            self._error = problem + retry
            self._cond.notify_all()
