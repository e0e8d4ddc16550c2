"""Known-answer self-test (issue 32): bundles carry fixed inputs and reference outputs, and
``load_model`` refuses a model file or a runtime that computes them differently."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import write_tiny_bundle
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge.backends import OnnxRuntimeBackend
from leukedge.edge.bundle import MANIFEST, BundleError, read_manifest, sha256_file, write_manifest
from leukedge.edge.model import load_model
from leukedge.edge.selftest import (
    SELF_TEST_FILE,
    MissingSelfTestWarning,
    SelfTestError,
    SelfTestResult,
    cpu_info,
    run_self_test,
)
from leukedge.export.selftest import PROBABILITY_TOLERANCE, add_self_test

SHIPPED = ("default", "mobilenetv2")


@pytest.fixture
def tested_bundle(tmp_path):
    """A tiny bundle with its known-answer set."""
    folder = write_tiny_bundle(tmp_path / "bundle")
    add_self_test(folder)
    return folder


def _perturb(monkeypatch, amount: float) -> None:
    """ONNX Runtime made to add up to ``amount`` of noise (a fixed seed) to the probabilities,
    which stay probabilities (so the load's check of the model file still passes)."""
    clean = OnnxRuntimeBackend.outputs
    rng = np.random.default_rng(0)

    def noisy(self, x):
        out = clean(self, x)
        name = self.output_names[0]
        p = out[name] + rng.uniform(0, amount, out[name].shape).astype(np.float32)
        return {**out, name: p / p.sum(axis=1, keepdims=True)}

    monkeypatch.setattr(OnnxRuntimeBackend, "outputs", noisy)


def test_add_self_test_writes_a_small_listed_set_and_is_idempotent(tested_bundle):
    manifest = read_manifest(tested_bundle)
    section = manifest["self_test"]
    npz = tested_bundle / SELF_TEST_FILE
    assert section["file"] == SELF_TEST_FILE
    assert manifest["files"][SELF_TEST_FILE] == sha256_file(npz)
    assert section["n"] == len(section["cases"]) == 6
    assert {"zeros", "max", "gradient"} <= set(section["cases"])
    assert section["tolerance"] == {"probabilities": PROBABILITY_TOLERANCE}
    assert {"machine", "cpu", "backend", "runtime"} <= set(section["reference"])
    with np.load(npz) as data:
        assert data["view_field"].shape == (6, 32, 32, 3) and data["view_field"].dtype == np.uint8
        assert data["probabilities"].shape == (6, 4)
    before = (tested_bundle / MANIFEST).read_bytes(), npz.read_bytes()
    add_self_test(tested_bundle)
    assert ((tested_bundle / MANIFEST).read_bytes(), npz.read_bytes()) == before
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingSelfTestWarning)
        load_model(tested_bundle)


def test_a_differently_trained_model_with_the_same_shapes_is_refused(tested_bundle, tmp_path):
    other = write_tiny_bundle(tmp_path / "other", seed=1)
    (tested_bundle / "model.onnx").write_bytes((other / "model.onnx").read_bytes())
    write_manifest(tested_bundle, read_manifest(tested_bundle))  # SHA-256s re-stamped
    load_model(tested_bundle, self_test=False)  # the SHA-256s pass
    with pytest.raises(SelfTestError) as err:
        load_model(tested_bundle)
    message = str(err.value)
    assert str(tested_bundle) in message and "FAILED" in message
    assert "onnxruntime " in message and "probabilities max |diff|" in message
    assert cpu_info()["machine"] in message and "CPU features" in message
    assert isinstance(err.value, BundleError)


def test_a_runtime_perturbed_above_the_tolerance_is_refused(tested_bundle, monkeypatch):
    _perturb(monkeypatch, 2 * PROBABILITY_TOLERANCE)
    with pytest.raises(SelfTestError, match="known-answer self-test FAILED"):
        load_model(tested_bundle)


def test_a_runtime_within_the_tolerance_passes(tested_bundle, monkeypatch):
    _perturb(monkeypatch, PROBABILITY_TOLERANCE / 4)
    result = run_self_test(load_model(tested_bundle))
    assert result.passed and 0 < result.max_abs_diff["probabilities"] <= PROBABILITY_TOLERANCE


def test_features_are_checked_too(tiny_bundle, monkeypatch):
    from leukedge.export.features import add_feature_output, model_outputs

    model_file = tiny_bundle / "model.onnx"
    add_feature_output(model_file)
    manifest = read_manifest(tiny_bundle)
    manifest["model"]["outputs"] = model_outputs(model_file)
    write_manifest(tiny_bundle, manifest)
    section = add_self_test(tiny_bundle)
    assert set(section["tolerance"]) == {"probabilities", "features"}
    assert run_self_test(load_model(tiny_bundle)).passed
    clean = OnnxRuntimeBackend.outputs
    shift = 2 * section["tolerance"]["features"]

    def shifted(self, x):
        return {k: v + shift if k == "features" else v for k, v in clean(self, x).items()}

    monkeypatch.setattr(OnnxRuntimeBackend, "outputs", shifted)
    with pytest.raises(SelfTestError, match=r"features max \|diff\|"):
        load_model(tiny_bundle)


def test_nan_outputs_fail():
    diff, tolerance = {"probabilities": float("nan")}, {"probabilities": 0.1}
    assert not SelfTestResult(6, diff, tolerance, labels_agree=6, ms=1.0).passed


def test_a_two_input_model_stores_a_view_per_input(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    from leukedge.edge.preprocess import Preprocess

    folder = tmp_path / "dual"
    folder.mkdir()
    shape = [1, 3, 32, 32]
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["field", "masked"], ["both"]),
            helper.make_node("GlobalAveragePool", ["both"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
        ],
        "dual",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("field", "masked")],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(
                np.random.default_rng(0).normal(0, 8, (3, 4)).astype("f4"), "W"
            ),
            numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(folder / "model.onnx"))
    write_manifest(
        folder,
        {
            "name": "dual-test",
            "classes": ["Benign", "Early", "Pre", "Pro"],
            "inputs": ["field", "masked"],
            "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
            "preprocess": Preprocess(input_mode="field", size=32).to_dict(),
        },
    )
    add_self_test(folder)
    with np.load(folder / SELF_TEST_FILE) as data:
        field, masked = data["view_field"], data["view_masked"]
    assert field.shape == masked.shape == (6, 32, 32, 3)
    assert (masked[:2] <= field[:2]).all() and (masked[:2] < field[:2]).any()  # black outside
    assert run_self_test(load_model(folder)).passed


def test_a_bundle_without_a_self_test_loads_with_a_warning(tiny_bundle):
    with pytest.warns(MissingSelfTestWarning, match="add-self-test"):
        model = load_model(tiny_bundle)
    assert run_self_test(model) is None


@pytest.mark.parametrize(
    "section",
    [
        "six",
        {"file": "missing.npz", "n": 6, "tolerance": {"probabilities": 0.1}},
        {"file": SELF_TEST_FILE, "n": 0, "tolerance": {"probabilities": 0.1}},
        {"file": SELF_TEST_FILE, "n": 6, "tolerance": {"features": 0.1}},
        {"file": SELF_TEST_FILE, "n": 6, "tolerance": {"probabilities": -1}},
    ],
)
def test_a_malformed_section_names_the_manifest(tested_bundle, section):
    manifest = read_manifest(tested_bundle)
    write_manifest(tested_bundle, {**manifest, "self_test": section})
    with pytest.raises(BundleError, match=f"{MANIFEST}: self_test"):
        load_model(tested_bundle)


def test_a_damaged_set_is_refused(tested_bundle):
    with np.load(tested_bundle / SELF_TEST_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tested_bundle / SELF_TEST_FILE, **{**arrays, "view_field": arrays["view_field"][:3]})
    write_manifest(tested_bundle, read_manifest(tested_bundle))
    with pytest.raises(BundleError, match="does not hold the 6 cases"):
        load_model(tested_bundle)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundles_carry_a_self_test_and_pass_here(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingSelfTestWarning)
        model = load_model(name)
    result = run_self_test(model)
    assert result.passed and result.labels_agree == result.n
    assert (model.bundle / SELF_TEST_FILE).stat().st_size < 400_000


def test_cpu_info_reads_arm_features_and_names_the_core(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nBogoMIPS\t: 100.00\n"
        "Features\t: fp asimd evtstrm aes asimddp sve sve2 i8mm bf16 sme sme2 smei16i64\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    )
    info = cpu_info(cpuinfo)
    assert info["cpu"] == "implementer 0x41 part 0xd0b"
    assert info["features"] == sorted(
        ["asimd", "asimddp", "sve", "sve2", "i8mm", "bf16", "sme", "sme2", "smei16i64"]
    )
    assert cpu_info(tmp_path / "absent")["features"] == []


def test_doctor_prints_the_check_and_exits_0():
    result = CliRunner().invoke(app, ["doctor", "--model", "default"])
    assert result.exit_code == 0, result.output
    route = load_model("default", self_test=False).route.file  # the file this machine runs
    for text in ("CPU features", "onnxruntime", "numpy", route, "PASS", "self-test"):
        assert text in result.output


def test_doctor_exits_1_when_the_check_fails(tested_bundle, monkeypatch):
    _perturb(monkeypatch, 2 * PROBABILITY_TOLERANCE)
    result = CliRunner().invoke(app, ["doctor", "--model", str(tested_bundle)])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bundle_add_self_test_verb(tiny_bundle):
    result = CliRunner().invoke(app, ["bundle", "add-self-test", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    assert "6 known answers" in result.output
    assert json.loads((tiny_bundle / MANIFEST).read_text())["self_test"]["n"] == 6
    bad = CliRunner().invoke(app, ["bundle", "add-self-test", str(tiny_bundle), "--tolerance", "2"])
    assert bad.exit_code == 2
