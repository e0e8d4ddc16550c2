"""a* by table lookup is OpenCV's 8-bit LAB a*, for every colour, before and after the
table is made."""

import time

import cv2
import numpy as np

from leukedge.edge import lab


def _ready_table(timeout: float = 60.0) -> np.ndarray:
    lab.a_star(np.zeros((2, 2, 3), np.uint8))  # starts making it
    deadline = time.monotonic() + timeout
    while lab._TABLE is None:
        assert time.monotonic() < deadline, "the a* table was not made within a minute"
        time.sleep(0.01)
    return lab._TABLE


def test_a_star_is_opencvs_a_for_every_colour():
    _ready_table()
    every = np.arange(1 << 24, dtype="<u4").view(np.uint8).reshape(4096, 4096, 4)[..., :3]
    every = np.ascontiguousarray(every)
    got = lab.a_star(every)
    assert got.dtype == np.uint8 and got.shape == (4096, 4096)
    assert np.array_equal(got, cv2.cvtColor(every, cv2.COLOR_RGB2LAB)[..., 1])


def test_a_star_of_a_field_with_and_without_the_table(monkeypatch):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes: no row padding
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1]
    _ready_table()
    assert np.array_equal(lab.a_star(rgb), want)
    monkeypatch.setattr(lab, "_TABLE", None)  # still being made: converted as before
    assert np.array_equal(lab.a_star(rgb), want)
