"""The model shipped in the package: verified, described, and working on real fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge import load_model  # the public entry point the README documents
from leukedge.edge.bundle import read_manifest
from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.edge.model import MODELS_DIR

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "taleqani-all" / "Original"


SHIPPED = {"default": ("model.onnx", "onnx"), "mobilenetv2": ("model.tflite", "tflite")}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_bundle_loads_verified_with_its_card(name):
    model_file, fmt = SHIPPED[name]
    model = load_model(name)
    manifest = read_manifest(MODELS_DIR / name)
    assert model.classes == CLASSES
    assert set(manifest["files"]) == {model_file, "MODEL_CARD.md", "selftest.npz"}  # all verified
    assert manifest["model"]["format"] == fmt and manifest["model"]["precision"] == "int8"
    assert (MODELS_DIR / name / model_file).stat().st_size < 4_000_000
    fidelity = manifest["evaluation"]["fidelity"]
    assert fidelity["top1_agreement"] >= 0.995 and fidelity["size_ratio"] >= 3
    test = manifest["evaluation"]["test"]
    card = (MODELS_DIR / name / "MODEL_CARD.md").read_text()
    # The card states the figures the manifest records, and the bar they are held to.
    assert f"**{100 * test['accuracy']:.1f}%**" in card
    worst = test["worst_shift"]
    assert f"| {worst} | **{100 * test['shifts'][worst]['accuracy']:.1f}%**" in card
    assert f"| {100 * test['shortcut']['accuracy']:.1f}% |" in card
    assert "research use only" in card.lower() and "patient-level" in card
    assert test["data_sha256"] == manifest["data_manifest_sha256"]  # judged on its own split


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_classifies_real_fields(name):
    if not SHARED.is_dir():
        pytest.skip("../shared/data/taleqani-all is not present")
    model = load_model(name, threads=1)
    # ONNX keeps Softmax in float; the TFLite model's int8 output moves in steps of 1/256
    tolerance = 1e-3 if SHIPPED[name][1] == "onnx" else len(CLASSES) / 256
    hits = total = 0
    for label in CLASSES:
        for path in sorted((SHARED / label).glob("*.jpg"))[:10]:
            result = model.predict(read_field(path))
            hits += result.label == label
            total += 1
            assert abs(sum(result.probabilities.values()) - 1) <= tolerance
    assert total == 40 and hits / total >= 0.9


def test_demo_classifies_with_the_shipped_model():
    done = CliRunner().invoke(app, ["demo"])
    assert done.exit_code == 0, done.output
    name = json.loads((MODELS_DIR / "default" / "leukedge.json").read_text())["name"]
    assert name in done.output
    assert "slide call" in done.output
    assert "No model bundle is shipped" not in done.output
