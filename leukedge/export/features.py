"""A second output on an exported classifier: its pooled features, from the same inference.

The feature-space out-of-distribution score (``leukedge.edge.features``) needs what the
classifier's head sees. Both formats already compute it, so the file only gains an output
named ``FEATURES``; the weights, the ops on the path to the class scores and so the
probabilities stay as they were:

- ONNX: the tensor the final Gemm/MatMul reads after the last global pooling
  (GlobalAveragePool/ReduceMean, through Flatten/Reshape). In a QDQ (INT8) model it is the
  output of a DequantizeLinear; a copy of that DequantizeLinear makes the new output, so
  the original still feeds the Gemm alone and ONNX Runtime fuses the INT8 Gemm as before.
- TFLite: the output of the last MEAN (Keras' GlobalAveragePooling2D), appended to the
  subgraph's outputs and to each signature, renamed ``FEATURES``; an int8 tensor keeps its
  scale and zero point, which the LiteRT backend dequantizes.

``model_outputs`` gives the manifest's ``model.outputs`` entry that names them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from leukedge.errors import ModelError

#: The name of the feature output, in the file and in the manifest.
FEATURES = "features"


class NoPooledFeatures(ModelError):
    """The model has no global pooling feeding its head to take the features from."""


_ONNX_POOLS = ("GlobalAveragePool", "ReduceMean")
_ONNX_PASS = ("Flatten", "Reshape", "Squeeze", "QuantizeLinear", "DequantizeLinear")
_ONNX_HEADS = ("Gemm", "MatMul")


def _onnx_pooled(graph, path: Path) -> str:
    """The name of the tensor the head (Gemm/MatMul) reads after the last global pooling."""
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    pools = [n for n in graph.node if n.op_type in _ONNX_POOLS]
    if not pools:
        raise NoPooledFeatures(f"{path}: no global pooling ({', '.join(_ONNX_POOLS)}) to take")
    tensor = pools[-1].output[0]
    while True:
        nexts = consumers[tensor]
        if len(nexts) == 1 and nexts[0].op_type in _ONNX_HEADS:
            return tensor
        if len(nexts) != 1 or nexts[0].op_type not in _ONNX_PASS:
            raise NoPooledFeatures(
                f"{path}: the last global pooling does not lead to a single Gemm/MatMul "
                f"(at {tensor!r}: {[n.op_type for n in nexts]})"
            )
        tensor = nexts[0].output[0]


def _single_input(path: Path, inputs: int) -> None:
    """A multi-input (dual) model runs its shared backbone once on its inputs stacked on the
    batch axis, so its pooled tensor has a row per input, not per field: no features."""
    if inputs != 1:
        raise NoPooledFeatures(f"{path}: {inputs} inputs; pooled features need a one-input model")


def add_onnx_features(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write ``src`` with a ``FEATURES`` output to ``dst`` (default: in place)."""
    import onnx
    from onnx import helper

    src = Path(src)
    dst = src if dst is None else Path(dst)
    model = onnx.load(str(src))
    graph = model.graph
    if any(o.name == FEATURES for o in graph.output):
        if dst != src:
            onnx.save(model, str(dst))
        return dst
    weights = {i.name for i in graph.initializer}
    _single_input(src, len([i for i in graph.input if i.name not in weights]))
    tensor = _onnx_pooled(graph, src)
    producer = next(n for n in graph.node if tensor in n.output)
    if producer.op_type == "DequantizeLinear":
        node = helper.make_node("DequantizeLinear", list(producer.input), [FEATURES],
                                name=f"{FEATURES}/DequantizeLinear")  # fmt: skip
        for attr in producer.attribute:
            node.attribute.append(attr)
    else:
        node = helper.make_node("Identity", [tensor], [FEATURES], name=f"{FEATURES}/Identity")
    graph.node.append(node)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in [*inferred.value_info, *inferred.output]}
    shape = known[tensor].type.tensor_type.shape.dim if tensor in known else None
    dims = None if shape is None else [d.dim_value or d.dim_param or None for d in shape]
    graph.output.append(helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, dims))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def add_tflite_features(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write ``src`` with a ``FEATURES`` output to ``dst`` (default: in place)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    src = Path(src)
    dst = src if dst is None else Path(dst)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    if len(model.subgraphs) != 1:
        raise NoPooledFeatures(f"{src}: {len(model.subgraphs)} subgraphs; expected one")
    graph = model.subgraphs[0]
    names = [graph.tensors[i].name.decode() for i in graph.outputs]
    if FEATURES not in names:
        _single_input(src, len(graph.inputs))
        mean = schema.BuiltinOperator.MEAN

        def code(op) -> int:
            c = model.operatorCodes[op.opcodeIndex]
            return max(c.builtinCode, c.deprecatedBuiltinCode)

        means = [op for op in graph.operators if code(op) == mean]
        if not means:
            raise NoPooledFeatures(f"{src}: no MEAN (global average pooling) to take")
        tensor = int(means[-1].outputs[0])
        graph.tensors[tensor].name = FEATURES.encode()
        graph.outputs = [*graph.outputs, tensor]
        for signature in model.signatureDefs or []:
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = FEATURES.encode(), tensor
            signature.outputs = [*signature.outputs, entry]
    dst.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return dst


def add_feature_output(
    src: str | Path, dst: str | Path | None = None, required: bool = True
) -> Path | None:
    """``add_onnx_features`` or ``add_tflite_features`` by file suffix; a file that has the
    output already is left as it is. A model without pooled features raises
    ``NoPooledFeatures``, or with ``required=False`` is left as it is (returns None)."""
    src = Path(src)
    adders = {".onnx": add_onnx_features, ".tflite": add_tflite_features}
    if src.suffix.lower() not in adders:
        raise ModelError(f"{src}: unknown model format (expected .onnx or .tflite)")
    try:
        return adders[src.suffix.lower()](src, dst)
    except NoPooledFeatures:
        if required:
            raise
        return None


def model_outputs(path: str | Path) -> dict[str, str]:
    """The manifest's ``model.outputs``: {"probabilities": first output, "features": ...}
    (the latter only when the file has a ``FEATURES`` output)."""
    from leukedge.edge.backends import open_backend

    names = open_backend(path).output_names
    return {"probabilities": names[0], **({FEATURES: FEATURES} if FEATURES in names else {})}
