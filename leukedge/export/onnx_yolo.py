"""FP32 ONNX export of a YOLO classifier through Ultralytics' exporter.

The ONNX model takes ``images`` float32 (1, 3, S, S) preprocessed as in
``leukedge.training.yolo`` and returns ``output0`` float32 (1, n_classes)
softmax probabilities. Metadata (``metadata_props``): Ultralytics' own keys,
``names`` replaced by a JSON list of class names in output order,
``leukedge.preprocess`` (JSON, ``PREPROCESS`` plus ``imgsz``) and
``leukedge.output`` = ``"probabilities"``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from leukedge.offline import ensure_offline
from leukedge.training.yolo import PREPROCESS

#: Pinned ONNX opset (ONNX Runtime and onnx2tf/tf2onnx all read it).
ONNX_OPSET = 17

#: Largest accepted |ONNX - PyTorch| probability difference in ``verify_onnx``.
VERIFY_ATOL = 1e-4


def set_metadata(model, items: dict[str, str]) -> None:
    """Set (replace or add) string ``metadata_props`` of an ``onnx.ModelProto``."""
    keep = [p for p in model.metadata_props if p.key not in items]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in items.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


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
    opset: int = ONNX_OPSET,
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
        raise FileNotFoundError(f"{pt_path} not found (nothing is downloaded)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{pt_path.stem}.onnx"

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # Ultralytics writes next to the .pt
        pt_copy = Path(tmp) / pt_path.name
        shutil.copyfile(pt_path, pt_copy)
        model = YOLO(str(pt_copy))
        if model.task != "classify":
            raise ValueError(f"{pt_path}: task {model.task!r}, expected 'classify'")
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
    set_metadata(
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
