"""Shared steps of the bundle exporters (``export.yolo``, ``export.keras``).

Calibration (train split) and evaluation (val split) fields go through
``leukedge.edge.preprocess.prepare``, exactly as on the station. A model entry
of a manifest describes the model file: ``file``, ``format`` (onnx, tflite),
``precision``, ``input`` (``name``, ``shape``, ``layout``, ``dtype``, and
``quantization`` {scale, zero_point} for an integer input; a list of these for
a multi-input model, in the file's input order), ``quantization`` (the
settings, None for fp32), ``output`` and ``outputs`` (the file's output names:
"probabilities", and "features" where ``export.features`` could add them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukedge.data.split import Row, read_split
from leukedge.edge.bundle import sha256_file
from leukedge.edge.imageio import read_field
from leukedge.edge.pipeline import ood_reference
from leukedge.edge.preprocess import Preprocess, prepare
from leukedge.errors import DataError
from leukedge.evaluation.metrics import accuracy
from leukedge.progress import progress_bar
from leukedge.training.runs import find_run_config

from .features import add_feature_output, model_outputs
from .fidelity import fidelity, model_probs, to_markdown
from .quantize_onnx import quantize_onnx

DEFAULT_UNCERTAIN_THRESHOLD = 0.6


@dataclass(frozen=True)
class ExportSettings:
    """What every family's exporter takes besides the model and its preprocessing.

    split_csv : the split the model was trained on; ``calib_n`` random train fields
        (drawn with ``seed``) calibrate INT8, the ``eval_split`` fields evaluate.
    int8 : also write INT8 bundles and their fidelity reports.
    uncertain_threshold : the bundles' top-probability threshold for "uncertain".
    onnx_int8 : ``quantize_onnx`` settings (per_channel, activation, weight, method).
    """

    split_csv: Path
    int8: bool = True
    calib_n: int = 300
    eval_split: str = "val"
    uncertain_threshold: float = DEFAULT_UNCERTAIN_THRESHOLD
    seed: int = 0
    onnx_int8: dict = field(default_factory=dict)


#: Pinned ONNX opset (ONNX Runtime and tf2onnx both read it).
ONNX_OPSET = 17
#: Folds of the cross-fitted trust figures (``export.trust``, ``export.magnification``): each
#: training field is scored by figures fitted without its fold.
FOLDS = 5


def held_out_folds(groups: Sequence[int]) -> np.ndarray:
    """int (N,) fold of each training field: its duplicate group modulo ``FOLDS``, so copies
    of a field share one and never score each other."""
    return np.asarray(groups) % FOLDS


def prepare_rows(rows: Sequence[Row], spec: Preprocess, description: str) -> np.ndarray:
    """Read and ``prepare`` the rows' fields: float32 (N, ...) in the model's layout."""
    return np.stack([prepare(read_field(r.path), spec) for r in progress_bar(rows, description)])


def export_rows(split_csv: Path, eval_split: str, int8: bool) -> tuple[list[Row], list[Row]]:
    """(rows of ``eval_split``, train rows) of a split; ``ValueError`` if a needed one is empty."""
    rows = read_split(split_csv)
    evaluate = [r for r in rows if r.split == eval_split]
    train = [r for r in rows if r.split == "train"]
    if not evaluate:
        raise DataError(f"{split_csv}: no {eval_split} rows to evaluate the export on")
    if int8 and not train:
        raise DataError(f"{split_csv}: no train rows to calibrate INT8 on")
    return evaluate, train


def sample_rows(rows: Sequence[Row], n: int, seed: int) -> list[Row]:
    """``n`` rows drawn without replacement (all when there are fewer), in file order."""
    if len(rows) <= n:
        return list(rows)
    keep = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    return [rows[i] for i in sorted(keep)]


def class_indices(rows: Sequence[Row], classes: Sequence[str]) -> np.ndarray:
    """int64 (N,) output index of each row's label."""
    unknown = sorted({r.label for r in rows} - set(classes))
    if unknown:
        raise DataError(f"label(s) {unknown} of the split are not model classes {list(classes)}")
    return np.array([list(classes).index(r.label) for r in rows], np.int64)


def set_metadata(model, items: dict[str, str]) -> None:
    """Set (replace or add) string ``metadata_props`` of an ``onnx.ModelProto``."""
    keep = [p for p in model.metadata_props if p.key not in items]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in items.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def onnx_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}


def _onnx_inputs(path: Path) -> list[dict]:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    return [
        {
            "name": inp.name,
            "shape": [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim],
            "dtype": np.dtype(tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)).name,
        }
        for inp in onnx.load(str(path)).graph.input
    ]


def _tflite_inputs(path: Path) -> list[dict]:
    from leukedge.edge.backends import LiteRTBackend

    entries = []
    for d in LiteRTBackend(path).interpreter.get_input_details():
        entry = {
            "name": d["name"],
            "shape": [int(s) for s in d["shape_signature"]],
            "dtype": np.dtype(d["dtype"]).name,
        }
        scale, zero = d["quantization"]
        if scale:
            entry["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        entries.append(entry)
    return entries


def model_entry(path: Path, spec: Preprocess, precision: str, quantization: dict | None) -> dict:
    """The manifest's ``model`` entry for an .onnx or .tflite file (see the module doc)."""
    fmt = path.suffix.lstrip(".")
    inputs = [
        {"name": e["name"], "shape": e["shape"], "layout": spec.layout, **e}
        for e in (_onnx_inputs(path) if fmt == "onnx" else _tflite_inputs(path))
    ]
    return {
        "file": path.name,
        "format": fmt,
        "precision": precision,
        "input": inputs[0] if len(inputs) == 1 else inputs,
        "quantization": quantization,
        "output": "probabilities",
        "outputs": model_outputs(path),
    }


def quantize_onnx_model(fp32: Path, dst: Path, calibration: np.ndarray, seed: int, **settings):
    """Calibrate on float32 (N, ...) ``calibration`` (train fields drawn with ``seed``), write
    the INT8 model to ``dst`` and return its settings for the manifest."""
    quantize_onnx(fp32, dst, calibration, **settings)
    return {
        **json.loads(onnx_metadata(dst)["leukedge.quantization"]),
        "calibration_split": "train",
        "calibration_n": len(calibration),
        "calibration_seed": seed,
    }


def evaluate_models(
    fp32: Path,
    int8: Path | None,
    x: np.ndarray | Sequence[np.ndarray],
    y: np.ndarray,
    split: str,
    bundle_names: tuple[str, str],
    quantization: dict | None,
) -> tuple[dict[str, dict], dict | None]:
    """Per-precision ``evaluation`` entries on a split, and the INT8 fidelity report (or None).

    The files first get their pooled-feature output where they have pooled features
    (``export.features``; the probabilities stay as they are), so the report describes the
    files as shipped.
    x : the split's preprocessed input(s); y : int64 (N,) class indices.
    """
    for path in (fp32, int8):
        if path is not None:
            add_feature_output(path, required=False)
    base = {"split": split, "n": len(y)}
    if int8 is None:
        return {"fp32": {**base, "accuracy": accuracy(y, model_probs(fp32)(x))}}, None
    report = {**base, **fidelity(fp32, int8, x, y), "quantization": quantization}
    report["reference"]["bundle"], report["candidate"]["bundle"] = bundle_names
    evaluation = {
        "fp32": {**base, "accuracy": report["reference"]["accuracy"]},
        "int8": {**base, "accuracy": report["candidate"]["accuracy"], "fidelity": report},
    }
    return evaluation, report


def common_manifest(
    weights: Path,
    split_csv: Path,
    classes: Sequence[str],
    spec: Preprocess,
    uncertain: float,
    reference_rows: Sequence[Row],
    training: dict,
) -> dict:
    """Manifest entries shared by a model's bundles: ``ood`` from ``reference_rows``'
    fields, ``training`` = ``training`` plus the weights file and the run record."""
    return {
        "classes": list(classes),
        "preprocess": spec.to_dict(),
        "uncertain_threshold": uncertain,
        "ood": ood_reference(read_field(r.path) for r in reference_rows)
        if reference_rows
        else None,
        "training": {
            **training,
            "weights": weights.name,
            "weights_sha256": sha256_file(weights),
            "run": find_run_config(weights),
        },
        "data_manifest": split_csv.name,
        "data_manifest_sha256": sha256_file(split_csv),
    }


def replace_outputs(
    out_dir: Path,
    staged: dict[str, Path],
    reports: dict[str, dict],
    bundle_names: Sequence[str],
    report_stems: Sequence[str],
) -> dict[str, Path]:
    """Move staged bundle folders into ``out_dir`` and write each report (stem -> report) as
    ``stem.json`` and ``stem.md``, after removing the bundles and reports of an earlier
    export (``bundle_names``, ``report_stems``): left alone they could describe another model.
    """
    for name in bundle_names:
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for stem in report_stems:
        for suffix in (".json", ".md"):
            (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    bundles = {k: Path(shutil.move(folder, out_dir / folder.name)) for k, folder in staged.items()}
    for stem, report in reports.items():
        (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / f"{stem}.md").write_text(to_markdown(report))
    return bundles
