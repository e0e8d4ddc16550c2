"""Model routes: which of a bundle's model files a CPU runs (``leukedge.edge.routes``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.edge.bundle import BundleError
from leukedge.edge.routes import ROUTE_ENV, choose_route, machine_name, parse_routes

X86_VNNI = {"machine": "x86_64", "features": ["avx2", "avx512_vnni"]}
X86 = {"machine": "AMD64", "features": ["avx2"]}
PI5 = {"machine": "aarch64", "features": ["asimd", "asimddp"]}
PI3 = {"machine": "aarch64", "features": ["asimd"]}


def manifest(routes: list) -> dict:
    files = {"model.onnx": "0" * 64, "model-u8.onnx": "1" * 64, "model-dp.onnx": "2" * 64}
    return {"model": {"file": "model.onnx", "routes": routes}, "files": files}


ROUTES = [
    {"file": "model-u8.onnx", "machines": ["x86_64"], "why": "uint8 activations on x86"},
    {"file": "model-dp.onnx", "machines": ["aarch64"], "features": ["asimddp"]},
]


def test_machine_aliases():
    assert machine_name("AMD64") == "x86_64" and machine_name("arm64") == "aarch64"


@pytest.mark.parametrize(
    "cpu, file",
    [(X86_VNNI, "model-u8.onnx"), (X86, "model-u8.onnx"), (PI5, "model-dp.onnx"),
     (PI3, "model.onnx"), ({"machine": "riscv64", "features": []}, "model.onnx")],
)  # fmt: skip
def test_first_fitting_route_else_the_model_file(cpu, file, monkeypatch):
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    assert choose_route(manifest(ROUTES), "m.json", cpu).file == file


def test_a_route_another_backend_runs_is_skipped(monkeypatch):
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    tflite = [{"file": "model.tflite", "machines": ["x86_64"]}, *ROUTES]
    m = manifest(tflite)
    m["files"]["model.tflite"] = "3" * 64
    assert choose_route(m, "m.json", X86, backend="onnxruntime").file == "model-u8.onnx"


def test_no_routes_is_the_model_file(monkeypatch):
    monkeypatch.delenv(ROUTE_ENV, raising=False)
    m = manifest([])
    del m["model"]["routes"]
    assert choose_route(m, "m.json", X86).file == "model.onnx"


def test_env_override(monkeypatch):
    monkeypatch.setenv(ROUTE_ENV, "model.onnx")
    assert choose_route(manifest(ROUTES), "m.json", X86).file == "model.onnx"
    assert choose_route(manifest(ROUTES), "m.json", X86, forced="model-dp.onnx").file == (
        "model-dp.onnx"
    )
    monkeypatch.setenv(ROUTE_ENV, "other.onnx")
    with pytest.raises(BundleError, match="m.json: route 'other.onnx' is not a model file"):
        choose_route(manifest(ROUTES), "m.json", X86)


@pytest.mark.parametrize(
    "routes, problem",
    [("x", "must be a list"), ([{"machines": []}], "must be an object with a file"),
     ([{"file": "missing.onnx"}], "not listed in files"),
     ([{"file": "model-u8.onnx", "machines": "x86_64"}], "machines must be a list"),
     ([{"file": "model-u8.onnx", "speed": 2}], "unknown key")],
)  # fmt: skip
def test_bad_routes_name_the_manifest(routes, problem):
    with pytest.raises(BundleError, match=f"m.json: .*{problem}"):
        parse_routes(manifest(routes), "m.json")


def test_uint8_activations_keep_the_shipped_model_s_outputs_at_any_batch(tmp_path):
    """The shipped S8S8 default with uint8 activations: the same probabilities (every
    quantized value kept), and batches run in one inference."""
    onnx = pytest.importorskip("onnx")
    from leukedge.edge.backends import open_backend
    from leukedge.edge.model import MODELS_DIR
    from leukedge.export.routes import uint8_activations

    src = MODELS_DIR / "default" / "model.onnx"
    dst = uint8_activations(src, tmp_path / "model-u8s8.onnx")
    x = np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32)
    ref = np.concatenate([open_backend(src, threads=1).run(x[i : i + 1]) for i in range(3)])
    route = open_backend(dst, threads=1)
    assert route.input_shape[0] == -1
    # No inner shape still says batch 1 (ONNX Runtime would warn on every batched run).
    batch_one = [v.name for v in onnx.load(dst).graph.value_info]
    assert not batch_one, batch_one[:3]
    np.testing.assert_allclose(route.run(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="not an S8S8 QDQ model"):
        uint8_activations(dst, tmp_path / "again.onnx")


def _x86_file(cpu: dict) -> str:
    """The default bundle's file for a CPU: U8S8 with VNNI, U8U8 on other x86, else S8S8."""
    if machine_name(cpu["machine"]) != "x86_64":
        return "model.onnx"
    vnni = {"avx512_vnni", "avx_vnni"} & set(cpu["features"])
    return "model-u8s8.onnx" if vnni else "model-u8u8.onnx"


def test_add_onnx_routes_to_a_copy_of_the_default(tmp_path, monkeypatch):
    """add-route writes the x86 routes, the manifest lists them (VNNI first), this CPU's pick
    loads (self-test included) and classifies a field as model.file does."""
    pytest.importorskip("onnx")
    import shutil

    from leukedge.edge.model import MODELS_DIR, load_model
    from leukedge.edge.selftest import cpu_info
    from leukedge.edge.synth import synth_field
    from leukedge.export.routes import X86_ROUTES, add_onnx_routes

    monkeypatch.delenv(ROUTE_ENV, raising=False)
    bundle = tmp_path / "default"
    shutil.copytree(MODELS_DIR / "default", bundle)
    entries = add_onnx_routes(bundle)
    assert [e["file"] for e in entries] == [r["file"] for r in X86_ROUTES]
    assert [e.get("features") for e in entries] == [["avx512_vnni"], ["avx_vnni"], None]
    assert [e["quantization"]["weight"] for e in entries] == ["int8", "int8", "uint8"]
    for e in entries:
        assert e["input"]["dtype"] == "uint8" and e["input"]["shape"] == [-1, 112, 112, 12]
    picked = load_model(bundle, threads=1)
    assert picked.route.file == _x86_file(cpu_info())
    field = synth_field("Pro", seed=0)[0]
    portable = load_model(bundle, threads=1, route="model.onnx")
    for route in ("model-u8s8.onnx", "model-u8u8.onnx"):
        a = load_model(bundle, threads=1, route=route).predict(field).probabilities
        b = portable.predict(field).probabilities
        assert max(abs(a[k] - b[k]) for k in a) < 1e-3


ALDER_LAKE = {"machine": "x86_64", "features": ["avx2", "avx_vnni"]}


@pytest.mark.parametrize("cpu", [X86_VNNI, X86, PI5, PI3, ALDER_LAKE])
def test_the_shipped_default_routes_vnni_to_u8s8_other_x86_to_u8u8(cpu, monkeypatch):
    """U8S8 only where VNNI sums uint8 x int8 products exactly (elsewhere x86 kernels
    saturate 16-bit pair sums); other x86 CPUs the exact U8U8 file; Arm the portable file."""
    from leukedge.edge.model import resolve_bundle

    monkeypatch.delenv(ROUTE_ENV, raising=False)
    folder = resolve_bundle("default")
    manifest = json.loads((folder / "leukedge.json").read_text())
    assert choose_route(manifest, "m.json", cpu).file == _x86_file(cpu)


def test_the_shipped_default_runs_its_x86_route_with_the_same_outputs(monkeypatch):
    """The default bundle ships x86-64 routes; the one this CPU picks passes the bundle's
    self-test and classifies like model.file."""
    from leukedge.edge.model import load_model
    from leukedge.edge.selftest import cpu_info
    from leukedge.edge.synth import synth_field

    monkeypatch.delenv(ROUTE_ENV, raising=False)
    picked = load_model("default", threads=1)
    assert picked.route.file == _x86_file(cpu_info())
    portable = load_model("default", threads=1, route="model.onnx")
    field = synth_field("Pre", seed=1)[0]
    a, b = picked.predict(field), portable.predict(field)
    assert (
        a.label == b.label
        and max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-3
    )


def test_integer_input_takes_the_pixels_with_bit_identical_outputs(tmp_path):
    """The route's QuantizeLinear on the input moved out: uint8 NHWC pixels in, every output
    bit-identical to the float NCHW input it replaces, at any batch; a float batch is still
    taken (quantized as the removed node did); a file without such an input is refused."""
    onnx = pytest.importorskip("onnx")
    from leukedge.edge.backends import INPUT_METADATA, open_backend
    from leukedge.edge.model import MODELS_DIR
    from leukedge.edge.preprocess import Preprocess, integer_lut, lut_view, scale_view
    from leukedge.export.routes import integer_input, space_to_depth_stem, uint8_activations

    floating = uint8_activations(MODELS_DIR / "default" / "model.onnx", tmp_path / "f.onnx")
    pixels = integer_input(floating, tmp_path / "u8.onnx")
    patches = space_to_depth_stem(pixels, tmp_path / "s2d.onnx")
    a = open_backend(floating, threads=1)
    views = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    spec = Preprocess()
    x = scale_view(views, spec)
    ref = a.outputs(x)
    for path, shape, block in ((pixels, (-1, 224, 224, 3), 1), (patches, (-1, 112, 112, 12), 2)):
        b = open_backend(path, threads=1)
        (q,) = b.integer_inputs
        assert (q.dtype, q.zero_point, q.layout, q.block) == (np.uint8, 0, "NHWC", block)
        assert b.input_shape == shape
        got = b.outputs(q.arrange(lut_view(views, integer_lut(spec, q.quantize)), "NHWC"))
        for name in a.output_names:
            np.testing.assert_array_equal(got[name], ref[name])
            np.testing.assert_array_equal(b.outputs(x)[name], ref[name])
    with pytest.raises(BundleError, match="takes float32 or uint8, got int16"):
        b.outputs(views.astype(np.int16))
    with pytest.raises(ValueError, match="no float input read only by a QuantizeLinear"):
        integer_input(pixels, tmp_path / "again.onnx")
    with pytest.raises(ValueError, match="not a 3x3, stride 2, pad 1 one"):
        space_to_depth_stem(patches, tmp_path / "again.onnx")
    model = onnx.load(pixels)
    kept = [p for p in model.metadata_props if p.key != INPUT_METADATA]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(BundleError, match="does not say how pixels become it"):
        open_backend(tmp_path / "bare.onnx")


def test_the_shipped_route_is_fed_pixels_bit_identical_to_the_float_path(monkeypatch):
    """The station gives the shipped x86 route its uint8 pixels (and MobileNetV2 its int8
    input) straight from the view; outputs equal feeding the float input."""
    from leukedge.edge.model import load_model
    from leukedge.edge.preprocess import prepare
    from leukedge.edge.synth import synth_field

    monkeypatch.delenv(ROUTE_ENV, raising=False)
    fields = [synth_field(c, seed=2)[0] for c in ("Pro", "Benign")]
    for name, route, dtype in (("default", "model-u8s8.onnx", np.uint8),
                               ("mobilenetv2", None, np.int8)):  # fmt: skip
        model = load_model(name, threads=1, route=route)
        batch = model.prepare_batch(fields)
        assert batch.dtype == dtype
        floats = np.stack([prepare(f, model.preprocess) for f in fields])
        got, want = model.outputs(batch), model.outputs(floats)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
