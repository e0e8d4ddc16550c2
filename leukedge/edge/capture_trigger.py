"""When a camera takes a field: on demand, automatically, or every frame.

A technician should only have to move the stage and focus. ``CaptureTrigger`` watches the
camera's live (low-resolution) frames and decides, frame by frame, when the current frame
becomes a field:

- ``demand``: when ``request()`` was called (the web page's button, a terminal key);
- ``auto``: when the view is sharp and has been still for a moment after the stage moved,
  once per still period; ``request()`` still works;
- ``continuous``: every frame (the old behaviour; for video-like tests and benchmarks).

Auto-capture rule (``AutoCapture`` holds the figures). Each live frame is reduced to a
grey copy at most ``ANALYSIS_WIDTH`` px wide; its *focus* is the variance of its Laplacian of
Gaussian (sigma ``FOCUS_SIGMA``; the Laplacian family of Pertuz et al. 2013 is high when
fine detail is in focus, and the Gaussian keeps sensor noise from passing for detail) and
its *change* the mean absolute grey difference from the previous frame. A frame is *still*
when its change is below ``still_change`` and its focus moved by less than
``focus_tolerance`` (relative): turning the focus knob is not stillness. After
``still_frames`` still frames in a row, the frame is taken when it is *sharp*: focus at
least ``min_focus`` and at least ``near_best`` of the best focus seen since the stage last
moved (so a field is not taken half-way through focusing). Then the trigger waits until
the view has changed from the taken frame by more than ``moved_change`` (the stage moved
to a new field): one capture per still period, however long the technician pauses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

CAPTURE_MODES = ("demand", "auto", "continuous")
#: Width (px) of the grey copy the focus and change are measured on, whatever the stream.
ANALYSIS_WIDTH = 320
#: Widest live-view frame kept for display (``CaptureTrigger.latest``).
PREVIEW_WIDTH = 640
#: Gaussian (px of the analysis copy) before the focus measure's Laplacian.
FOCUS_SIGMA = 1.0


@dataclass(frozen=True)
class AutoCapture:
    """Thresholds of the auto-capture rule (see the module doc); grey levels are 0-255.

    ``min_focus`` depends on the optics, the stain and how many cells a view holds: sharp
    smear fields (Taleqani, synthetic) seen as a 640 px live view score 60-200, the same
    blurred by a Gaussian of 5 px 6-24; noise of 6 grey levels adds under 5.
    """

    min_focus: float = 25.0
    near_best: float = 0.9
    focus_tolerance: float = 0.05
    still_change: float = 1.5
    still_frames: int = 5
    moved_change: float = 6.0

    def __post_init__(self):
        if self.still_frames < 1:
            raise ValueError(f"still_frames must be >= 1, got {self.still_frames}")
        if not 0 < self.near_best <= 1:
            raise ValueError(f"near_best must be in (0, 1], got {self.near_best}")
        if self.moved_change <= self.still_change:
            raise ValueError(
                f"moved_change ({self.moved_change}) must exceed still_change "
                f"({self.still_change}), or noise would count as a stage move"
            )


def analysis_grey(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) frame -> float32 grey copy ``ANALYSIS_WIDTH`` px wide, area-averaged
    (a narrower frame keeps its size: upsampling would only blur it)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if w > ANALYSIS_WIDTH:
        size = (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


def focus_measure(grey: np.ndarray) -> float:
    """Variance of the Laplacian of Gaussian of a float32 (h, w) grey image: higher is
    sharper (see the module doc)."""
    smooth = cv2.GaussianBlur(grey, (0, 0), FOCUS_SIGMA)
    return float(cv2.Laplacian(smooth, cv2.CV_32F, ksize=3).var())


def frame_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (grey levels) of two float32 (h, w) grey images, each
    lightly blurred first so sensor noise does not count as change."""
    blur = (5, 5)
    return float(cv2.absdiff(cv2.GaussianBlur(a, blur, 0), cv2.GaussianBlur(b, blur, 0)).mean())


def preview(rgb: np.ndarray, width: int = PREVIEW_WIDTH) -> np.ndarray:
    """A frame for the live view: RGB uint8, at most ``width`` px wide (area-averaged)."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


class CaptureTrigger:
    """Decides which live frames become fields (see the module doc).

    ``observe(frame)`` is called by the camera source for every live frame, from the
    thread that iterates the source; ``request()`` may be called from any thread (a web
    request, a key handler). ``latest`` (RGB uint8, at most ``PREVIEW_WIDTH`` wide) and
    ``status()`` feed a live view.
    """

    def __init__(self, mode: str = "demand", auto: AutoCapture | None = None):
        if mode not in CAPTURE_MODES:
            raise ValueError(f"unknown capture mode {mode!r}; choose one of {CAPTURE_MODES}")
        self.mode = mode
        self.auto = auto or AutoCapture()
        self._requested = threading.Event()
        self.latest: np.ndarray | None = None
        self.focus = 0.0
        self.change: float | None = None
        self.still = 0  # still frames in a row
        self.captures = 0
        self._prev: np.ndarray | None = None
        self._best = 0.0  # best focus since the stage last moved
        self._taken: np.ndarray | None = None  # grey copy of the last auto-captured frame

    def request(self) -> None:
        """Take the next live frame as a field (thread-safe)."""
        self._requested.set()

    @property
    def sharp(self) -> bool:
        """Whether the last frame was sharp by the auto-capture rule."""
        a = self.auto
        return self.focus >= a.min_focus and self.focus >= a.near_best * self._best

    @property
    def armed(self) -> bool:
        """Whether auto-capture will take the next sharp still frame (the stage moved since
        the last one)."""
        if self._taken is None or self._prev is None:
            return True
        return frame_change(self._prev, self._taken) > self.auto.moved_change

    def _update(self, grey: np.ndarray) -> None:
        focus = focus_measure(grey)
        a = self.auto
        if self._prev is None:
            self.change, self.still = None, 0
        else:
            self.change = frame_change(grey, self._prev)
            steady = abs(focus - self.focus) <= a.focus_tolerance * max(self.focus, 1e-6)
            self.still = self.still + 1 if self.change < a.still_change and steady else 0
            if self.change > a.moved_change:
                self._best = 0.0
        self.focus, self._prev = focus, grey
        self._best = max(self._best, focus)

    def observe(self, frame: np.ndarray) -> bool:
        """Feed one live RGB uint8 (H, W, 3) frame; True: take this frame as a field."""
        self.latest = preview(frame)
        self._update(analysis_grey(self.latest))
        take = self._requested.is_set() or self.mode == "continuous"
        if not take and self.mode == "auto":
            take = self.still >= self.auto.still_frames and self.sharp and self.armed
        if take:
            self._taken = self._prev  # auto-capture waits for the stage to leave this view
            self._requested.clear()
            self.captures += 1
        return take

    def status(self) -> dict:
        """JSON-ready state for a live view: mode, focus, sharp, still, armed, captures."""
        return {
            "mode": self.mode,
            "focus": round(self.focus, 1),
            "sharp": self.sharp,
            "still": self.still >= self.auto.still_frames,
            "armed": self.armed,
            "captures": self.captures,
        }
