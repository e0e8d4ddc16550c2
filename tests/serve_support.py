"""Helpers for the web page's tests: an app on a model and a source, a real server in a
thread, and a camera that is gone."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette", reason="no station extra here (pip install .[station])")

from leukedge.edge.classes import CLASSES  # noqa: E402
from leukedge.edge.model import Model  # noqa: E402
from leukedge.edge.results_log import ResultsLog  # noqa: E402
from leukedge.edge.sources import Frame, Source, SyntheticSource  # noqa: E402
from leukedge.edge.station import Station  # noqa: E402
from leukedge.edge.synth import synth_field  # noqa: E402
from leukedge.station.app import create_app  # noqa: E402
from leukedge.station.camera import LiveCamera  # noqa: E402
from leukedge.station.server import bind, make_server  # noqa: E402


class GoneCamera(Source):
    """A camera that is not there: one error frame, as ``Picamera2Source`` gives, then the
    end; ``back`` (a ``threading.Event``) makes the next opening a synthetic camera."""

    MESSAGE = "picamera2:0: camera not found or busy (no camera attached)"

    def __init__(self) -> None:
        super().__init__()
        self.failed = True

    def _generate(self) -> Iterator[Frame]:
        yield Frame("picamera2:0#0", error=self.MESSAGE)


class StillCamera(Source):
    """A stage held still on one sharp synthetic field: the same frame, again and again."""

    def __init__(self, size=(64, 64)) -> None:
        super().__init__()
        self.rgb = synth_field("Pro", size=size[::-1], seed=7)[0]

    def _generate(self) -> Iterator[Frame]:
        n = 0
        while not self.stopping:
            yield Frame(f"still:0#{n}", rgb=self.rgb)
            n += 1


class FakeMicroscope:
    """A Pi camera on a microscope, with picamera2's calls (``camera_factory``): frame n
    of the main stream (RGB888: B, G, R) is synthetic field n, the low-resolution stream
    (YUV420) the same frame scaled down, as the ISP gives it."""

    def __init__(self, camera_num: int = 0):
        self.n = 0

    def create_still_configuration(self, main, lores=None):
        return {"main": main, "lores": lores}

    def configure(self, config):
        self.main, self.lores = config["main"]["size"], config["lores"]["size"]

    def start(self):
        pass

    def capture_metadata(self):
        return {"ExposureTime": 12000, "AnalogueGain": 1.25, "ColourGains": (1.8, 1.5)}

    def set_controls(self, controls):
        pass

    def capture_request(self):
        self.n += 1
        rgb = synth_field(CLASSES[self.n % 4], size=self.main[::-1], seed=self.n)[0]
        return _Request(rgb, self.lores)

    def stop(self):
        pass

    def close(self):
        pass


class _Request:
    def __init__(self, rgb: np.ndarray, lores: tuple[int, int]):
        self.rgb, self.lores = rgb, lores

    def make_array(self, stream: str) -> np.ndarray:
        if stream == "main":
            return np.ascontiguousarray(self.rgb[..., ::-1])
        small = cv2.resize(self.rgb, self.lores, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2YUV_I420)

    def release(self) -> None:
        pass


def gone_until(back: threading.Event, size=(64, 64)) -> Callable[[], Source]:
    """A source opener: a ``GoneCamera`` until ``back`` is set, then synthetic fields."""

    def opener() -> Source:
        return SyntheticSource(n=None, size=size) if back.is_set() else GoneCamera()

    return opener


def make_app(
    model: Model,
    results: Path,
    *,
    opener: Callable[[], Source] | None = None,
    token: str | None = None,
    size=(64, 64),
    fps: float = 20.0,
    name: str = "synthetic",
    reopen_after: float = 0.05,
):
    """(app, station, camera): ``model`` on synthetic fields (or ``opener``, shown as
    ``name``), results and frames under ``results``."""
    station = Station(model, ResultsLog(results), frames_dir=results / "frames")
    opener = opener or (lambda: SyntheticSource(n=None, size=size))
    camera = LiveCamera(opener, name, fps=fps, reopen_after=reopen_after)
    return create_app(station, camera, token=token), station, camera


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its URL."""
    sock = bind("127.0.0.1", 0, None)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.handle_exit(signal.SIGTERM, None)
        thread.join(15)
        sock.close()


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    """Poll ``condition`` until it is true (returned) or ``timeout`` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
