"""Capture triggers: on demand, auto-capture (sharp and still after the stage moved, once per
still period) and continuous, alone and inside the Pi camera source (faked picamera2)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from leukedge.edge.capture_trigger import AutoCapture, CaptureTrigger
from leukedge.edge.sources import open_source
from leukedge.edge.synth import synth_field

SIZE = (240, 320)  # (H, W) of a full-resolution frame


def _stage(seed: int = 0) -> np.ndarray:
    """A slide two views wide, so moving the stage shows new cells."""
    return np.hstack([synth_field(c, size=SIZE, seed=seed)[0] for c in ("Pro", "Early")])


def _view(stage: np.ndarray, x: int, blur: float, rng: np.random.Generator) -> np.ndarray:
    """The camera's view at stage position ``x``, defocused by ``blur`` px, with sensor noise."""
    v = stage[:, x : x + SIZE[1]].astype(np.float32)
    if blur:
        v = cv2.GaussianBlur(v, (0, 0), blur)
    return np.clip(v + rng.normal(0, 3, v.shape), 0, 255).astype(np.uint8)


def _session() -> list[tuple[str, np.ndarray]]:
    """(what, frame): blurred and still, focusing, sharp and still; the stage moves; the
    same at a new position. Two still sharp periods: two fields, both sharp."""
    rng, stage = np.random.default_rng(0), _stage()
    script = [("blurred", 0, 6.0)] * 8 + [("focusing", 0, 3.0), ("focusing", 0, 1.5)]
    script += [("sharp", 0, 0.0)] * 10
    w = SIZE[1]
    script += [("moving", x * w // 16, 2.0) for x in (3, 7, 11, 15)]
    script += [("blurred", w, 5.0)] * 4 + [("focusing", w, 2.0)]
    script += [("sharp", w, 0.0)] * 12
    return [(what, _view(stage, x, blur, rng)) for what, x, blur in script]


def test_auto_capture_takes_one_sharp_field_per_still_period():
    trigger = CaptureTrigger("auto")
    session = _session()
    taken = [i for i, (_, frame) in enumerate(session) if trigger.observe(frame)]
    assert [session[i][0] for i in taken] == ["sharp", "sharp"]
    assert taken[0] < 20 <= taken[1]  # one in each still period
    assert trigger.captures == 2 and not trigger.status()["armed"]
    assert trigger.latest.shape == (*SIZE, 3)  # the live view (already <= 640 px wide)


def test_auto_capture_waits_for_focus_to_settle():
    # a slow focus turn: the view is still but keeps getting sharper; no field until it stops
    stage, rng = _stage(1), np.random.default_rng(1)
    blurs = [6, 5, 4, 3.5, 3, 2.5, 2, 1.5, 1.2, 1, 0.8, 0.6, 0.4, 0.2] + [0] * 8
    trigger = CaptureTrigger("auto", AutoCapture(still_frames=3))
    taken = [b for b in blurs if trigger.observe(_view(stage, 0, b, rng))]
    assert taken == [0]


def test_demand_takes_the_next_frame_once_and_continuous_takes_all():
    frame = _view(_stage(), 0, 0.0, np.random.default_rng(2))
    trigger = CaptureTrigger("demand")
    assert not any(trigger.observe(frame) for _ in range(12))  # still and sharp: not auto
    trigger.request()
    assert [trigger.observe(frame) for _ in range(3)] == [True, False, False]
    everything = CaptureTrigger("continuous")
    assert all(everything.observe(frame) for _ in range(3))
    with pytest.raises(ValueError, match="capture mode"):
        CaptureTrigger("sometimes")
    with pytest.raises(ValueError, match="moved_change"):
        AutoCapture(still_change=5, moved_change=2)


class ScriptedCamera:
    """A picamera2 camera whose frames follow a script: the low-resolution YUV420 stream
    and the full-resolution RGB888 (B, G, R) main stream of the same frame."""

    def __init__(self, frames: list[np.ndarray], done: threading.Event):
        self.frames, self.done, self.i = frames, done, -1
        self.main_copies: list[int] = []
        self.lores = None

    def create_still_configuration(self, main, lores=None):
        return {"main": main, "lores": lores}

    def configure(self, config):
        assert config["main"]["format"] == "RGB888" and config["lores"]["format"] == "YUV420"
        self.lores = config["lores"]["size"]

    def start(self):
        pass

    def capture_metadata(self):
        return {"ExposureTime": 1000, "AnalogueGain": 1.0, "ColourGains": (1.5, 1.5)}

    def set_controls(self, controls):
        pass

    def capture_request(self):
        self.i += 1
        if self.i >= len(self.frames) - 1:
            self.done.set()
        return ScriptedRequest(self, self.frames[min(self.i, len(self.frames) - 1)])

    def stop(self):
        pass

    def close(self):
        pass


class ScriptedRequest:
    def __init__(self, cam: ScriptedCamera, rgb: np.ndarray):
        self.cam, self.rgb = cam, rgb

    def make_array(self, stream):
        if stream == "main":
            self.cam.main_copies.append(self.cam.i)
            return np.ascontiguousarray(self.rgb[..., ::-1])
        small = cv2.resize(self.rgb, self.cam.lores, interpolation=cv2.INTER_AREA)
        padded = np.pad(small, ((0, 0), (0, 64), (0, 0)))  # rows padded to a stride, as the ISP may
        return cv2.cvtColor(padded, cv2.COLOR_RGB2YUV_I420)

    def release(self):
        pass


def test_picamera2_auto_capture_takes_full_resolution_fields_from_the_low_res_stream():
    session = _session()
    done, cams = threading.Event(), []

    def factory(num):
        cams.append(ScriptedCamera([f for _, f in session], done))
        return cams[-1]

    source = open_source(
        "picamera2?capture=auto", size=SIZE[::-1], preview_width=320, settle=0,
        camera_factory=factory,
    )  # fmt: skip
    threading.Thread(target=lambda: done.wait(20) and source.stop(), daemon=True).start()
    with source:
        fields = list(source)
    (cam,) = cams
    assert [f.error for f in fields] == [None, None]
    assert len(cam.main_copies) == 2  # full resolution copied only for the fields
    for f, i in zip(fields, cam.main_copies):
        assert session[i][0] == "sharp"
        assert f.rgb.shape == (*SIZE, 3) and np.array_equal(f.rgb, session[i][1])
    assert source.trigger.latest.shape == (*SIZE, 3)  # the low-resolution stream


def test_picamera2_on_demand_takes_the_frame_after_the_request():
    session = _session()
    done, cams = threading.Event(), []

    def factory(num):
        cams.append(ScriptedCamera([f for _, f in session], done))
        return cams[-1]

    source = open_source("picamera2", size=SIZE[::-1], settle=0, camera_factory=factory)
    assert source.trigger.mode == "demand"  # the default: never every frame
    source.trigger.request()
    threading.Thread(target=lambda: done.wait(20) and source.stop(), daemon=True).start()
    with source:
        fields = list(source)
    assert len(fields) == 1 and cams[0].main_copies == [0]
