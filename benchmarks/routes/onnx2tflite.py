"""The reconstructed fp32 ONNX rebuilt as a TensorFlow function (NHWC inside, the bundle's NCHW
float input kept), then converted to a full-INT8 TFLite file (per-channel weights, int8
activations, float32 in/out) calibrated on data.py's 300 train fields.
Usage: onnx2tflite.py FP32.onnx OUT.tflite [fp32]"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
from onnx import numpy_helper as nh

m = onnx.load(sys.argv[1])
g = m.graph
W = {i.name: nh.to_array(i) for i in g.initializer}


def attrs(n):
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def build(x_nchw):
    env = {g.input[0].name: (tf.transpose(x_nchw, [0, 2, 3, 1]), True)}  # name -> (tensor, nhwc)

    def get(name, want=None):
        if name in W:
            return tf.constant(W[name]), False
        t, nhwc = env[name]
        if want == "raw" and nhwc:
            return tf.transpose(t, [0, 3, 1, 2]), False
        if want == "nhwc" and not nhwc:
            return tf.transpose(t, [0, 2, 3, 1]), True
        return t, nhwc

    for n in g.node:
        a, op = attrs(n), n.op_type
        if op == "Conv":
            x, _ = get(n.input[0], "nhwc")
            w = W[n.input[1]]
            b = W[n.input[2]] if len(n.input) > 2 else None
            s = a.get("strides", [1, 1])
            p = a.get("pads", [0, 0, 0, 0])
            grp = a.get("group", 1)
            assert a.get("dilations", [1, 1]) == [1, 1]
            if any(p):
                x = tf.pad(x, [[0, 0], [p[0], p[2]], [p[1], p[3]], [0, 0]])
            if grp == 1:
                y = tf.nn.conv2d(x, w.transpose(2, 3, 1, 0), [1, *s, 1], "VALID")
            else:
                assert grp == w.shape[0] and w.shape[1] == 1
                y = tf.nn.depthwise_conv2d(x, w.transpose(2, 3, 0, 1), [1, *s, 1], "VALID")
            if b is not None:
                y = y + b
            env[n.output[0]] = (y, True)
        elif op in ("Mul", "Add"):
            (x, fx), (y, fy) = get(n.input[0]), get(n.input[1])
            if fx != fy and n.input[1] not in W and n.input[0] not in W:
                (x, fx), (y, fy) = get(n.input[0], "raw"), get(n.input[1], "raw")
            f = fx if n.input[0] not in W else fy
            env[n.output[0]] = (x * y if op == "Mul" else x + y, f)
        elif op == "Sigmoid":
            x, f = get(n.input[0])
            env[n.output[0]] = (tf.sigmoid(x), f)
        elif op == "Concat":
            xs = [get(i) for i in n.input]
            if all(f for _, f in xs) and a["axis"] == 1:
                env[n.output[0]] = (tf.concat([t for t, _ in xs], 3), True)
            else:
                env[n.output[0]] = (
                    tf.concat([get(i, "raw")[0] for i in n.input], a["axis"]),
                    False,
                )
        elif op == "Split":
            x, f = get(n.input[0])
            sizes = [int(v) for v in W[n.input[1]]]
            axis = a["axis"]
            if f:
                assert axis == 1
                axis = 3
            for o, t in zip(n.output, tf.split(x, sizes, axis)):
                env[o] = (t, f)
        elif op == "Reshape":
            x, _ = get(n.input[0], "raw")
            shape = [int(v) for v in W[n.input[1]]]
            shape = [-1 if (v == 0 and i == 0) else v for i, v in enumerate(shape)]
            env[n.output[0]] = (tf.reshape(x, shape), False)
        elif op == "Transpose":
            x, _ = get(n.input[0], "raw")
            env[n.output[0]] = (tf.transpose(x, a["perm"]), False)
        elif op == "MatMul":
            x, _ = get(n.input[0], "raw")
            y, _ = get(n.input[1], "raw")
            env[n.output[0]] = (tf.matmul(x, y), False)
        elif op == "Softmax":
            x, f = get(n.input[0])
            assert not f
            env[n.output[0]] = (tf.nn.softmax(x, axis=a.get("axis", -1)), False)
        elif op == "GlobalAveragePool":
            x, _ = get(n.input[0], "nhwc")
            env[n.output[0]] = (tf.reduce_mean(x, [1, 2], keepdims=True), True)
        elif op == "Flatten":
            x, f = get(n.input[0])
            assert f
            env[n.output[0]] = (tf.reshape(x, [-1, x.shape[-1]]), False)
        elif op == "Gemm":
            x, _ = get(n.input[0])
            w = W[n.input[1]]
            assert a.get("transB") == 1
            env[n.output[0]] = (tf.matmul(x, w.T) + W[n.input[2]], False)
        else:
            raise NotImplementedError(op)
    return get(g.output[0].name, "raw")[0]


fn = tf.function(
    build, input_signature=[tf.TensorSpec([1, 3, 224, 224], tf.float32, name="images")]
)
val = np.load("runs/perf/val_x.npy")[:8]

ref = ort.InferenceSession(sys.argv[1]).run(None, {"images": val})[0]
got = np.concatenate([fn(val[i : i + 1]).numpy() for i in range(8)])
print("tf vs onnx max diff", np.abs(ref - got).max(), flush=True)
conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
if len(sys.argv) < 4:
    calib = np.load("runs/perf/calib_x.npy", mmap_mode="r")
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [np.asarray(calib[i : i + 1])] for i in range(len(calib))
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.float32
    conv.inference_output_type = tf.float32
open(sys.argv[2], "wb").write(conv.convert())
print("wrote", sys.argv[2])
