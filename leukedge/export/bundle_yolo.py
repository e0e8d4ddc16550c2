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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leukedge.edge.bundle import sha256_file, write_manifest
from leukedge.edge.imageio import read_field
from leukedge.edge.pipeline import ood_reference
from leukedge.edge.preprocess import Preprocess, prepare
from leukedge.progress import progress_bar
from leukedge.training.runs import find_run_config
from leukedge.training.split import Row, read_split

from ..training.metrics import accuracy
from .fidelity import fidelity, model_probs, to_markdown
from .onnx_yolo import export_yolo_onnx
from .quantize_onnx import quantize_onnx

FP32_BUNDLE = "yolo-onnx-fp32"
INT8_BUNDLE = "yolo-onnx-int8"
MODEL_FILE = "model.onnx"
DEFAULT_UNCERTAIN_THRESHOLD = 0.6


def run_dir(pt_path: str | Path) -> Path:
    """The training run folder of a ``.pt`` (the folder above ``weights/``, else its own)."""
    pt_path = Path(pt_path).resolve()
    return pt_path.parent.parent if pt_path.parent.name == "weights" else pt_path.parent


def training_config(pt_path: str | Path) -> dict:
    """Ultralytics' ``args.yaml`` of the run that produced ``pt_path`` ({} if there is none)."""
    import yaml

    for folder in (Path(pt_path).resolve().parent, run_dir(pt_path)):
        if (folder / "args.yaml").is_file():
            return yaml.safe_load((folder / "args.yaml").read_text()) or {}
    return {}


def prepare_rows(rows: Sequence[Row], spec: Preprocess, description: str) -> np.ndarray:
    """Read and ``prepare`` the rows' fields: float32 (N, ...) in the model's layout."""
    return np.stack([prepare(read_field(r.path), spec) for r in progress_bar(rows, description)])


def _check_preprocess(spec: Preprocess) -> None:
    """Ultralytics classifiers take RGB / 255, channels first, no mean/std."""
    if spec.layout != "NCHW" or not (
        math.isclose(spec.scale, 1 / 255) and math.isclose(spec.offset, 0.0, abs_tol=1e-12)
    ):
        raise ValueError(
            "YOLO classifiers take RGB / 255 channels first (layout NCHW, scale 1/255, offset 0); "
            f"preprocess has layout {spec.layout}, scale {spec.scale}, offset {spec.offset}"
        )


def _sample(rows: Sequence[Row], n: int, seed: int) -> list[Row]:
    """``n`` rows drawn without replacement (all when there are fewer), in file order."""
    if len(rows) <= n:
        return list(rows)
    keep = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    return [rows[i] for i in sorted(keep)]


def _class_indices(rows: Sequence[Row], classes: Sequence[str]) -> np.ndarray:
    """int64 (N,) output index of each row's label."""
    unknown = sorted({r.label for r in rows} - set(classes))
    if unknown:
        raise ValueError(f"label(s) {unknown} of the split are not model classes {list(classes)}")
    return np.array([classes.index(r.label) for r in rows], np.int64)


def onnx_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}


def _model_entry(onnx_path: Path, spec: Preprocess, precision: str, quantization) -> dict:
    import onnx

    inp = onnx.load(str(onnx_path)).graph.input[0]
    return {
        "file": MODEL_FILE,
        "format": "onnx",
        "precision": precision,
        "input": {
            "name": inp.name,
            "shape": [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim],
            "layout": spec.layout,
            "dtype": "float32",
        },
        "quantization": quantization,
        "output": "probabilities",
    }


def _quantize(fp32: Path, dst: Path, calib: Sequence[Row], spec: Preprocess, seed: int, **settings):
    """Calibrate on ``calib`` and write the INT8 model to ``dst``; returns its settings."""
    quantize_onnx(fp32, dst, prepare_rows(calib, spec, "Preparing calibration fields"), **settings)
    return {
        **json.loads(onnx_metadata(dst)["leukedge.quantization"]),
        "calibration_split": "train",
        "calibration_n": len(calib),
        "calibration_seed": seed,
    }


def _common_manifest(
    pt_path: Path,
    split_csv: Path,
    classes: list[str],
    spec: Preprocess,
    uncertain: float,
    reference_rows: Sequence[Row],
) -> dict:
    """Manifest entries shared by the fp32 and INT8 bundles (``ood`` from ``reference_rows``)."""
    return {
        "classes": classes,
        "preprocess": spec.to_dict(),
        "uncertain_threshold": uncertain,
        "ood": ood_reference(read_field(r.path) for r in reference_rows)
        if reference_rows
        else None,
        "training": {
            "framework": "ultralytics",
            "weights": pt_path.name,
            "weights_sha256": sha256_file(pt_path),
            "args": training_config(pt_path),
            "run": find_run_config(pt_path),
        },
        "data_manifest": split_csv.name,
        "data_manifest_sha256": sha256_file(split_csv),
    }


def _replace_outputs(
    out_dir: Path, staged: dict[str, Path], report: dict | None
) -> dict[str, Path]:
    """Move staged bundles into ``out_dir``, replacing earlier bundles and fidelity files."""
    for name in (FP32_BUNDLE, INT8_BUNDLE):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("fidelity.json", "fidelity.md"):
        (out_dir / name).unlink(missing_ok=True)
    bundles = {k: Path(shutil.move(folder, out_dir / folder.name)) for k, folder in staged.items()}
    if report is not None:
        (out_dir / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "fidelity.md").write_text(to_markdown(report))
    return bundles


def export_yolo_bundle(
    pt_path: str | Path,
    out_dir: str | Path,
    *,
    split_csv: str | Path,
    preprocess: Preprocess,
    int8: bool = True,
    calib_n: int = 300,
    per_channel: bool = False,
    activation: str = "uint8",
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
    rows = read_split(split_csv)
    evaluate = [r for r in rows if r.split == eval_split]
    train = [r for r in rows if r.split == "train"]
    if not evaluate:
        raise ValueError(f"{split_csv}: no {eval_split} rows to evaluate the export on")
    if int8 and not train:
        raise ValueError(f"{split_csv}: no train rows to calibrate INT8 on")
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
        y_eval = _class_indices(evaluate, classes)
        base = {"split": eval_split, "n": len(evaluate)}
        quantization, report = {"fp32": None}, None
        if int8:
            quantization["int8"] = _quantize(
                models["fp32"],
                models["int8"],
                _sample(train, calib_n, seed),
                preprocess,
                seed,
                per_channel=per_channel,
                activation=activation,
                weight=weight,
                method=method,
            )
            report = {
                **base,
                **fidelity(models["fp32"], models["int8"], x_eval, y_eval),
                "quantization": quantization["int8"],
            }
            report["reference"]["bundle"], report["candidate"]["bundle"] = FP32_BUNDLE, INT8_BUNDLE
            evaluation = {
                "fp32": {**base, "accuracy": report["reference"]["accuracy"]},
                "int8": {**base, "accuracy": report["candidate"]["accuracy"], "fidelity": report},
            }
        else:
            fp32_probs = model_probs(models["fp32"])(x_eval)
            evaluation = {"fp32": {**base, "accuracy": accuracy(y_eval, fp32_probs)}}

        common = _common_manifest(
            pt_path,
            split_csv,
            classes,
            preprocess,
            uncertain_threshold,
            _sample(train, calib_n, seed),
        )
        for precision, folder in staged.items():
            model = _model_entry(models[precision], preprocess, precision, quantization[precision])
            manifest = {"name": f"{run_dir(pt_path).name}-{folder.name}", **common, "model": model}
            write_manifest(folder, {**manifest, "evaluation": evaluation[precision]})
        return _replace_outputs(out_dir, staged, report)
