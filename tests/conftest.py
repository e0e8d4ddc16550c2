"""Shared fixtures: a tiny ONNX model bundle built without any training framework."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.edge.classes import CLASSES
from leukedge.edge.preprocess import Preprocess


def write_tiny_bundle(folder, size: int = 32, input_mode: str = "field", seed: int = 0):
    """A 4-class bundle: global mean RGB -> linear layer -> softmax, as ``model.onnx``;
    ``seed`` draws the weights (another seed: a differently trained model)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from leukedge.edge.bundle import write_manifest

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 8, (3, len(CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, len(CLASSES)])],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.zeros(len(CLASSES), np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    write_manifest(
        folder,
        {
            "name": "tiny-test",
            "classes": list(CLASSES),
            "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
            "preprocess": Preprocess(input_mode=input_mode, size=size).to_dict(),
            "uncertain_threshold": 0.3,
        },
    )
    return folder


@pytest.fixture
def tiny_bundle(tmp_path):
    return write_tiny_bundle(tmp_path / "bundle")
