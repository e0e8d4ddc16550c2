"""Faster model files of a bundle's network for some CPUs: its manifest's ``model.routes``.

ONNX Runtime's x86-64 INT8 kernels (MLAS: AVX2 ``vpmaddubsw``, AVX-512/AVX VNNI ``vpdpbusd``)
multiply uint8 activations by int8 weights; a model with int8 activations (S8S8, the
portable default, and what Arm's ``sdot`` takes) runs there through slower paths (measured:
the shipped YOLO11n-cls at 3.2x the CPU time of the same network with uint8 activations).
``uint8_activations`` rewrites an S8S8 QDQ model so that every activation
QuantizeLinear/DequantizeLinear keeps its scale and gets zero point + 128: uint8 = int8 + 128
on the same grid and clip range, so each quantized value, and so the outputs, stay as they
were (``add_onnx_routes`` checks it on the bundle's known answers). Reshape targets that
fix batch 1 are made batch-agnostic, so batches run in one inference.

Only VNNI (``vpdpbusd``) sums those uint8 x int8 products exactly in 32 bits. Without it
MLAS's uint8 x int8 kernels (``vpmaddubsw``) add pairs of products in 16 bits and saturate
(ONNX Runtime's quantization documentation says so), which full-range int8 weights (up to
127 x 255 per product) reach: on an AVX2 CPU without VNNI (valgrind's CPU, which lacks
AVX-512) the uint8-activation file gave probabilities off by up to 0.99 and failed the
bundle's self-test, where model.file was exact. ``uint8_weights`` moves the weights to
uint8 as well (+ 128, zero point + 128: the same integers), which MLAS multiplies in
16 x 16 -> 32 bits, exactly, on every x86 CPU; that file is the route for x86 without VNNI.

``integer_input`` then moves the model's first step, QuantizeLinear of the float input
(pixel / 255 for YOLO: exactly the pixel value), out to the station, which looks the
integers up from the uint8 pixels (``leukedge.edge.preprocess.integer_lut``): no float copy
of the field and no quantization pass in the runtime. The file takes them NHWC, the pixels'
own layout: ONNX Runtime's INT8 convolutions run NHWC and transposed the NCHW input first,
so the transpose this inserts cancels against that one and neither side transposes.
``space_to_depth_stem`` makes the first convolution (3x3, stride 2, on 3 channels, which
ONNX Runtime's INT8 kernels run at half the speed of the same work on more channels:
measured 0.59 -> 0.30 ms CPU at 224 px) a 2x2 convolution, stride 1, over 2x2 pixel
patches (12 channels), its weights placed where each patch pixel falls under the 3x3 kernel
and the weight zero point elsewhere: the same integer sums, so the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leukedge.edge.backends import INPUT_METADATA
from leukedge.edge.bundle import MANIFEST, read_manifest, write_manifest
from leukedge.edge.model import resolve_bundle
from leukedge.errors import UsageError

_PIXELS = "uint8 NHWC pixels in 2x2 patches; the same integers as model.file"
#: The x86-64 routes ``add_onnx_routes`` writes, in the order they are tried (first fit wins).
X86_ROUTES = (
    *(
        {
            "file": "model-u8s8.onnx",
            "machines": ["x86_64"],
            "features": [vnni],
            "why": f"{vnni}: uint8 x int8 products summed exactly in 32 bits, ONNX Runtime's "
            f"fastest x86 INT8 kernels; {_PIXELS}",
        }
        for vnni in ("avx512_vnni", "avx_vnni")
    ),
    {
        "file": "model-u8u8.onnx",
        "machines": ["x86_64"],
        "why": "x86-64 without VNNI: uint8 x int8 kernels there saturate 16-bit pair sums, so "
        f"uint8 weights too (exact U8U8 kernels); {_PIXELS}",
    },
)
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
    return _save(model, dst)


def integer_input(src: str | Path, dst: str | Path, layout: str = "NHWC") -> Path:
    """Write the QDQ ONNX ``src`` to ``dst`` with each float input that only a
    QuantizeLinear (constant scale and zero point) reads replaced by that node's integer
    output, taken in ``layout`` ("NHWC": a Transpose to the exported NCHW follows it; "NCHW":
    as exported). The file's ``leukedge.input`` metadata records, per such input, the
    quantization it moved out (``leukedge.edge.backends.IntegerInput``); ``ValueError`` when
    no input qualifies."""
    import onnx
    from onnx import helper, numpy_helper

    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"unknown layout {layout!r}; choose NCHW or NHWC")
    model = onnx.load(str(src))
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    described = {}
    for inp in graph.input:
        tensor = inp.type.tensor_type
        readers = [n for n in graph.node if inp.name in n.input]
        if tensor.elem_type != onnx.TensorProto.FLOAT or len(readers) != 1:
            continue
        (quant,) = readers
        if quant.op_type != "QuantizeLinear" or quant.input[0] != inp.name:
            continue
        if len(quant.input) < 3 or not all(name in init for name in quant.input[1:3]):
            continue
        scale, zero = (numpy_helper.to_array(init[name]) for name in quant.input[1:3])
        if scale.size != 1 or zero.size != 1 or zero.dtype not in (np.uint8, np.int8):
            continue
        dims = tensor.shape.dim
        if len(dims) != 4:
            continue
        fed = inp.name
        index = list(graph.node).index(quant)
        graph.node.remove(quant)
        if layout == "NHWC":
            fed = f"{inp.name}_nchw"
            transpose = helper.make_node(
                "Transpose", [inp.name], [fed], name=f"{inp.name}_nhwc_to_nchw", perm=[0, 3, 1, 2]
            )
            graph.node.insert(index, transpose)
            order = [dims[i].SerializeToString() for i in (0, 2, 3, 1)]
            for dim, data in zip(dims, order):
                dim.ParseFromString(data)
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == quant.output[0]:
                    node.input[i] = fed
        for out in graph.output:
            if out.name == quant.output[0]:
                raise ValueError(f"{src}: the quantized input {inp.name} is itself an output")
        tensor.elem_type = helper.np_dtype_to_tensor_dtype(zero.dtype)
        stale = [v for v in graph.value_info if v.name == quant.output[0]]
        for v in stale:
            graph.value_info.remove(v)
        described[inp.name] = {
            "dtype": zero.dtype.name,
            "scale": float(scale.reshape(())),
            "zero_point": int(zero.reshape(())),
            "layout": layout,
            "float_layout": "NCHW",
        }
    if not described:
        raise ValueError(f"{src}: no float input read only by a QuantizeLinear (not a QDQ model?)")
    return _save_integer_input(model, described, dst)


def _save_integer_input(model, described: dict, dst: str | Path) -> Path:
    """``_save`` an ONNX ``model`` with its integer inputs ``described`` (name -> their
    encoding) in its ``leukedge.input`` metadata."""
    props = [p for p in model.metadata_props if p.key != INPUT_METADATA]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=INPUT_METADATA, value=json.dumps(described))
    return _save(model, dst)


def _save(model, dst: str | Path) -> Path:
    """Save an ONNX ``model`` without the initializers it no longer reads, checked, to
    ``dst``."""
    import onnx

    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst


def space_to_depth_stem(src: str | Path, dst: str | Path) -> Path:
    """Write the ``integer_input`` (NHWC) ONNX ``src`` to ``dst`` taking its input in 2x2
    patches (``leukedge.edge.backends.space_to_depth``; ``block`` 2 in its ``leukedge.input``
    metadata), its first convolution rewritten to match (module doc). ``ValueError`` unless
    the input feeds, through its NHWC -> NCHW Transpose and a DequantizeLinear, only a
    3x3 convolution with stride 2, padding 1, no dilation or groups, on an even-sized image."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    produced = {out: node for node in graph.node for out in node.output}
    described = json.loads(
        next((p.value for p in model.metadata_props if p.key == INPUT_METADATA), "{}")
    )
    if len(graph.input) != 1 or graph.input[0].name not in described:
        raise ValueError(f"{src}: not a one-input integer_input model")
    inp = graph.input[0]

    def only_reader(name: str, op: str):
        readers = [n for n in graph.node if name in n.input]
        if len(readers) != 1 or readers[0].op_type != op or readers[0].input[0] != name:
            raise ValueError(f"{src}: {name} is not read by one {op} alone")
        return readers[0]

    transpose = only_reader(inp.name, "Transpose")
    conv = only_reader(only_reader(transpose.output[0], "DequantizeLinear").output[0], "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    wanted = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    if (
        any(list(attrs.get(k, [])) != v for k, v in wanted.items())
        or list(attrs.get("dilations", [1, 1])) != [1, 1]
        or attrs.get("group", 1) != 1
        or list(helper.get_attribute_value(transpose.attribute[0])) != [0, 3, 1, 2]
        or not (dims[1] and dims[2]) or dims[1] % 2 or dims[2] % 2
    ):  # fmt: skip
        raise ValueError(f"{src}: the first convolution is not a 3x3, stride 2, pad 1 one")
    dequant = produced.get(conv.input[1])
    if dequant is None or dequant.op_type != "DequantizeLinear" or dequant.input[0] not in init:
        raise ValueError(f"{src}: the first convolution's weights are not quantized constants")
    w = numpy_helper.to_array(init[dequant.input[0]])
    zero = numpy_helper.to_array(init[dequant.input[2]]) if len(dequant.input) > 2 else np.int8(0)
    out_ch, in_ch = w.shape[:2]
    # Patch (row r, column c) of output position i sits under kernel row/column 2 * p + r - 1
    # of the patch p in {i - 1, i} the 2x2 kernel reads; the patch's channel is (2r + c) * C.
    w2 = np.empty((out_ch, 4 * in_ch, 2, 2), w.dtype)
    w2[...] = np.asarray(zero, w.dtype).reshape(-1, 1, 1, 1)
    for ky in range(3):
        py, r = (0, 1) if ky == 0 else (1, ky - 1)
        for kx in range(3):
            px, c = (0, 1) if kx == 0 else (1, kx - 1)
            w2[:, (2 * r + c) * in_ch : (2 * r + c + 1) * in_ch, py, px] = w[:, :, ky, kx]
    name = f"{dequant.input[0]}_space_to_depth"
    graph.initializer.append(numpy_helper.from_array(w2, name))
    dequant.input[0] = name
    for a in conv.attribute:
        if a.name in ("kernel_shape", "strides", "pads"):
            a.ints[:] = {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 1, 0, 0]}[a.name]
    shape = inp.type.tensor_type.shape.dim
    shape[1].dim_value, shape[2].dim_value = dims[1] // 2, dims[2] // 2
    shape[3].dim_value = dims[3] * 4
    described[inp.name]["block"] = 2
    return _save_integer_input(model, described, dst)


def uint8_weights(src: str | Path, dst: str | Path) -> Path:
    """Write the QDQ ONNX ``src`` with every int8 constant a DequantizeLinear reads (weights)
    as uint8 + 128 and its zero point + 128 (module doc) to ``dst``; ``ValueError`` when
    there is none."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    moved: dict[str, str] = {}

    def uint8_copy(name: str) -> str:
        if name not in moved:
            moved[name] = f"{name}_uint8"
            value = numpy_helper.to_array(init[name]).astype(np.int16) + 128
            graph.initializer.append(numpy_helper.from_array(value.astype(np.uint8), moved[name]))
        return moved[name]

    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in init or len(node.input) < 3:
            continue
        if numpy_helper.to_array(init[node.input[0]]).dtype != np.int8:
            continue
        if numpy_helper.to_array(init[node.input[2]]).dtype != np.int8:
            raise ValueError(f"{src}: int8 constant {node.input[0]} with a non-int8 zero point")
        node.input[0], node.input[2] = uint8_copy(node.input[0]), uint8_copy(node.input[2])
    if not moved:
        raise ValueError(f"{src}: no int8 weights (not an S8 QDQ model)")
    return _save(model, dst)


def add_onnx_routes(bundle: str | Path) -> list[dict]:
    """Write the files of ``X86_ROUTES`` into the bundle: ``uint8_activations``,
    ``integer_input`` and ``space_to_depth_stem`` of its S8S8 ``model.file``, and that with
    ``uint8_weights``; check that each gives ``model.file``'s outputs on the self-test's known
    answers (within ``ROUTE_TOLERANCE``) and the integers ONNX Runtime's QuantizeLinear would
    for every pixel value (else the files are removed and ``UsageError``); list them in
    ``model.routes`` (replacing entries for the same files) and re-stamp the manifest. Returns
    the entries. The self-test stays valid: it checks whichever file a machine picks against
    the same answers."""
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
    u8s8, u8u8 = (folder / f for f in dict.fromkeys(r["file"] for r in X86_ROUTES))
    pixels = integer_input(uint8_activations(folder / model["file"], u8s8), u8s8)
    uint8_weights(space_to_depth_stem(pixels, u8s8), u8u8)
    base = model.get("quantization") or {}
    quantization = {
        u8s8.name: {**base, "activation": "uint8"},
        u8u8.name: {**base, "activation": "uint8", "weight": "uint8"},
    }
    inputs = {}
    for dst in (u8s8, u8u8):
        try:
            inputs[dst.name] = _integer_inputs(folder, manifest, dst.name)
            diffs = _differences(folder, manifest, model["file"], dst.name)
            if off := {k: d for k, d in diffs.items() if d > ROUTE_TOLERANCE[k]}:
                raise ValueError(
                    f"differs from {model['file']} on the known answers ({off}, tolerance "
                    f"{ROUTE_TOLERANCE})"
                )
        except ValueError as exc:
            u8s8.unlink(missing_ok=True)
            u8u8.unlink(missing_ok=True)
            raise UsageError(f"{dst}: {exc}; no route added") from exc
    entries = [
        {
            **route,
            "precision": model.get("precision", "int8"),
            "quantization": quantization[route["file"]],
            "input": ins[0] if len(ins := inputs[route["file"]]) == 1 else ins,
        }
        for route in X86_ROUTES
    ]
    routes = [r for r in model.get("routes", []) if r.get("file") not in quantization]
    manifest["model"] = {**model, "routes": [*entries, *routes]}
    write_manifest(folder, manifest)
    return entries


def _quantize_linear(x: np.ndarray, scale: float, zero_point: np.ndarray) -> np.ndarray:
    """ONNX Runtime's QuantizeLinear of float32 ``x`` (a one-node model)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    kind = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
        "quantize",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", kind, [None])],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(zero_point, "z")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _integer_inputs(folder: Path, manifest: dict, file: str) -> list[dict]:
    """The manifest ``input`` entries of a bundle's ``integer_input`` file, after checking
    that the station's table (``preprocess.integer_lut``) gives, for every pixel value, what
    ONNX Runtime's QuantizeLinear it replaces gives (``ValueError`` otherwise)."""
    from leukedge.edge.backends import open_backend
    from leukedge.edge.model import input_specs
    from leukedge.edge.preprocess import Preprocess, integer_lut

    backend = open_backend(folder / file, threads=1)
    specs = input_specs(
        Preprocess.from_dict(manifest["preprocess"]), manifest.get("inputs", ["field"])
    )
    entries = []
    for name, shape, spec, q in zip(
        backend.input_names, backend.input_shapes, specs, backend.integer_inputs
    ):
        if q is None:
            raise ValueError(f"input {name} still takes float32")
        lut = integer_lut(spec, q.quantize)
        want = _quantize_linear(
            integer_lut(spec, np.asarray), q.scale, np.array(q.zero_point, q.dtype)
        )
        if not np.array_equal(lut, want):
            bad = np.flatnonzero(lut != want).tolist()
            raise ValueError(f"input {name}: the pixel table differs from QuantizeLinear at {bad}")
        entries.append(
            {
                "name": name,
                "shape": list(shape),
                "layout": q.layout,
                "block": q.block,
                "dtype": np.dtype(q.dtype).name,
                "quantization": {"scale": q.scale, "zero_point": q.zero_point},
            }
        )
    return entries


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
