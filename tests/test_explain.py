"""Explanations: occlusion maps point at the cells a decision rests on; the CLI verb."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.commands.explain import output_stems
from leukedge.edge.explain import crop_box, occlusion_map, overlay, preprocessed_view
from leukedge.edge.imageio import write_field
from leukedge.edge.model import input_specs
from leukedge.edge.preprocess import Preprocess
from leukedge.edge.synth import synth_field


class PurpleCounter:
    """A model whose decision rests on the blasts only: p("blast") grows with the number of
    purple (blue well above green) pixels in its view; enough of ``Model`` for ``explain``."""

    def __init__(self, size: int = 96):
        self.preprocess = Preprocess(input_mode="field-wb", size=size, layout="NHWC")
        self.input_specs = input_specs(self.preprocess)
        self.classes = ("none", "blast")

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        purple = (batch[..., 2] - batch[..., 1] > 0.25).mean(axis=(1, 2))
        p = 1 / (1 + np.exp(-(purple * 40 - 1)))
        return np.stack([1 - p, p], axis=1).astype(np.float32)


def test_the_map_peaks_on_the_cell_the_decision_rests_on():
    model, hits = PurpleCounter(), 0
    for seed in range(6):
        field, mask = synth_field("Pro", size=(120, 160), seed=seed)
        heat = occlusion_map(field, model, mask=mask)
        assert heat.shape == field.shape[:2] and heat.dtype == np.float32
        top, left, h, w = crop_box(field.shape)
        assert (top, left, h, w) == (0, 20, 120, 120)
        outside = np.ones(field.shape[:2], bool)
        outside[top : top + h, left : left + w] = False
        assert not heat[outside].any()  # the model never saw those pixels
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        hits += bool(mask[y, x])
    assert hits >= 5


def test_view_and_overlay():
    model = PurpleCounter(size=64)
    field, mask = synth_field("Early", size=(80, 100), seed=1)
    v = preprocessed_view(field, model)
    assert v.shape == (64, 64, 3) and v.dtype == np.uint8
    assert v.reshape(-1, 3).max(axis=0).min() >= 250  # white-balanced: the background is white
    square = field[:, 10:90]
    assert np.array_equal(overlay(square, np.zeros((80, 80), np.float32)), square)  # no evidence
    heat = np.zeros(field.shape[:2], np.float32)
    framed = overlay(field, heat)  # the centre square the model saw, framed in white
    assert (framed[:, 10] == 255).all() and np.array_equal(framed[:, :9], field[:, :9])
    heat[10:20, 10:20] = 0.5
    shown = overlay(field, heat, mask)
    assert shown.shape == field.shape and not np.array_equal(
        shown[10:20, 10:20], field[10:20, 10:20]
    )
    assert (shown[mask ^ np.roll(mask, 1, axis=1)] != field[mask ^ np.roll(mask, 1, axis=1)]).any()


def test_output_names_are_unique(tmp_path):
    paths = [tmp_path / "a" / "f.png", tmp_path / "b" / "f.png", tmp_path / "g.png"]
    stems = output_stems(paths)
    assert len(set(stems)) == 3 and stems[2] == "g" and all(s.startswith("f-") for s in stems[:2])


def test_explain_cli_writes_view_and_map_per_field(tmp_path):
    images = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        images.append(tmp_path / folder / "field.png")
        write_field(images[-1], synth_field("Pre", size=(96, 128), seed=len(images))[0])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    args = ["explain", *map(str, images), str(tmp_path / "broken.jpg"), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--grid", "3"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 4 and sum(n.endswith("_explain.png") for n in written) == 2
    assert "skipped" in result.output and "2 of 3 fields explained" in result.output


class MaskedPurpleCounter(PurpleCounter):
    """The same decision from a two-input model ("field", "masked"): it reads the masked
    input, whose background (all but the blasts) is black."""

    def __init__(self):
        super().__init__(size=64)
        self.input_specs = input_specs(self.preprocess, ["field", "masked"])

    def probabilities(self, batches: list[np.ndarray]) -> np.ndarray:
        field, masked = batches
        assert field.shape == masked.shape and (masked == 0).mean() > 0.5
        return super().probabilities(masked)


def test_a_two_input_model_is_occluded_in_both_inputs():
    field, mask = synth_field("Pro", size=(96, 96), seed=2)
    heat = occlusion_map(field, MaskedPurpleCounter(), mask=mask)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert mask[y, x]
