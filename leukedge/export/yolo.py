"""A trained YOLO classifier -> fp32 and INT8 ONNX model bundles with a fidelity report.

``export_yolo_onnx`` exports the fp32 ONNX file through Ultralytics' exporter (opset
``ONNX_OPSET``, batch 1): ``images`` float32 (1, 3, S, S) preprocessed as in
``leukedge.training.yolo`` in, ``output0`` float32 (1, n_classes) softmax probabilities out;
its ``metadata_props`` hold Ultralytics' keys, ``names`` (a JSON list of class names in
output order), ``leukedge.preprocess`` and ``leukedge.output`` = "probabilities".
``export_yolo_bundles`` writes, under ``out_dir``:

- ``yolo-onnx-fp32/`` and ``yolo-onnx-int8/``: ``model.onnx`` and a
  ``leukedge.json`` manifest each (``leukedge.edge.bundle``);
- ``fidelity.json`` and ``fidelity.md``: INT8 against fp32 on the evaluation split.

Calibration (train split) and evaluation (val split) fields go through
``leukedge.edge.preprocess.prepare``, exactly as on the station.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leukedge.edge.bundle import write_manifest
from leukedge.edge.preprocess import Preprocess
from leukedge.errors import MissingFileError, ModelError, UsageError
from leukedge.offline import ensure_offline
from leukedge.training.runs import RUN_CONFIG, find_run_config
from leukedge.training.yolo import PREPROCESS

from . import common
from .common import ExportSettings
from .selftest import add_self_test

FORMATS = ("onnx",)
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


def recorded_preprocess(pt_path: str | Path) -> dict:
    """What the model was trained on: the run record's preprocessing, else (a checkpoint
    trained outside leukedge) the whole field at ``args.yaml``'s size."""
    recorded = (find_run_config(pt_path) or {}).get("preprocess")
    size = training_config(pt_path).get("imgsz", 224)
    return recorded or Preprocess(input_mode="field", size=size).to_dict()


#: Largest accepted |ONNX - PyTorch| probability difference in ``verify_onnx``.
VERIFY_ATOL = 1e-4


def verify_onnx(pt_path: str | Path, onnx_path: str | Path, n: int = 4, seed: int = 0) -> float:
    """Max |ONNX Runtime - PyTorch| probability over ``n`` random inputs in [0, 1)."""
    ensure_offline()
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    net = YOLO(str(pt_path)).model.float().eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(seed).random((n, *inp.shape[1:]), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    out = np.concatenate([sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(n)])
    return float(np.abs(out - ref).max())


def export_yolo_onnx(
    pt_path: str | Path,
    out_dir: str | Path,
    *,
    imgsz: int = 224,
    opset: int = common.ONNX_OPSET,
    verify: bool = True,
) -> Path:
    """Export a classification ``.pt`` to ``out_dir/<stem>.onnx`` (fp32, batch 1).

    Simplified with onnxslim when installed. With ``verify``, raises
    ``RuntimeError`` if ``verify_onnx`` exceeds ``VERIFY_ATOL``.
    """
    ensure_offline()
    import onnx
    from ultralytics import YOLO

    pt_path = Path(pt_path).resolve()
    if not pt_path.is_file():
        raise MissingFileError(f"{pt_path} not found (nothing is downloaded)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{pt_path.stem}.onnx"

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # Ultralytics writes next to the .pt
        pt_copy = Path(tmp) / pt_path.name
        shutil.copyfile(pt_path, pt_copy)
        model = YOLO(str(pt_copy))
        if model.task != "classify":
            raise ModelError(f"{pt_path}: task {model.task!r}, expected 'classify'")
        names = [model.names[i] for i in range(len(model.names))]
        exported = model.export(
            format="onnx",
            imgsz=imgsz,
            opset=opset,
            simplify=importlib.util.find_spec("onnxslim") is not None,
            dynamic=False,
            quantize=None,  # fp32
            batch=1,
            device="cpu",
        )
        shutil.move(exported, dst)

    proto = onnx.load(str(dst))
    common.set_metadata(
        proto,
        {
            "names": json.dumps(names),
            "leukedge.preprocess": json.dumps({**PREPROCESS, "imgsz": imgsz}),
            "leukedge.output": "probabilities",
        },
    )
    onnx.save(proto, str(dst))
    if verify and (diff := verify_onnx(pt_path, dst)) > VERIFY_ATOL:
        raise RuntimeError(f"{dst}: ONNX and PyTorch probabilities differ by {diff:.2e}")
    return dst


def _check_preprocess(spec: Preprocess) -> None:
    """Ultralytics classifiers take RGB / 255, channels first, no mean/std."""
    if spec.layout != "NCHW" or not (
        math.isclose(spec.scale, 1 / 255) and math.isclose(spec.offset, 0.0, abs_tol=1e-12)
    ):
        raise ModelError(
            "YOLO classifiers take RGB / 255 channels first (layout NCHW, scale 1/255, offset 0); "
            f"preprocess has layout {spec.layout}, scale {spec.scale}, offset {spec.offset}"
        )


def export_yolo_bundles(
    pt_path: str | Path,
    out_dir: str | Path,
    spec: Preprocess,
    settings: ExportSettings,
    to: Sequence[str] = FORMATS,
) -> dict[str, Path]:
    """Export a YOLO classification ``.pt`` to ONNX bundles; returns {"fp32": dir, "int8": dir}.

    pt_path : Ultralytics classification checkpoint (``weights/best.pt``).
    spec : what the model was trained on (input mode, size); layout NCHW, scale
        1/255, offset 0. ``spec.size`` is the ONNX input size.
    to : formats; "onnx" only (TFLite export of YOLO models is not implemented).

    Each manifest's ``training`` holds Ultralytics' ``args.yaml`` and the
    ``leukedge_train.json`` run record (``leukedge.training.runs``) when found,
    its ``evaluation`` the accuracy on ``settings.eval_split`` (INT8: and the fidelity
    report). Bundles and fidelity files already in ``out_dir`` are replaced
    (the INT8 ones removed without ``settings.int8``: they would describe another model).
    """
    if unknown := sorted(set(to) - set(FORMATS)):
        raise UsageError(
            f"{unknown}: YOLO models export to ONNX only (TFLite export of YOLO models is not "
            "implemented); export --to onnx, which the station runs as well"
        )
    _check_preprocess(spec)
    pt_path, out_dir, split_csv = Path(pt_path), Path(out_dir), Path(settings.split_csv)
    int8, eval_split, seed = settings.int8, settings.eval_split, settings.seed
    evaluate, train = common.export_rows(split_csv, eval_split, int8)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = {
            "fp32": Path(tmp) / FP32_BUNDLE,
            **({"int8": Path(tmp) / INT8_BUNDLE} if int8 else {}),
        }
        models = {k: folder / MODEL_FILE for k, folder in staged.items()}
        staged["fp32"].mkdir()
        shutil.move(export_yolo_onnx(pt_path, tmp, imgsz=spec.size), models["fp32"])
        classes = json.loads(common.onnx_metadata(models["fp32"])["names"])
        x_eval = common.prepare_rows(evaluate, spec, f"Preparing {eval_split} fields")
        y_eval = common.class_indices(evaluate, classes)
        calib = common.sample_rows(train, settings.calib_n, seed)
        quantization = {"fp32": None}
        if int8:
            quantization["int8"] = common.quantize_onnx_model(
                models["fp32"],
                models["int8"],
                common.prepare_rows(calib, spec, "Preparing calibration fields"),
                seed,
                **settings.onnx_int8,
            )
        evaluation, report = common.evaluate_models(
            models["fp32"],
            models.get("int8"),
            x_eval,
            y_eval,
            eval_split,
            (FP32_BUNDLE, INT8_BUNDLE),
            quantization.get("int8"),
        )
        shared = common.common_manifest(
            pt_path,
            split_csv,
            classes,
            spec,
            settings.uncertain_threshold,
            calib,
            {"framework": "ultralytics", "args": training_config(pt_path)},
        )
        for precision, folder in staged.items():
            model = common.model_entry(models[precision], spec, precision, quantization[precision])
            manifest = {"name": f"{run_name(pt_path)}-{folder.name}", **shared, "model": model}
            write_manifest(folder, {**manifest, "evaluation": evaluation[precision]})
            add_self_test(folder)
        return common.replace_outputs(
            out_dir,
            staged,
            {"fidelity": report} if report else {},
            (FP32_BUNDLE, INT8_BUNDLE),
            ("fidelity",),
        )
