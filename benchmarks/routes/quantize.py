"""INT8 routes re-quantized from the reconstructed fp32 (ORT static, minmax, Softmax left float),
calibrated on the 300 train fields of data.py."""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

calib = np.load("runs/perf/calib_x.npy")
out = Path("runs/perf/q")
out.mkdir(exist_ok=True)
prepared = out / "prepared.onnx"
if not prepared.exists():
    quant_pre_process(onnx.load("runs/perf/fp32.onnx"), prepared)
ops = sorted({n.op_type for n in onnx.load(str(prepared)).graph.node} - {"Softmax"})


class R(CalibrationDataReader):
    def __init__(self):
        self.i = 0

    def get_next(self):
        if self.i >= len(calib):
            return None
        self.i += 1
        return {"images": calib[self.i - 1 : self.i]}


Q = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
for name in sys.argv[1:]:  # e.g. qdq-u8s8-pt qop-s8s8-pc
    fmt, types, gran = name.split("-")
    dst = out / f"{name}.onnx"
    if dst.exists():
        continue
    quantize_static(
        prepared,
        dst,
        R(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=ops,
        per_channel=gran == "pc",
        activation_type=Q[types[:2]],
        weight_type=Q[types[2:]],
        extra_options={"ActivationSymmetric": False},
    )
    print("wrote", dst, flush=True)
