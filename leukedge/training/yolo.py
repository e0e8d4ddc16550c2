"""Ultralytics YOLO classification: ImageFolder from a split.csv, offline training.

Ultralytics is imported inside the functions, after ``ensure_offline()``.

Inference preprocessing
-----------------------
What Ultralytics 8.4 does for ``task="classify"`` at predict time
(``ClassificationPredictor`` with ``data/augment.py:classify_transforms(S)``;
validation uses the same transforms), for a square ``imgsz`` S. A standalone
runner must reproduce it (``classify_preprocess`` is the reference):

1. Resize: torchvision ``Resize(S)`` on a PIL image, i.e. Pillow
   ``Image.resize((w, h), BILINEAR)`` (antialiased when shrinking). The
   shorter side becomes S, the longer ``int(S * long / short)`` (floored);
   an image whose shorter side already is S is not resampled.
2. Centre crop S x S at ``top = round((h - S) / 2)``,
   ``left = round((w - S) / 2)`` (Python ``round``: halves to even).
3. RGB channel order, HWC -> CHW, float32 divided by 255; mean (0, 0, 0) and
   std (1, 1, 1), i.e. no mean/std normalisation.

The exported network takes ``images`` float32 (N, 3, S, S) and returns
``output0`` float32 (N, n_classes) softmax probabilities. Class i is the i-th
class folder name in sorted order (for ``CLASSES`` that is their own order).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from ..data.balance import apply_aug, balance_rows
from ..data.split import SPLITS, read_split
from ..edge.imageio import read_field, write_field
from ..edge.model import _softmax
from ..edge.preprocess import Preprocess, prepare, view
from ..errors import DataError, MissingFileError, UsageError
from ..evaluation.evaluate import Predictor
from ..offline import ensure_offline
from ..progress import progress_bar
from .jitter import Jitter, dihedral, jitter
from .runs import epoch_score, find_run_config, write_run_config

#: Ultralytics classify preprocessing (see the module docstring), for model metadata.
PREPROCESS: dict[str, object] = {
    "resize": "shorter_side",
    "interpolation": "pil_bilinear",
    "crop": "center",
    "channels": "RGB",
    "layout": "NCHW",
    "scale": 1 / 255,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}


def classify_preprocess(rgb: np.ndarray, imgsz: int = 224) -> np.ndarray:
    """Ultralytics' classify preprocessing of an RGB uint8 (H, W, 3) field.

    Returns float32 (1, 3, imgsz, imgsz), RGB, values in [0, 1].
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    if min(h, w) != imgsz:
        long = int(imgsz * max(h, w) / min(h, w))
        size = (imgsz, long) if w <= h else (long, imgsz)  # PIL (width, height)
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        h, w = rgb.shape[:2]
    top, left = int(round((h - imgsz) / 2.0)), int(round((w - imgsz) / 2.0))
    crop = rgb[top : top + imgsz, left : left + imgsz]
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], np.float32) / 255


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other file system, or links not allowed
        shutil.copyfile(src, dst)


def build_imagefolder(
    split_csv: str | Path,
    out_dir: str | Path,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    balance: bool = False,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    copies: int = 0,
    turns: bool = False,
    seed: int = 0,
) -> Path:
    """Write the ImageFolder tree Ultralytics classification trains on.

    Reads ``split_csv`` (``leukedge.data.split.read_split``) and writes
    ``out_dir/<split>/<label>/`` for each split present (train required; val,
    test optional). Every split gets a folder for every label, empty or not,
    so class indices agree. Existing ``out_dir/<split>`` trees and Ultralytics
    ``<split>.cache`` files are replaced.

    Without ``preprocess`` files are hard links (copies across file systems).
    With ``preprocess(rgb uint8 (H, W, 3)) -> rgb uint8 (h, w, 3)`` they are
    PNGs of what the model sees, and the training split can be enlarged:
    ``balance`` adds flipped copies of the smaller classes up to the largest
    (``balance_rows``), and ``augment(raw rgb, rng) -> rgb`` (stain and lamp
    jitter) adds ``copies`` jittered versions of every training field, applied
    to the raw field before ``preprocess``; ``turns`` gives each of those copies
    a random one of the 8 flips and quarter turns (``dihedral``: Ultralytics only
    flips, and a smear has no orientation). Validation and test are never
    augmented. Returns ``out_dir``.
    """
    rows = read_split(split_csv)
    splits = {r.split for r in rows}
    if unknown := splits - set(SPLITS):
        raise DataError(f"{split_csv}: unknown split(s) {sorted(unknown)}; use {SPLITS}")
    if "train" not in splits:
        raise DataError(f"{split_csv}: no train rows")
    if preprocess is None and (balance or augment is not None):
        raise ValueError("balancing and augmentation write new images: pass preprocess")
    labels = sorted({r.label for r in rows})

    out_dir = Path(out_dir)
    for split in SPLITS:
        shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / f"{split}.cache").unlink(missing_ok=True)
    for split in splits:
        for label in labels:
            (out_dir / split / label).mkdir(parents=True)
    train = [r for r in rows if r.split == "train"]
    rows = (balance_rows(train, seed) if balance else train) + [
        r for r in rows if r.split != "train"
    ]
    rng = np.random.default_rng(seed)
    for i, row in enumerate(progress_bar(rows, "Writing training images")):
        src = Path(row.path)
        folder = out_dir / row.split / row.label
        suffix = ".png" if preprocess else src.suffix
        stem = f"{src.stem}-{row.aug}" if row.aug else src.stem
        dst = folder / f"{stem}{suffix}"
        if dst.exists():  # same file name from another source folder
            dst = folder / f"{stem}-{i}{suffix}"
        if preprocess is None:
            _link_or_copy(src, dst)
            continue
        raw = apply_aug(read_field(src), row.aug)
        write_field(dst, preprocess(raw))
        if augment is not None and row.split == "train":
            for k in range(copies):
                seen = preprocess(augment(raw, rng))
                if turns:
                    seen = dihedral(seen, int(rng.integers(8)))
                write_field(dst.with_name(f"{dst.stem}-j{k}.png"), seen)
    return out_dir


def _arch_yaml(arch: str) -> str:
    """Architecture name or YAML path -> YAML Ultralytics builds from (never a .pt)."""
    if arch.endswith(".pt"):
        raise UsageError(f"arch={arch!r}: name an architecture (yolo11n-cls); .pt goes to weights=")
    return arch if arch.endswith((".yaml", ".yml")) else f"{arch}.yaml"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Ultralytics' classification augmentation as leukedge trains with it: its crop
# (area 0.5-1) and HSV colour jitter kept, RandAugment and random erasing off
# (erasing can wipe out the one blast a field shows; RandAugment's posterize,
# solarize and equalize are stain changes no microscope makes), vertical flips on
# (a smear has no up). Stain/lamp jitter is leukedge's own, on the raw field.
YOLO_AUG = {"auto_augment": None, "erasing": 0.0, "flipud": 0.5}


def _trainer():
    """Ultralytics' classification trainer, keeping as ``best.pt`` the epoch with the best
    ``epoch_score`` (its own fitness keeps the first epoch at the best top-1)."""
    from ultralytics.models.yolo.classify import ClassificationTrainer

    class Trainer(ClassificationTrainer):
        def validate(self):
            best = self.best_fitness
            metrics, fitness = super().validate()
            if metrics is not None:
                fitness = epoch_score(metrics["metrics/accuracy_top1"], metrics["val/loss"])
                self.best_fitness = fitness if best is None or best < fitness else best
            return metrics, fitness

    return Trainer


def train_yolo(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    arch: str = "yolo11n-cls",
    epochs: int = 30,
    imgsz: int = 224,
    batch: int = 32,
    seed: int = 0,
    workers: int = 0,
    device: str | int | None = None,
    weights: str | Path | None = None,
    threads: int | None = None,
    amp: bool | str | None = None,
    plots: bool | None = None,
    resume: bool = False,
    **train_args,
) -> Path:
    """Train a YOLO classifier offline; returns the path of ``best.pt``.

    data_dir : ImageFolder tree from ``build_imagefolder``.
    out_dir : run folder (``weights/best.pt``, ``results.csv``, plots).
    arch : architecture YAML shipped with Ultralytics (``yolo11n-cls``,
        ``yolov8n-cls``, ``yolo12n-cls``) or a YAML path; the model is built
        from it, never downloaded.
    device : None -> CUDA device 0 when available, else ``"cpu"``.
    weights : optional local ``.pt`` whose matching layers initialise the model.
    threads : CPU threads for torch (default: the CPUs this process may use).
    amp : None -> ``"bf16"`` on a bf16-capable GPU, else False; always False
        on CPU. True/"fp16" are refused: Ultralytics' AMP check downloads
        yolo26n.pt.
    plots : None -> only when ``ensure_offline`` placed a font.
    resume : continue an interrupted run from ``out_dir/weights/last.pt``.
    train_args : further Ultralytics train arguments (lr0, hsv_h, ...); they
        override ``YOLO_AUG``.

    Training is seeded and ``deterministic=True``.
    """
    env = ensure_offline()
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    data_dir = Path(data_dir).resolve()
    if not (data_dir / "train").is_dir():
        raise MissingFileError(f"{data_dir}: no train/ folder (see build_imagefolder)")
    if weights is not None:
        weights = Path(weights).resolve()
        if not weights.is_file():
            raise MissingFileError(f"weights {weights} not found (nothing is downloaded)")
    if device is None:
        device = 0 if torch.cuda.is_available() else "cpu"
    on_gpu = str(device) not in {"cpu", "mps"}
    if amp is None or not on_gpu:
        amp = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else False
    if amp is True or amp == "fp16":
        raise UsageError("amp=True/'fp16' runs Ultralytics' AMP check, which downloads yolo26n.pt")
    if plots is None:
        plots = env.font is not None
    elif plots and env.font is None:
        raise UsageError("plots=True needs a local TTF (Ultralytics would download Arial.ttf)")

    out_dir = Path(out_dir).resolve()
    args = {
        "data": str(data_dir),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "seed": seed,
        "deterministic": True,
        "workers": workers,
        "device": device,
        "amp": amp,
        "plots": plots,
        "pretrained": str(weights) if weights else False,
        "project": str(out_dir.parent),
        "name": out_dir.name,
        "exist_ok": True,
        **YOLO_AUG,
        **train_args,
    }
    # select_device() resets torch to Ultralytics' NUM_THREADS (min(8, cpu_count - 1)).
    saved = torch_utils.NUM_THREADS, torch.get_num_threads()
    torch_utils.NUM_THREADS = threads or _cpu_count()
    try:
        last = out_dir / "weights" / "last.pt"
        if resume and last.is_file():
            model = YOLO(str(last), task="classify")
            model.train(
                resume=True, trainer=_trainer(), **{k: args[k] for k in ("workers", "device")}
            )
        else:
            model = YOLO(_arch_yaml(arch), task="classify")
            model.train(trainer=_trainer(), **args)
    finally:
        torch_utils.NUM_THREADS = saved[0]
        torch.set_num_threads(saved[1])
    return Path(model.trainer.best)


def train_yolo_run(
    split_csv: str | Path,
    out: str | Path,
    *,
    spec: Preprocess,
    arch: str = "yolo11n-cls",
    epochs: int = 30,
    batch: int = 32,
    seed: int = 0,
    jitter_cfg: Jitter | None = Jitter(),
    copies: int = 2,
    turns: bool = False,
    flips: bool = True,
    crop: float = 0.5,
    ultralytics_colour: bool = True,
    balance: bool = True,
    lr: float | None = None,
    warmup: float = 3.0,
    weights: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
    workers: int = 0,
    resume: bool = False,
) -> Path:
    """A ``leukedge train yolo`` run: the ImageFolder of what the station sees
    (``build_imagefolder`` with ``spec``, balancing and ``copies`` stain/lamp-jittered copies
    of each training field), the run record, then ``train_yolo`` into ``out/train``.
    Returns the path of ``best.pt``.

    crop : Ultralytics' random-crop jitter (crops keep 1 - crop to all of the area);
        0 keeps the microscope's magnification.
    ultralytics_colour : keep Ultralytics' HSV jitter on top of the stain/lamp jitter.
    lr : AdamW from this learning rate (Ultralytics' optimizer "auto" ignores lr0).
    Other arguments as ``build_imagefolder`` and ``train_yolo``.
    """
    if not 0.0 <= crop < 1.0:
        raise UsageError(f"--crop {crop}: give a value in [0, 1)")
    out, split_csv = Path(out), Path(split_csv)
    aug = {"scale": crop} | ({} if flips else {"fliplr": 0.0, "flipud": 0.0})
    if not ultralytics_colour:
        aug |= {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    schedule = {"warmup_epochs": warmup}
    if lr is not None:
        schedule |= {"optimizer": "AdamW", "lr0": lr}
    copies = copies if jitter_cfg else 0
    tree = out / "data"
    if not (resume and (tree / "train").is_dir()):
        augment = partial(jitter, cfg=jitter_cfg) if jitter_cfg else None
        build_imagefolder(split_csv, tree, partial(view, spec=spec), balance=balance,
                          augment=augment, copies=copies, turns=turns, seed=seed)  # fmt: skip
    config = {
        "family": "yolo",
        "arch": arch,
        "preprocess": spec.to_dict(),
        "jitter": asdict(jitter_cfg) if jitter_cfg else None,
        "ultralytics_aug": {**YOLO_AUG, **aug},
        "copies": copies,
        "quarter_turns": turns and jitter_cfg is not None,
        "balance": balance,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "weights": str(weights) if weights else None,
        "schedule": schedule,
    }
    write_run_config(out, config, split_csv)
    return train_yolo(tree, out / "train", arch=arch, epochs=epochs, imgsz=spec.size,
                      batch=batch, seed=seed, weights=weights, threads=threads, device=device,
                      workers=workers, resume=resume, **schedule, **aug)  # fmt: skip


def yolo_predictor(pt: str | Path, threads: int | None = None) -> Predictor:
    """The ``Predictor`` of an Ultralytics checkpoint.

    ``predict_proba(fields: list of RGB uint8 (H, W, 3)) -> float32 (N, C)`` feeds the
    network exactly what the station feeds its bundle: ``prepare`` with the run's recorded
    preprocessing (``leukedge_train.json``), else the whole field at the checkpoint's
    training size.
    """
    ensure_offline()
    import torch
    from ultralytics import YOLO

    if threads:
        torch.set_num_threads(threads)
    pt = Path(pt)
    yolo = YOLO(str(pt))
    net = yolo.model.float().eval()
    classes = tuple(yolo.names[i] for i in sorted(yolo.names))
    config = find_run_config(pt) or {}
    if "preprocess" in config:
        spec = Preprocess.from_dict(config["preprocess"])
    else:
        size = int((yolo.ckpt or {}).get("train_args", {}).get("imgsz", 224))
        spec = Preprocess(input_mode="field", size=size)

    def predict_proba(fields: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack([prepare(f, spec) for f in fields]))
        with torch.inference_mode():
            out = net(x)
        p = (out[0] if isinstance(out, (list, tuple)) else out).float().numpy()
        is_probs = (p >= 0).all() and np.allclose(p.sum(axis=1), 1, atol=1e-3)
        return p if is_probs else _softmax(p)

    name = next(d.name for d in pt.resolve().parents if d.name not in ("weights", "train"))
    return Predictor(name, classes, predict_proba)


def yolo_params(pt: str | Path) -> int:
    """Parameters (trainable or not) of an Ultralytics checkpoint."""
    ensure_offline()
    from ultralytics import YOLO

    return sum(p.numel() for p in YOLO(str(pt)).model.parameters())


def yolo_epochs_done(pt: str | Path) -> int:
    """Epochs a run finished, from Ultralytics' ``results.csv`` above ``weights/``."""
    log = Path(pt).parent.parent / "results.csv"
    return max(0, len(log.read_text().strip().splitlines()) - 1) if log.is_file() else 0
