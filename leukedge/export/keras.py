"""A trained Keras classifier -> TFLite and ONNX bundles (fp32 and INT8) with fidelity reports.

``export_keras_bundles`` writes, under ``out_dir``, for each format asked for:

- ``keras-tflite-fp32/``, ``keras-tflite-int8/`` (``model.tflite``) and
  ``keras-onnx-fp32/``, ``keras-onnx-int8/`` (``model.onnx``), each with its
  ``leukedge.json`` manifest (``leukedge.export.common``);
- ``fidelity-tflite.{json,md}`` and ``fidelity-onnx.{json,md}``: INT8 against
  fp32 on the evaluation split.

The exported models keep the Keras model's input(s), NHWC float32 scaled as the
run's ``Preprocess`` says (int8 in the INT8 TFLite model, see
``leukedge.export.tflite``), and its softmax output. A dual model's manifest
lists ``"inputs": ["field", "masked"]``, the file's input order. Class names
are in the manifest, in ONNX ``metadata_props`` (``names``, a JSON list) and in
TFLite metadata (``leukedge``: JSON with ``names``, ``preprocess``, ``inputs``,
``output``). Each fp32 file is checked against Keras on the evaluation fields.
TensorFlow, tf2onnx and onnx are imported inside the functions.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.edge.backends import open_backend
from leukedge.edge.bundle import write_manifest
from leukedge.edge.model import input_specs
from leukedge.edge.preprocess import Preprocess
from leukedge.errors import ModelError, UsageError
from leukedge.training.runs import find_run_config

from . import common
from .common import ExportSettings
from .fidelity import compare, model_probs
from .selftest import add_self_test
from .tflite import convert_tflite, set_tflite_metadata

FORMATS = ("tflite", "onnx")
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx"}
METADATA_NAME = "leukedge"

#: Largest accepted |exported fp32 - Keras| probability difference.
VERIFY_ATOL = 1e-4


def bundle_name(fmt: str, precision: str) -> str:
    return f"keras-{fmt}-{precision}"


def export_onnx(
    model, out_path: Path, metadata: dict[str, str], opset: int = common.ONNX_OPSET
) -> Path:
    """A Keras model -> fp32 ONNX (tf2onnx) with the Keras input names and ``metadata``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec(t.shape, tf.float32, name=t.name) for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    common.set_metadata(proto, metadata)
    onnx.save(proto, str(out_path))
    return out_path


def _check_input_order(path: Path, names: Sequence[str]) -> None:
    """Check the file takes the Keras inputs in Keras order (TFLite: serving_default_<name>:0)."""
    found = open_backend(path).input_names
    bare = [re.sub(r"^serving_default_|:\d+$", "", n) for n in found]
    if bare != list(names):
        raise RuntimeError(f"{path}: inputs {found} do not follow the Keras inputs {list(names)}")


def _tflite_models(saved_model: Path, files: dict, calib: dict, meta: dict, seed: int) -> dict:
    """Write the fp32 (and, with ``calib``, INT8) ``.tflite`` files; returns their quantization."""
    convert_tflite(saved_model, files["fp32"])
    quantization = {"fp32": None}
    if "int8" in files:
        convert_tflite(saved_model, files["int8"], calib)
        quantization["int8"] = {
            "format": "tflite-full-integer",
            "input": "int8",
            "output": "int8",
            "calibration_split": "train",
            "calibration_n": len(next(iter(calib.values()))),
            "calibration_seed": seed,
        }
    for path in files.values():
        set_tflite_metadata(path, {METADATA_NAME: json.dumps(meta).encode()})
    return quantization


def _onnx_models(model, files: dict, calib: dict, meta: dict, seed: int, settings) -> dict:
    """Write the fp32 (and INT8) ``.onnx`` files; returns their quantization."""
    props = {"names": json.dumps(meta["names"]), "leukedge.output": meta["output"]}
    props |= {f"leukedge.{k}": json.dumps(meta[k]) for k in ("preprocess", "inputs")}
    export_onnx(model, files["fp32"], props)
    quantization = {"fp32": None}
    if "int8" in files:
        (x,) = calib.values()  # single-input models only
        quantization["int8"] = common.quantize_onnx_model(
            files["fp32"], files["int8"], x, seed, **settings
        )
    return quantization


def recorded_preprocess(keras_path: str | Path) -> dict:
    """What the model was trained on: the preprocessing of its run record."""
    recorded = (find_run_config(keras_path) or {}).get("preprocess")
    if recorded is None:
        raise ModelError(
            f"no run record with the preprocessing of {keras_path} (leukedge_train.json)"
        )
    return recorded


@dataclass(frozen=True)
class _Export:
    """One Keras export, whatever the format: the model, its run name, preprocessing and
    settings, input names, the evaluation fields (inputs ``x_eval``, labels ``y_eval``, the
    Keras probabilities), calibration inputs by name, the manifest entries every bundle
    shares and the metadata written into the model files."""

    model: object
    run_name: str
    spec: Preprocess
    settings: ExportSettings
    names: list[str]
    x_eval: list[np.ndarray]
    y_eval: np.ndarray
    keras_probs: np.ndarray
    calib: dict[str, np.ndarray]
    shared: dict
    meta: dict


def _format_bundles(job: _Export, fmt: str, tmp: Path) -> tuple[dict[str, Path], dict | None]:
    """Write the fp32 (and INT8) bundles of one format under ``tmp``, each file checked
    against Keras; returns {"<fmt>-<precision>": folder} and the INT8 fidelity report."""
    seed = job.settings.seed
    precisions = ("fp32", "int8") if job.settings.int8 else ("fp32",)
    folders = {p: tmp / bundle_name(fmt, p) for p in precisions}
    files = {p: folder / MODEL_FILES[fmt] for p, folder in folders.items()}
    for folder in folders.values():
        folder.mkdir()
    if fmt == "tflite":
        quantization = _tflite_models(tmp / "saved_model", files, job.calib, job.meta, seed)
    else:
        settings = job.settings.onnx_int8
        quantization = _onnx_models(job.model, files, job.calib, job.meta, seed, settings)
    for path in files.values():
        _check_input_order(path, job.names)
    diff = compare(job.keras_probs, model_probs(files["fp32"])(job.x_eval))["max_abs_prob_diff"]
    if diff > VERIFY_ATOL:
        raise RuntimeError(f"{files['fp32']}: differs from Keras by {diff:.2e}")
    evaluation, report = common.evaluate_models(
        files["fp32"],
        files.get("int8"),
        job.x_eval,
        job.y_eval,
        job.settings.eval_split,
        (bundle_name(fmt, "fp32"), bundle_name(fmt, "int8")),
        quantization.get("int8"),
    )
    evaluation["fp32"]["max_abs_prob_diff_vs_keras"] = diff
    staged = {}
    for precision, folder in folders.items():
        entry = common.model_entry(files[precision], job.spec, precision, quantization[precision])
        manifest = {"name": f"{job.run_name}-{folder.name}", **job.shared, "model": entry}
        write_manifest(folder, {**manifest, "evaluation": evaluation[precision]})
        add_self_test(folder)
        staged[f"{fmt}-{precision}"] = folder
    return staged, report


def export_keras_bundles(
    keras_path: str | Path,
    out_dir: str | Path,
    spec: Preprocess,
    settings: ExportSettings,
    to: Sequence[str] = FORMATS,
) -> dict[str, Path]:
    """Export a ``.keras`` classifier; returns {"tflite-fp32": dir, "tflite-int8": dir, ...}.

    spec : what the model was trained on (the run record's ``preprocess``).
    to : formats, "tflite" and/or "onnx". INT8 ONNX takes single-input models
        only (``quantize_onnx`` calibrates one input).
    Classes are the run record's ``classes``, else the split's labels sorted (as
    ``train_keras`` numbers them). Bundles and fidelity reports of an earlier
    Keras export in ``out_dir`` are replaced.
    """
    import keras

    keras_path, out_dir, split_csv = Path(keras_path), Path(out_dir), Path(settings.split_csv)
    int8, eval_split, seed = settings.int8, settings.eval_split, settings.seed
    if not to or set(to) - set(FORMATS):
        raise UsageError(f"format(s) {list(to)}: choose from {', '.join(FORMATS)}")
    model = keras.models.load_model(keras_path, compile=False)
    names = [t.name for t in model.inputs]
    specs = input_specs(spec, names)
    if model.inputs[0].shape[1] != spec.size:
        raise ModelError(f"{keras_path} takes {model.inputs[0].shape[1]} px, not {spec.size}")
    if int8 and "onnx" in to and len(names) > 1:
        raise UsageError("INT8 ONNX of a multi-input model is not supported: use tflite or no int8")
    evaluate, train = common.export_rows(split_csv, eval_split, int8)
    record = find_run_config(keras_path) or {}
    classes = record.get("classes") or sorted({r.label for r in (*train, *evaluate)})
    if model.output_shape[-1] != len(classes):
        raise ModelError(f"{keras_path}: {model.output_shape[-1]} outputs for classes {classes}")

    x_eval = [common.prepare_rows(evaluate, s, f"Preparing {eval_split} fields") for s in specs]
    y_eval = common.class_indices(evaluate, classes)
    keras_probs = model.predict(x_eval[0] if len(x_eval) == 1 else x_eval, verbose=0)
    calib_rows = common.sample_rows(train, settings.calib_n, seed)
    calib = {
        name: common.prepare_rows(calib_rows, s, "Preparing calibration fields")
        for name, s in zip(names, specs)
        if int8
    }
    shared = common.common_manifest(
        keras_path,
        split_csv,
        classes,
        spec,
        settings.uncertain_threshold,
        calib_rows,
        {"framework": "keras", "arch": record.get("arch")},
    )
    meta = {"names": classes, "preprocess": spec.to_dict(), "inputs": names}
    job = _Export(
        model, keras_path.parent.name, spec, settings, names, x_eval, y_eval, keras_probs, calib,
        shared={**shared, "inputs": names}, meta={**meta, "output": "probabilities"},
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp = Path(tmp)
        if "tflite" in to:
            model.export(str(tmp / "saved_model"), verbose=False)
        staged, reports = {}, {}
        for fmt in to:
            bundles, report = _format_bundles(job, fmt, tmp)
            staged |= bundles
            if report is not None:
                reports[f"fidelity-{fmt}"] = report
        return common.replace_outputs(
            out_dir,
            staged,
            reports,
            [bundle_name(f, p) for f in FORMATS for p in ("fp32", "int8")],
            [f"fidelity-{f}" for f in FORMATS],
        )
