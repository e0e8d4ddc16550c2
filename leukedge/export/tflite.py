"""SavedModel -> TFLite (fp32, or full-integer INT8), and JSON metadata inside the file.

INT8 models are fully integer (``TFLITE_BUILTINS_INT8``) with int8 input(s) and
output, rather than uint8: LiteRT's integer kernels (XNNPACK) compute in int8,
and a uint8 interface only adds a Quantize op at each end. The station's LiteRT
backend quantizes the float input with the model's own scale and zero point;
for input scaled to [-1, 1] (MobileNetV2) the calibrated scale is about 2/255,
so the int8 value is the uint8 pixel - 128 to within one step. The softmax
output is int8 too: probabilities in steps of 1/256.

Metadata: each entry is a named buffer in the flatbuffer's ``metadata`` list
(where the converter keeps ``min_runtime_version``), written and read with the
schema that ships with ai-edge-litert; runtimes ignore entries they do not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def convert_tflite(
    saved_model: str | Path,
    out_path: str | Path,
    calibration: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Convert a SavedModel (``serving_default`` signature) to ``out_path``.

    calibration : None for fp32; else the INT8 representative data, float32
        (N, ...) preprocessed samples per signature input name, fed one at a time.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if calibration is not None:
        n = len(next(iter(calibration.values())))

        def samples():
            for i in range(n):
                yield {name: x[i : i + 1] for name, x in calibration.items()}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    out_path = Path(out_path)
    out_path.write_bytes(converter.convert())
    return out_path


def set_tflite_metadata(path: str | Path, entries: Mapping[str, bytes]) -> None:
    """Add (or replace) named metadata buffers in a ``.tflite`` file, in place."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    model.metadata = [m for m in model.metadata or [] if m.name.decode() not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        meta = schema.MetadataT()
        meta.name, meta.buffer = name, len(model.buffers) - 1
        model.metadata.append(meta)
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_metadata(path: str | Path) -> dict[str, bytes]:
    """The named metadata buffers of a ``.tflite`` file."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    return {m.name.decode(): bytes(model.buffers[m.buffer].data) for m in model.metadata or []}
