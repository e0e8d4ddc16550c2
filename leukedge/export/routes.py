"""Faster model files of a bundle's network for some CPUs: its manifest's ``model.routes``.

ONNX Runtime's x86-64 INT8 kernels (MLAS: AVX2 ``vpmaddubsw``, AVX-512/AVX VNNI ``vpdpbusd``)
multiply uint8 activations by int8 weights; a model with int8 activations (S8S8, the
portable default, and what Arm's ``sdot`` takes) runs there through slower paths (measured:
the shipped YOLO11n-cls at 3.2x the CPU time of the same network with uint8 activations).
``uint8_activations`` rewrites an S8S8 QDQ model so that every activation
QuantizeLinear/DequantizeLinear keeps its scale and gets zero point + 128: uint8 = int8 + 128
on the same grid and clip range, so each quantized value, and so the outputs, stay as they
were (``tests/test_routes.py`` checks it on the shipped default). Reshape targets that
fix batch 1 are made batch-agnostic, so batches run in one inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
