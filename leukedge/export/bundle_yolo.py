"""A trained YOLO classifier -> fp32 and INT8 ONNX model bundles with a fidelity report.

``export_yolo_bundle`` writes, under ``out_dir``:

- ``yolo-onnx-fp32/`` and ``yolo-onnx-int8/``: ``model.onnx`` and a
  ``leukedge.json`` manifest each (``leukedge.edge.bundle``);
- ``fidelity.json`` and ``fidelity.md``: INT8 against fp32 on the evaluation split.

Calibration (train split) and evaluation (val split) fields go through
``leukedge.edge.preprocess.prepare``, exactly as on the station.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from leukedge.edge.bundle import write_manifest
from leukedge.edge.preprocess import Preprocess
from leukedge.training.runs import RUN_CONFIG

from .bundles import (
    DEFAULT_UNCERTAIN_THRESHOLD,
    class_indices,
    common_manifest,
    evaluate_models,
    export_rows,
    model_entry,
    onnx_metadata,
    prepare_rows,
    quantize_onnx_model,
    replace_outputs,
    sample_rows,
)
from .onnx_yolo import export_yolo_onnx
from .selftest import add_self_test

FP32_BUNDLE = "yolo-onnx-fp32"
INT8_BUNDLE = "yolo-onnx-int8"
MODEL_FILE = "model.onnx"


def run_dir(pt_path: str | Path) -> Path:
    """The training run folder of a ``.pt`` (the folder above ``weights/``, else its own)."""
    pt_path = Path(pt_path).resolve()
    return pt_path.parent.parent if pt_path.parent.name == "weights" else pt_path.parent


def run_name(pt_path: str | Path) -> str:
    """The run's name: the ``leukedge train yolo --out`` folder that holds Ultralytics'
    run folder, else Ultralytics' run folder."""
    folder = run_dir(pt_path)
    return folder.parent.name if (folder.parent / RUN_CONFIG).is_file() else folder.name


def training_config(pt_path: str | Path) -> dict:
    """Ultralytics' ``args.yaml`` of the run that produced ``pt_path`` ({} if there is none)."""
    import yaml

    for folder in (Path(pt_path).resolve().parent, run_dir(pt_path)):
        if (folder / "args.yaml").is_file():
            return yaml.safe_load((folder / "args.yaml").read_text()) or {}
    return {}


def _check_preprocess(spec: Preprocess) -> None:
    """Ultralytics classifiers take RGB / 255, channels first, no mean/std."""
    if spec.layout != "NCHW" or not (
        math.isclose(spec.scale, 1 / 255) and math.isclose(spec.offset, 0.0, abs_tol=1e-12)
    ):
        raise ValueError(
            "YOLO classifiers take RGB / 255 channels first (layout NCHW, scale 1/255, offset 0); "
            f"preprocess has layout {spec.layout}, scale {spec.scale}, offset {spec.offset}"
        )


def export_yolo_bundle(
    pt_path: str | Path,
    out_dir: str | Path,
    *,
    split_csv: str | Path,
    preprocess: Preprocess,
    int8: bool = True,
    calib_n: int = 300,
    per_channel: bool = False,
    activation: str = "int8",
    weight: str = "int8",
    method: str = "minmax",
    eval_split: str = "val",
    uncertain_threshold: float = DEFAULT_UNCERTAIN_THRESHOLD,
    seed: int = 0,
) -> dict[str, Path]:
    """Export a YOLO classification ``.pt`` to ONNX bundles; returns {"fp32": dir, "int8": dir}.

    pt_path : Ultralytics classification checkpoint (``weights/best.pt``).
    split_csv : the split the model was trained on; ``calib_n`` random train
        fields (seeded) calibrate INT8, the ``eval_split`` fields evaluate.
    preprocess : what the model was trained on (input mode, size); layout
        NCHW, scale 1/255, offset 0. ``preprocess.size`` is the ONNX input size.
    int8 : also write the INT8 bundle and ``fidelity.json``/``fidelity.md``.
    per_channel, activation, weight, method : ``quantize_onnx`` settings.

    Each manifest's ``training`` holds Ultralytics' ``args.yaml`` and the
    ``leukedge_train.json`` run record (``leukedge.training.runs``) when found,
    its ``evaluation`` the accuracy on ``eval_split`` (INT8: and the fidelity
    report). Bundles and fidelity files already in ``out_dir`` are replaced
    (the INT8 ones removed when ``int8`` is False: they would describe another
    model).
    """
    _check_preprocess(preprocess)
    pt_path, split_csv, out_dir = Path(pt_path), Path(split_csv), Path(out_dir)
    evaluate, train = export_rows(split_csv, eval_split, int8)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = {
            "fp32": Path(tmp) / FP32_BUNDLE,
            **({"int8": Path(tmp) / INT8_BUNDLE} if int8 else {}),
        }
        models = {k: folder / MODEL_FILE for k, folder in staged.items()}
        staged["fp32"].mkdir()
        shutil.move(export_yolo_onnx(pt_path, tmp, imgsz=preprocess.size), models["fp32"])
        classes = json.loads(onnx_metadata(models["fp32"])["names"])
        x_eval = prepare_rows(evaluate, preprocess, f"Preparing {eval_split} fields")
        y_eval = class_indices(evaluate, classes)
        calib = sample_rows(train, calib_n, seed)
        quantization = {"fp32": None}
        if int8:
            quantization["int8"] = quantize_onnx_model(
                models["fp32"],
                models["int8"],
                prepare_rows(calib, preprocess, "Preparing calibration fields"),
                seed,
                per_channel=per_channel,
                activation=activation,
                weight=weight,
                method=method,
            )
        evaluation, report = evaluate_models(
            models["fp32"],
            models.get("int8"),
            x_eval,
            y_eval,
            eval_split,
            (FP32_BUNDLE, INT8_BUNDLE),
            quantization.get("int8"),
        )
        common = common_manifest(
            pt_path,
            split_csv,
            classes,
            preprocess,
            uncertain_threshold,
            calib,
            {"framework": "ultralytics", "args": training_config(pt_path)},
        )
        for precision, folder in staged.items():
            model = model_entry(models[precision], preprocess, precision, quantization[precision])
            manifest = {"name": f"{run_name(pt_path)}-{folder.name}", **common, "model": model}
            write_manifest(folder, {**manifest, "evaluation": evaluation[precision]})
            add_self_test(folder)
        return replace_outputs(
            out_dir,
            staged,
            {"fidelity": report} if report else {},
            (FP32_BUNDLE, INT8_BUNDLE),
            ("fidelity",),
        )
