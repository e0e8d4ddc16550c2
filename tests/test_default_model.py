"""The model shipped in the package: verified, described, and working on real fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.bundle import read_manifest
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.edge.model import MODELS_DIR, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "taleqani-all" / "Original"


def test_default_bundle_loads_verified_with_its_card():
    model = load_model("default")
    manifest = read_manifest(MODELS_DIR / "default")
    assert model.classes == CLASSES
    assert set(manifest["files"]) == {"model.onnx", "MODEL_CARD.md"}  # the card is verified too
    assert manifest["model"]["quantization"]["activation"] == "int8"
    assert (MODELS_DIR / "default" / "model.onnx").stat().st_size < 3_000_000
    test = manifest["evaluation"]["test"]
    card = (MODELS_DIR / "default" / "MODEL_CARD.md").read_text()
    # The card states the figures the manifest records, and the bar they are held to.
    assert f"**{100 * test['accuracy']:.1f}%**" in card
    worst = test["worst_shift"]
    assert f"| {worst} | **{100 * test['shifts'][worst]['accuracy']:.1f}%**" in card
    assert f"| {100 * test['shortcut']['accuracy']:.1f}% |" in card
    assert "research use only" in card.lower() and "patient-level" in card


@pytest.mark.shared
def test_default_model_classifies_real_fields():
    if not SHARED.is_dir():
        pytest.skip("../shared/data/taleqani-all is not present")
    model = load_model("default", threads=1)
    hits = total = 0
    for label in CLASSES:
        for path in sorted((SHARED / label).glob("*.jpg"))[:10]:
            result = model.predict(read_field(path))
            hits += result.label == label
            total += 1
            assert abs(sum(result.probabilities.values()) - 1) < 1e-3
    assert total == 40 and hits / total >= 0.9


def test_demo_classifies_with_the_shipped_model():
    done = CliRunner().invoke(app, ["demo"])
    assert done.exit_code == 0, done.output
    name = json.loads((MODELS_DIR / "default" / "leukedge.json").read_text())["name"]
    assert name in done.output
    assert "slide call" in done.output
    assert "No model bundle is shipped" not in done.output
