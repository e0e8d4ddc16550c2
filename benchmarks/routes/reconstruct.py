"""fp32 ONNX reconstructed from the shipped QDQ INT8 default model.

Weight initializers behind DequantizeLinear are dequantized into float initializers; every
activation QuantizeLinear -> DequantizeLinear pair is dropped (the DQ's consumers read the Q's
input). Reshape targets' batch dim 1 -> 0 (copy) and the input/output batch dim made symbolic so
batches of any size run."""

import collections
import sys

import numpy as np
import onnx
from onnx import numpy_helper as nh

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
init = {i.name: i for i in g.initializer}
prod = {o: n for n in g.node for o in n.output}


def arr(name):
    return nh.to_array(init[name])


rename = {}  # tensor -> replacement tensor
new_inits = []
drop = set()
for n in g.node:
    if n.op_type == "DequantizeLinear" and n.input[0] in init:
        x = arr(n.input[0]).astype(np.float64)
        s = arr(n.input[1]).astype(np.float64)
        z = arr(n.input[2]).astype(np.float64) if len(n.input) > 2 and n.input[2] else 0.0
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if np.ndim(s) == 1 and s.size > 1:
            shp = [1] * x.ndim
            shp[axis] = -1
            s = s.reshape(shp)
            z = np.reshape(z, shp) if np.ndim(z) else z
        w = ((x - z) * s).astype(np.float32)
        new_inits.append(nh.from_array(w, n.output[0] + "_f32"))
        rename[n.output[0]] = n.output[0] + "_f32"
        drop.add(id(n))
    elif n.op_type == "DequantizeLinear":
        q = prod.get(n.input[0])
        assert q is not None and q.op_type == "QuantizeLinear", n.name
        rename[n.output[0]] = q.input[0]
        drop.add(id(n))
for n in g.node:
    if n.op_type == "QuantizeLinear":
        drop.add(id(n))
keep = [n for n in g.node if id(n) not in drop]


def res(t):
    while t in rename:
        t = rename[t]
    return t


for n in keep:
    for i, t in enumerate(n.input):
        n.input[i] = res(t)
for o in g.output:
    assert res(o.name) == o.name
del g.node[:]
g.node.extend(keep)
used = {t for n in keep for t in n.input}
kept_inits = [i for i in g.initializer if i.name in used]
for n in g.node:
    if n.op_type == "Reshape":
        t = arr(n.input[1]).copy()
        if t[0] == 1:
            t[0] = 0
            name = n.input[1] + "_dyn"
            if name not in {i.name for i in new_inits}:
                new_inits.append(nh.from_array(t, name))
            n.input[1] = name
del g.initializer[:]
g.initializer.extend(
    kept_inits + [i for i in new_inits if i.name in {t for n in g.node for t in n.input}]
)
for v in [*g.input, *g.output]:
    v.type.tensor_type.shape.dim[0].dim_param = "N"
del g.value_info[:]
m = onnx.shape_inference.infer_shapes(m)
onnx.checker.check_model(m)
onnx.save(m, dst)

print(collections.Counter(n.op_type for n in keep))
