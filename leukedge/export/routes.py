"""Faster model files of a bundle's network for some CPUs: its manifest's ``model.routes``.

ONNX Runtime's x86-64 INT8 kernels (MLAS: AVX2 ``vpmaddubsw``, AVX-512/AVX VNNI ``vpdpbusd``)
multiply uint8 activations by int8 weights; a model with int8 activations (S8S8, the
portable default, and what Arm's ``sdot`` takes) runs there through slower paths (measured:
the shipped YOLO11n-cls at 3.2x the CPU time of the same network with uint8 activations).
``uint8_activations`` rewrites an S8S8 QDQ model so that every activation
QuantizeLinear/DequantizeLinear keeps its scale and gets zero point + 128: uint8 = int8 + 128
on the same grid and clip range, so each quantized value, and so the outputs, stay as they
were (``add_onnx_route`` checks it on the bundle's known answers). Reshape targets that
fix batch 1 are made batch-agnostic, so batches run in one inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leukedge.edge.bundle import MANIFEST, read_manifest, write_manifest
from leukedge.edge.model import resolve_bundle
from leukedge.errors import UsageError

#: The route ``add_onnx_route`` writes: file, machines and why.
X86_ROUTE = {
    "file": "model-u8s8.onnx",
    "machines": ["x86_64"],
    "why": "uint8 activations: ONNX Runtime's x86-64 INT8 kernels (AVX2, VNNI) take them; "
    "same arithmetic as model.file",
}
#: Largest difference allowed between the route file's outputs and ``model.file``'s: the
#: rewrite keeps every quantized value, so only rounding in other kernels remains. Class
#: probabilities: absolute; other outputs (the pooled features, whose average can round one
#: quantization step apart): relative to their largest value.
ROUTE_TOLERANCE = {"probabilities": 1e-3, "other": 0.02}


def uint8_activations(src: str | Path, dst: str | Path) -> Path:
    """Write the S8S8 QDQ ONNX ``src`` with uint8 activations (module doc) to ``dst``;
    ``ValueError`` when ``src`` has no int8 activation to move."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    moved: dict[str, str] = {}

    def uint8_zero(name: str) -> str:
        if name not in moved:
            zero = numpy_helper.to_array(init[name])
            if zero.dtype != np.int8:
                raise ValueError(
                    f"{src}: activation zero point {name} is {zero.dtype} (not an S8S8 QDQ model)"
                )
            u8 = (zero.astype(np.int16) + 128).astype(np.uint8)
            graph.initializer.append(numpy_helper.from_array(u8, f"{name}_uint8"))
            moved[name] = f"{name}_uint8"
        return moved[name]

    for node in graph.node:
        activation = node.op_type == "QuantizeLinear" or (
            node.op_type == "DequantizeLinear" and node.input[0] not in init
        )
        if activation and len(node.input) > 2:
            node.input[2] = uint8_zero(node.input[2])
        if node.op_type == "Reshape" and node.input[1] in init:
            target = numpy_helper.to_array(init[node.input[1]])
            if len(target) and target[0] == 1:  # 0 copies the input's batch
                name = f"{node.input[1]}_anybatch"
                if name not in init:
                    init[name] = numpy_helper.from_array(
                        np.r_[0, target[1:]].astype(target.dtype), name
                    )
                    graph.initializer.append(init[name])
                node.input[1] = name
    if not moved:
        raise ValueError(f"{src}: no int8 activations (not an S8S8 QDQ model)")
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    # Inferred shapes of inner tensors still say batch 1: ONNX Runtime would warn on every
    # batched run that the outputs do not match them.
    del graph.value_info[:]
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst


def add_onnx_route(bundle: str | Path, route: dict = X86_ROUTE) -> dict:
    """Write ``route["file"]`` (``uint8_activations`` of the bundle's S8S8 ``model.file``) into
    the bundle, check that every output matches ``model.file``'s on the self-test's known
    answers (within ``ROUTE_TOLERANCE``; else the file is removed and ``UsageError``), add
    ``route`` to ``model.routes`` (replacing one for the same file) and re-stamp the manifest.
    Returns the route entry. The self-test stays valid: it checks whichever file a machine
    picks against the same answers."""
    folder = resolve_bundle(bundle)
    manifest = read_manifest(folder)
    where = folder / MANIFEST
    model = manifest["model"]
    if model.get("format") != "onnx" or (model.get("quantization") or {}).get("activation") != (
        "int8"
    ):
        raise UsageError(f"{where}: model.file is not an S8S8 ONNX model; no route to add")
    if "self_test" not in manifest:
        raise UsageError(f"{where}: no self-test to check the route on; run add-self-test first")
    dst = folder / route["file"]
    uint8_activations(folder / model["file"], dst)
    diffs = _differences(folder, manifest, model["file"], route["file"])
    if off := {k: d for k, d in diffs.items() if d > ROUTE_TOLERANCE[k]}:
        dst.unlink()
        raise UsageError(
            f"{dst}: differs from {model['file']} on the known answers ({off}, tolerance "
            f"{ROUTE_TOLERANCE}); not added"
        )
    quantization = {**(model.get("quantization") or {}), "activation": "uint8"}
    entry = {**route, "precision": model.get("precision", "int8"), "quantization": quantization}
    routes = [r for r in model.get("routes", []) if r.get("file") != route["file"]]
    manifest["model"] = {**model, "routes": [entry, *routes]}
    write_manifest(folder, manifest)
    return entry


def _differences(folder: Path, manifest: dict, reference: str, candidate: str) -> dict:
    """How far two model files of a bundle differ on its self-test's views (through the
    bundle's preprocessing): {"probabilities": largest absolute difference of the first
    output, "other": largest difference of any other output relative to its largest value}."""
    from leukedge.edge.backends import open_backend
    from leukedge.edge.model import input_specs
    from leukedge.edge.preprocess import Preprocess, scale_view

    names = manifest.get("inputs", ["field"])
    specs = input_specs(Preprocess.from_dict(manifest["preprocess"]), names)
    with np.load(folder / manifest["self_test"]["file"], allow_pickle=False) as data:
        xs = [scale_view(data[f"view_{name}"], spec) for name, spec in zip(names, specs)]
    ref = open_backend(folder / reference, threads=1)
    cand = open_backend(folder / candidate, threads=1)
    diffs = {"probabilities": 0.0, "other": 0.0}
    for i in range(len(xs[0])):
        rows = [x[i : i + 1] for x in xs]
        a, b = ref.outputs(rows), cand.outputs(rows)
        for name in a:
            d = float(np.abs(a[name] - b[name]).max())
            if name == ref.output_names[0]:
                diffs["probabilities"] = max(diffs["probabilities"], d)
            else:
                scale = max(float(np.abs(a[name]).max()), 1e-6)
                diffs["other"] = max(diffs["other"], d / scale)
    return diffs
