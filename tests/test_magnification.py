"""The lower-magnification discriminant (``trust.scale.lower``): fitted on fields and on
mosaics of them at half the magnification, it flags a field seen at half the magnification
and passes fresh clean ones; frames read at another resolution fall back to the rulers;
bundles without it, or with a malformed one, say so."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from leukedge.edge.bundle import BundleError
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.edge.scale import (
    SIGMAS,
    check_scale,
    lower_magnification,
    measure_cells,
    parse_scale_reference,
    scale_reference,
)
from leukedge.edge.synth import synth_field
from leukedge.export.magnification import fit_lower_magnification, mosaic

#: Synthetic fields the discriminant is fitted on (fewer leave too few per fold for 122 weights).
N_FIT = 160
SHARED = Path(__file__).resolve().parents[2] / "shared/data/taleqani-all"


def half_magnification(rgb):
    """The benchmark's 0.5x condition: the field tiled 2 x 2, area-averaged to its size."""
    h, w = rgb.shape[:2]
    return cv2.resize(np.tile(rgb, (2, 2, 1)), (w, h), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def fitted():
    fields = [synth_field(CLASSES[i % 4], seed=100 + i)[0] for i in range(N_FIT)]
    labels = [i % 4 for i in range(N_FIT)]
    ref = {**scale_reference(fields)}
    ref["lower"] = fit_lower_magnification(fields, labels, groups=list(range(N_FIT)))
    return parse_scale_reference({"trust": {"scale": ref}})[0]


def test_discriminant_passes_clean_fields_and_flags_half_magnification(fitted):
    lower = fitted["lower"]
    assert lower["weights"].shape == (2 * len(SIGMAS),) and lower["step"] == 2
    assert lower["train_held_out_flagged"] <= 0.05 and lower["mosaics_passed"] <= 0.05
    fresh = [synth_field(CLASSES[i % 4], seed=500 + i)[0] for i in range(8)]
    assert [check_scale(f, fitted).reason for f in fresh] == [None] * 8
    assert all(check_scale(half_magnification(f), fitted).reason == "scale" for f in fresh)
    # the discriminant decides: the rulers' own bands would pass these half-size frames
    rulers = {k: v for k, v in fitted.items() if k != "lower"}
    wide = {**rulers, "band_px": [1.0, 500.0], "texture_min_px": 1.0}
    assert all(check_scale(half_magnification(f), wide).reason is None for f in fresh)
    assert all(check_scale(half_magnification(f), {**wide, "lower": lower}).reason for f in fresh)


def test_mosaic_is_four_fields_at_half_the_size():
    fields = [np.full((64, 64, 3), v, np.uint8) for v in (0, 80, 160, 240)]
    out = mosaic(fields)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 63, 0] == 80 and out[63, 0, 0] == 160
    assert out[63, 63, 0] == 240


def test_frame_read_at_another_resolution_is_judged_by_the_rulers(fitted):
    big = cv2.resize(CLEAN_FIELD, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    m = measure_cells(big)
    assert m.spectrum is not None and m.spectrum_step != fitted["lower"]["step"]
    # a discriminant that would flag everything is not consulted for this frame
    always = {**fitted["lower"], "threshold": np.inf}
    assert not lower_magnification(m, {**fitted, "lower": always})
    assert lower_magnification(measure_cells(CLEAN_FIELD), {**fitted, "lower": always})


CLEAN_FIELD = synth_field("Pre", seed=7)[0]


def test_bundle_without_discriminant_notes_it_and_malformed_one_is_refused(fitted):
    old = {k: v for k, v in fitted.items() if k != "lower"}
    ref, note = parse_scale_reference({"trust": {"scale": old}}, "b/leukedge.json")
    assert ref is old and "b/leukedge.json" in note and "lower-magnification" in note
    bad = {**old, "lower": {"weights": [0.0] * 3, "threshold": 0.0, "step": 2}}
    with pytest.raises(BundleError, match=r"b/leukedge\.json: trust\.scale\.lower"):
        parse_scale_reference({"trust": {"scale": bad}}, "b/leukedge.json")
    with pytest.raises(BundleError, match="add-trust"):
        parse_scale_reference({"trust": {"scale": {**old, "lower": {"weights": []}}}})


@pytest.mark.shared
def test_shipped_discriminant_on_real_fields():
    from leukedge.edge.bundle import read_manifest
    from leukedge.edge.model import resolve_bundle

    if not SHARED.is_dir():
        pytest.skip(f"{SHARED}: shared data absent")
    manifest = read_manifest(resolve_bundle("default"))
    ref, note = parse_scale_reference(manifest)
    assert note is None
    paths = sorted((SHARED / "Original").glob("*/*.jpg"))[::40]
    clean = [check_scale(read_field(p), ref).reason for p in paths]
    half = [check_scale(half_magnification(read_field(p)), ref).reason for p in paths]
    assert sum(r is not None for r in clean) <= 1, clean
    assert sum(r == "scale" for r in half) >= len(paths) - 1, half
