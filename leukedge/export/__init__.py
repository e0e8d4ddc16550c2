"""Export: a trained model -> verified model bundles for the station (above ``training``).

``families.export_run`` exports a training run; ``yolo`` and ``keras`` are the two
families' exporters, ``common`` their shared steps (rows, manifests, ONNX metadata),
``quantize_onnx`` and ``tflite`` the INT8 conversions, ``fidelity`` the INT8-vs-fp32 report.
This package file stays free of heavy imports: each module imports ONNX, TensorFlow or
Ultralytics inside the functions that need them.
"""
