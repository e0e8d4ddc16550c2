"""Architecture-only (untrained) models for the latency benchmark, built in a child process.

Untrained weights run exactly as fast as trained ones, so these stand in where no
bundle of an architecture is shipped, and give the PyTorch and Keras baselines
(``.pt``, ``.keras``) a user would otherwise run. Both go through the project's own
exporters: YOLO11n-cls through ``export_yolo_bundles`` (fp32 and INT8 ONNX), MobileNetV2
(``leukedge.training.keras_models.build_model``) through ``export_keras_bundles``
(fp32 and full-integer INT8 TFLite, and ONNX when tf2onnx is installed). INT8 is
calibrated on generated fields. The quick run builds a tiny CNN in MobileNetV2's place.

    python -m leukedge.benchmarks.build '{"arch": "yolo11n-cls", "out": DIR, "size": 224, ...}'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..edge.classes import CLASSES
from ..edge.preprocess import Preprocess
from .models import bundle_record
from .spawn import child_main

#: INT8 calibration fields (the generated split's train fields, all of them).
CALIB_N = 64
NOTE = "untrained weights (architecture only): latency is that of a trained model"


def untrained_yolo(arch: str, size: int, path: Path) -> Path:
    """Save an untrained Ultralytics classifier with one output per class of ``CLASSES``."""
    from ..offline import ensure_offline

    ensure_offline()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import ClassificationModel

    yolo = YOLO(f"{arch}.yaml", task="classify")
    ClassificationModel.reshape_outputs(yolo.model, len(CLASSES))
    yolo.model.names = dict(enumerate(CLASSES))
    yolo.model.args = {"imgsz": size, "task": "classify"}
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(path))
    return path


def build_yolo(p: dict) -> dict:
    """fp32 and INT8 ONNX bundles of an untrained YOLO11n-cls, and its ``.pt`` baseline."""
    from ..export.common import ExportSettings
    from ..export.yolo import export_yolo_bundles

    out, size = Path(p["out"]), int(p["size"])
    pt = untrained_yolo(p["arch"], size, out / f"{p['arch']}.pt")
    settings = ExportSettings(Path(p["split_csv"]), calib_n=CALIB_N)
    bundles = export_yolo_bundles(pt, out, Preprocess(size=size), settings)
    name = "YOLO11n-cls"
    baseline = {
        "framework": "pytorch",
        "arch": p["arch"],
        "model": name,
        "file": str(pt),
        "size_bytes": pt.stat().st_size,
        "input_size": size,
        "preprocess": Preprocess(input_mode="field", size=size).to_dict(),
    }
    models = [
        bundle_record(b, "architecture-only", False, p["arch"], name) for b in bundles.values()
    ]
    return {"models": models, "baselines": [baseline], "notes": [f"{name}: {NOTE}"]}


def tiny_cnn(size: int, n_classes: int):
    """The quick run's stand-in for MobileNetV2: conv -> pool -> softmax, which converts
    in a second where MobileNetV2's ~150 layers take half a minute."""
    import keras
    from keras import layers

    x = inp = keras.Input((size, size, 3), name="field")
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="tiny-cnn")


def build_keras(p: dict) -> dict:
    """fp32 and INT8 TFLite (and ONNX) bundles of an untrained MobileNetV2 (``quick``: of
    a tiny CNN, TFLite only), and its ``.keras`` baseline."""
    from ..export.common import ExportSettings
    from ..export.keras import export_keras_bundles
    from ..training.keras_models import arch_scaling, build_model

    out, size, quick = Path(p["out"]), int(p["size"]), p["quick"]
    arch, name = ("tiny-cnn", "tiny CNN") if quick else (p["arch"], "MobileNetV2")
    model = tiny_cnn(size, len(CLASSES)) if quick else build_model(p["arch"], len(CLASSES), size)
    out.mkdir(parents=True, exist_ok=True)
    keras_file = out / f"{arch}.keras"
    model.save(keras_file)
    scale, offset = arch_scaling(p["arch"])
    spec = Preprocess(size=size, layout="NHWC", scale=scale, offset=offset)
    notes = [f"{name}: {NOTE}"]
    formats = ["tflite"]
    if quick:
        notes.append("quick run: a tiny CNN stands in for MobileNetV2, no ONNX export of it")
    elif importlib.util.find_spec("tf2onnx"):
        formats.append("onnx")
    else:
        notes.append(f"{name}: no ONNX export, tf2onnx is not installed")
    settings = ExportSettings(Path(p["split_csv"]), calib_n=CALIB_N)
    bundles = export_keras_bundles(keras_file, out, spec, settings, to=formats)
    baseline = {
        "framework": "keras",
        "arch": arch,
        "model": name,
        "file": str(keras_file),
        "size_bytes": keras_file.stat().st_size,
        "input_size": size,
        "preprocess": spec.to_dict(),
    }
    models = [bundle_record(b, "architecture-only", False, arch, name) for b in bundles.values()]
    return {"models": models, "baselines": [baseline], "notes": notes}


def handle(payload: dict) -> dict:
    return build_yolo(payload) if payload["arch"].startswith("yolo") else build_keras(payload)


if __name__ == "__main__":
    child_main(handle)
