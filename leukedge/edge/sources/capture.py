"""OpenCV captures: a USB camera (retried with back-off) and video files."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from ..capture_trigger import AutoCapture, CaptureTrigger
from .base import CameraSource, Frame, Source, as_size


def _rgb(bgr) -> Any:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class UsbSource(CameraSource):
    """Fields from ``cv2.VideoCapture(camera)``, taken by ``trigger`` (a ``CaptureTrigger``
    fed every frame; ``trigger.latest`` is the live view): ``capture`` is its mode, "demand"
    (``trigger.request()``), "auto" (thresholds in ``auto``) or "continuous" (every frame).

    A camera that gives no frame is released and reopened after a back-off of
    ``backoff * 2**(k-1)`` seconds (at most ``max_backoff``) for the k-th
    failure in a row; each failure is an error frame, and after ``tries``
    failures in a row a final error frame ends the stream. ``size`` is
    (width, height) or None for the camera's default; ``count`` fields (None:
    until stopped), in continuous mode ``interval`` seconds apart. ``capture_factory`` replaces
    ``cv2.VideoCapture`` (tests).
    """

    def __init__(
        self,
        camera: int = 0,
        *,
        size: int | Sequence[int] | None = None,
        capture: str = "demand",
        auto: AutoCapture | None = None,
        count: int | None = None,
        interval: float = 0.0,
        tries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        capture_factory: Callable[[int], Any] | None = None,
    ):
        super().__init__(tries, backoff, max_backoff)
        self.camera, self.size, self.count, self.interval = camera, as_size(size), count, interval
        self.trigger = CaptureTrigger(capture, auto)
        self.capture_factory = capture_factory

    def _open(self) -> Any:
        cap = (self.capture_factory or cv2.VideoCapture)(self.camera)
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        return cap

    def _generate(self) -> Iterator[Frame]:
        name = f"usb:{self.camera}"
        cap, failures, n = None, 0, 0
        try:
            while not self.stopping and (self.count is None or n < self.count):
                if cap is None:
                    cap = self._open()
                ok, bgr = cap.read() if cap.isOpened() else (False, None)
                if ok and bgr is not None:
                    failures, rgb = 0, _rgb(bgr)
                    if self.trigger.observe(rgb):
                        yield Frame(f"{name}#{n}", rgb=rgb)
                        n += 1
                        if self.trigger.mode == "continuous":
                            self.wait(self.interval)
                    continue
                cap.release()
                cap = None
                failures += 1
                problem = "no frame from the camera"
                give_up = (
                    f"{name}: {problem} {failures} times in a row; "
                    "giving up (check the cable and that /dev/video* exists)"
                )
                if (yield from self._failure(name, n, problem, failures, give_up)):
                    return
        finally:
            if cap is not None:
                cap.release()


class VideoSource(Source):
    """Every ``step``-th frame of a video file (``source_id`` ``video:PATH#i``, i the
    frame's index in the file). ``capture_factory`` replaces ``cv2.VideoCapture``."""

    def __init__(
        self,
        path: str | Path,
        *,
        step: int = 1,
        capture_factory: Callable[[str], Any] | None = None,
    ):
        super().__init__()
        if step < 1:
            raise ValueError(f"video:{path}: step must be >= 1, got {step}")
        self.path, self.step = Path(path).expanduser(), step
        self.capture_factory = capture_factory

    def _generate(self) -> Iterator[Frame]:
        name = f"video:{self.path}"
        cap = (self.capture_factory or cv2.VideoCapture)(str(self.path))
        try:
            if not cap.isOpened():
                yield Frame(f"{name}#0", error=f"{self.path}: cannot open video file")
                return
            i = 0
            while not self.stopping and cap.grab():
                if i % self.step == 0:
                    ok, bgr = cap.retrieve()
                    if ok:
                        yield Frame(f"{name}#{i}", rgb=_rgb(bgr))
                    else:
                        yield Frame(f"{name}#{i}", error=f"{self.path}: frame {i} undecodable")
                i += 1
        finally:
            cap.release()
