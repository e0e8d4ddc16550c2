"""a* by table lookup is OpenCV's 8-bit LAB a*, for every colour, before and after the
table is made."""

import cv2
import numpy as np

from leukedge.edge import lab


def test_a_star_is_opencvs_a_for_every_colour():
    every = np.arange(1 << 24, dtype="<u4").view(np.uint8).reshape(4096, 4096, 4)[..., :3]
    every = np.ascontiguousarray(every)
    want = cv2.cvtColor(every, cv2.COLOR_RGB2LAB)[..., 1]
    assert np.array_equal(lab._make_table().reshape(4096, 4096), want)


def test_a_star_of_a_field_before_and_after_the_table(monkeypatch):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes: no row padding
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1]
    monkeypatch.setattr(lab, "_TABLE", None)
    monkeypatch.setattr(lab, "_asked", 0)
    for i in range(lab.MAKE_AFTER + 2):  # converted, then looked up once the table is made
        got = lab.a_star(rgb)
        assert got.dtype == np.uint8 and np.array_equal(got, want), i
        assert (lab._TABLE is not None) == (i >= lab.MAKE_AFTER - 1)
