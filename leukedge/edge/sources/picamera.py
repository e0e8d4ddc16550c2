"""The Raspberry Pi camera through picamera2, exposure and white balance locked."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .base import Frame, Source, as_size


def _picamera2_class() -> Callable[[int], Any]:
    from picamera2 import Picamera2  # lazy: only on a Pi, from the system packages

    return Picamera2


class Picamera2Source(Source):
    """Frames of the RGB888 main stream of camera ``camera``.

    ``size`` is (width, height). After ``settle`` seconds of automatic exposure
    and white balance, the measured ExposureTime, AnalogueGain and ColourGains
    are fixed (AeEnable and AwbEnable off; kept in ``locked_controls``) so all
    fields of a slide are comparable. ``count`` frames (None: until stopped),
    ``interval`` seconds apart. ``camera_factory`` replaces ``Picamera2`` (tests).
    """

    def __init__(
        self,
        camera: int = 0,
        *,
        size: int | Sequence[int] = (2028, 1520),
        settle: float = 1.0,
        count: int | None = None,
        interval: float = 0.0,
        camera_factory: Callable[[int], Any] | None = None,
    ):
        super().__init__()
        self.camera, self.size, self.settle = camera, as_size(size), settle
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

    def _generate(self) -> Iterator[Frame]:
        name = f"picamera2:{self.camera}"
        try:
            cam = (self.camera_factory or _picamera2_class())(self.camera)
        except ImportError as exc:
            self.failed = True
            yield Frame(
                f"{name}#0",
                error=f"{name}: picamera2 is not importable ({exc}); install python3-picamera2 "
                "with apt and use a venv made with --system-site-packages",
            )
            return
        except Exception as exc:  # picamera2 raises IndexError/RuntimeError for no camera
            self.failed = True
            yield Frame(f"{name}#0", error=f"{name}: camera not found or busy ({exc})")
            return
        n = 0
        try:
            cam.configure(
                cam.create_still_configuration(main={"size": self.size, "format": "RGB888"})
            )
            cam.start()
            if self.wait(self.settle):
                return
            self._lock(cam)
            while not self.stopping and (self.count is None or n < self.count):
                pixels = cam.capture_array()  # "RGB888" is B, G, R in memory
                yield Frame(f"{name}#{n}", rgb=np.ascontiguousarray(pixels[..., 2::-1]))
                n += 1
                self.wait(self.interval)
        except Exception as exc:
            self.failed = True
            yield Frame(f"{name}#{n}", error=f"{name}: camera failed ({exc})")
        finally:
            try:
                cam.stop()
            finally:
                cam.close()
