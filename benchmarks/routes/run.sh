#!/usr/bin/env bash
# Issue 28, phase 1: every route of the default bundle's YOLO11n-cls on this CPU.
# Needs the export extra (onnx, TensorFlow for the TFLite route) and the Taleqani data.
# Writes under runs/perf/ (ignored by git); the last step prints the Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs/perf/q
[ -f runs/split4/split.csv ] || leukedge data split /work/shared/data/taleqani-all --out runs/split4
# fp32 reconstructed from the shipped QDQ INT8 (weights dequantized, activation Q/DQ dropped)
python benchmarks/routes/reconstruct.py leukedge/models/default/model.onnx runs/perf/fp32.onnx
python benchmarks/routes/data.py          # val/test fields, 300 calibration train fields (seed 0)
# the shipped S8S8 with uint8 activations: the same arithmetic (leukedge.export.routes)
python -c "from leukedge.export.routes import uint8_activations as u; \
u('leukedge/models/default/model.onnx', 'runs/perf/q/shipped-u8s8.onnx')"
python benchmarks/routes/quantize.py qdq-u8s8-pt qdq-s8s8-pt qdq-u8s8-pc qdq-s8s8-pc \
  qop-u8s8-pt qop-u8s8-pc qop-s8s8-pt qop-s8s8-pc
python benchmarks/routes/onnx2tflite.py runs/perf/fp32.onnx runs/perf/q/tfl-fp32.tflite fp32
python benchmarks/routes/onnx2tflite.py runs/perf/fp32.onnx runs/perf/q/tfl-int8.tflite
FILES="runs/perf/fp32.onnx leukedge/models/default/model.onnx runs/perf/q/shipped-u8s8.onnx \
 runs/perf/q/qdq-u8s8-pt.onnx runs/perf/q/qop-u8s8-pt.onnx runs/perf/q/qdq-u8s8-pc.onnx \
 runs/perf/q/qop-u8s8-pc.onnx runs/perf/q/qdq-s8s8-pt.onnx runs/perf/q/qdq-s8s8-pc.onnx \
 runs/perf/q/qop-s8s8-pt.onnx runs/perf/q/qop-s8s8-pc.onnx runs/perf/q/tfl-int8.tflite \
 runs/perf/q/tfl-fp32.tflite"
python benchmarks/routes/fidelity.py $FILES
python benchmarks/routes/time_routes.py runs/perf/times.json 3 1,2 1,4,16,32 $FILES \
  leukedge/models/mobilenetv2/model.tflite
python benchmarks/routes/report.py runs/perf/times.json
