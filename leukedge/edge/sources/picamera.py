"""The Raspberry Pi camera through picamera2, exposure and white balance locked.

The camera runs two streams of the same frames: a full-resolution RGB main stream and a
low-resolution YUV420 one (the ISP scales it for free). Every frame's low-resolution copy
goes to the source's ``CaptureTrigger``, which keeps it for the live view and decides
whether the frame is a field; only then is the full-resolution frame copied out, from the
same request, so the field is exactly the frame the trigger judged sharp and still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from ..capture_trigger import PREVIEW_WIDTH, AutoCapture, CaptureTrigger
from .base import CameraSource, Frame, as_size


def _picamera2_class() -> Callable[[int], Any]:
    from picamera2 import Picamera2  # lazy: only on a Pi, from the system packages

    return Picamera2


def lores_size(size: tuple[int, int], width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """(width, height) of the low-resolution stream for a main stream of ``size``: at most
    ``width`` wide, the same aspect, even sides (YUV420 halves the colour planes)."""
    w = max(2, min(width, size[0]) // 2 * 2)
    return w, max(2, round(w * size[1] / size[0] / 2) * 2)


def yuv420_rgb(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (h, w, 3) of a picamera2 YUV420 array, uint8 (h * 3 / 2, stride), where
    ``size`` is (w, h) and rows may be padded to ``stride``."""
    return np.ascontiguousarray(cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420)[:, : size[0]])


class Picamera2Source(CameraSource):
    """Fields from camera ``camera``, taken by ``trigger`` (a ``CaptureTrigger``).

    ``capture`` is the trigger's mode: "demand" (``trigger.request()``, e.g. the web page's
    button), "auto" (a sharp, still view after the stage moved; thresholds in ``auto``) or
    "continuous" (every frame). ``trigger.latest`` is the live view, ``preview_width`` px
    wide at most. ``size`` is the fields' (width, height). After ``settle`` seconds of
    automatic exposure and white balance, the measured ExposureTime, AnalogueGain and
    ColourGains are fixed (AeEnable and AwbEnable off; kept in ``locked_controls``) so all
    fields of a slide are comparable. ``count`` fields (None: until stopped), in continuous
    mode ``interval`` seconds apart. A camera that is missing or fails is closed and
    reopened after a back-off (as for ``UsbSource``; each failure is an error
    frame) and keeps the locked settings; after ``tries`` failures in a row a
    final error frame ends the stream and sets ``failed``. ``camera_factory``
    replaces ``Picamera2`` (tests).
    """

    def __init__(
        self,
        camera: int = 0,
        *,
        size: int | Sequence[int] = (2028, 1520),
        capture: str = "demand",
        auto: AutoCapture | None = None,
        preview_width: int = PREVIEW_WIDTH,
        settle: float = 1.0,
        count: int | None = None,
        interval: float = 0.0,
        tries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        camera_factory: Callable[[int], Any] | None = None,
    ):
        super().__init__(tries, backoff, max_backoff)
        self.camera, self.size, self.settle = camera, as_size(size), settle
        self.trigger = CaptureTrigger(capture, auto)
        self.lores = lores_size(self.size, preview_width)
        self.count, self.interval = count, interval
        self.camera_factory = camera_factory
        self.locked_controls: dict[str, Any] | None = None

    def _lock(self, cam: Any) -> None:
        meta = cam.capture_metadata()
        self.locked_controls = {
            "AeEnable": False,
            "AwbEnable": False,
            "ExposureTime": meta["ExposureTime"],
            "AnalogueGain": meta["AnalogueGain"],
            "ColourGains": meta["ColourGains"],
        }
        cam.set_controls(self.locked_controls)

    def _capture(self, cam: Any, name: str, n: int) -> Iterator[Frame]:
        """Configure and start ``cam``, lock exposure (once per source), yield fields from ``n``."""
        main = {"size": self.size, "format": "RGB888"}
        lores = {"size": self.lores, "format": "YUV420"}
        cam.configure(cam.create_still_configuration(main=main, lores=lores))
        cam.start()
        if self.locked_controls is None:
            if self.wait(self.settle):
                return
            self._lock(cam)
        else:  # a reopened camera keeps the slide's exposure and white balance
            cam.set_controls(self.locked_controls)
        while not self.stopping and (self.count is None or n < self.count):
            request = cam.capture_request()
            try:
                taken = self.trigger.observe(yuv420_rgb(request.make_array("lores"), self.lores))
                pixels = request.make_array("main") if taken else None  # B, G, R in memory
            finally:
                request.release()
            if pixels is not None:
                yield Frame(f"{name}#{n}", rgb=np.ascontiguousarray(pixels[..., 2::-1]))
                n += 1
                if self.trigger.mode == "continuous":
                    self.wait(self.interval)

    def _generate(self) -> Iterator[Frame]:
        name = f"picamera2:{self.camera}"
        failures, n = 0, 0
        while not self.stopping and (self.count is None or n < self.count):
            try:
                cam = (self.camera_factory or _picamera2_class())(self.camera)
            except ImportError as exc:
                self.failed = True
                yield Frame(
                    f"{name}#{n}",
                    error=f"{name}: picamera2 is not importable ({exc}); install "
                    "python3-picamera2 with apt and use a venv made with --system-site-packages",
                )
                return
            except Exception as exc:  # picamera2 raises IndexError/RuntimeError for no camera
                problem = f"camera not found or busy ({exc})"
            else:
                problem = None
                try:
                    for frame in self._capture(cam, name, n):
                        failures, n = 0, n + 1
                        yield frame
                except Exception as exc:
                    problem = f"camera failed ({exc})"
                finally:
                    try:
                        cam.stop()
                    finally:
                        cam.close()
            if problem is None:
                return
            failures += 1
            give_up = f"{name}: {problem}; giving up after {failures} tries"
            if (yield from self._failure(name, n, problem, failures, give_up)):
                return
