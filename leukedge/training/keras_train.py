"""Keras classifiers trained on exactly what the station feeds them.

Fields are read once into memory. Each training batch is made on the fly from
the raw fields: the class-balancing flip (``balance_rows`` + ``apply_aug``),
stain/lamp jitter of the raw field, ``prepare`` (the station's preprocessing),
then one of the 8 flips/quarter turns (``dihedral``, unless ``flips`` is off),
by a thread pool. Each sample's random draws are seeded by (seed, epoch, batch,
row), so a resumed run sees the same data as an uninterrupted one, whatever the
thread count. Validation fields are prepared once, unaugmented.

For the "mask" input mode and the dual model's "masked" input, each field's
blast mask is segmented once, on the raw field, and flipped with it.

A run folder holds ``best.keras`` (best validation accuracy, ties broken by the lower
validation loss: on a few hundred validation fields many epochs tie), ``last.keras``
(with optimizer state, for ``resume``), ``history.csv`` and the run record
``leukedge_train.json``. Keras (and its backend) is imported inside the functions.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..console import err_console
from ..data.balance import apply_aug, balance_rows
from ..data.split import Row, read_split
from ..edge.imageio import read_field
from ..edge.model import input_specs
from ..edge.preprocess import DEFAULT_WHITE_POINT, Preprocess, prepare
from ..edge.segment import segment
from ..errors import DataError, MissingFileError, ModelError, UsageError
from ..evaluation.evaluate import Predictor
from ..progress import progress_bar
from .jitter import Jitter, dihedral, jitter
from .keras_models import DUAL_INPUTS, SINGLE_INPUTS, arch_scaling, build_model
from .runs import epoch_score, find_run_config, write_run_config

BEST, LAST, HISTORY = "best.keras", "last.keras", "history.csv"
KERAS_WEIGHTS = "model.weights.h5"  # inside a .keras file


def keras_preprocess(
    arch: str,
    input_mode: str = "field-wb",
    seg: str = "robust",
    size: int = 224,
    white_point: str = DEFAULT_WHITE_POINT,
):
    """The ``Preprocess`` a Keras ``arch`` takes: NHWC, scaled as ``arch_scaling`` says."""
    scale, offset = arch_scaling(arch)
    return Preprocess(input_mode, seg, size, "NHWC", scale, offset, white_point)


def _check_preprocess(spec: Preprocess, arch: str, dual: bool) -> None:
    scale, offset = arch_scaling(arch)
    if spec.layout != "NHWC" or not (
        math.isclose(spec.scale, scale) and math.isclose(spec.offset, offset, abs_tol=1e-12)
    ):
        raise UsageError(
            f"{arch} takes NHWC input scaled by {scale:g}, offset {offset:g}; preprocess has "
            f"layout {spec.layout}, scale {spec.scale:g}, offset {spec.offset:g}"
        )
    if dual and spec.input_mode == "mask":
        raise UsageError("a dual model's first input is the field: use input field or field-wb")


class _Fields:
    """Raw fields (RGB uint8 (H, W, 3)) and, where needed, their blast masks, read once."""

    def __init__(self, rows: Sequence[Row], spec: Preprocess, with_masks: bool):
        paths = sorted({r.path for r in rows})
        self.rgb = {p: read_field(p) for p in progress_bar(paths, "Reading fields")}
        self.mask = (
            {p: segment(self.rgb[p], mode=spec.segmentation).mask for p in paths}
            if with_masks
            else {}
        )

    def get(self, row: Row) -> tuple[np.ndarray, np.ndarray | None]:
        """The row's field and mask, flipped as ``row.aug`` says."""
        mask = self.mask.get(row.path)
        if mask is not None:
            mask = apply_aug(mask, row.aug)
        return apply_aug(self.rgb[row.path], row.aug), mask


def _model_x(xs: list[np.ndarray], names: Sequence[str]) -> np.ndarray | dict[str, np.ndarray]:
    """Keras model input: one array, or a dict by input name for several."""
    return xs[0] if len(xs) == 1 else dict(zip(names, xs))


def _prepare_all(rows, fields: _Fields, specs, names) -> np.ndarray | dict[str, np.ndarray]:
    """Unaugmented float32 (N, S, S, 3) input(s) for ``rows``."""
    pairs = [fields.get(r) for r in rows]
    return _model_x([np.stack([prepare(f, s, m) for f, m in pairs]) for s in specs], names)


@dataclass(frozen=True)
class _TrainBatches:
    """Endless augmented training batches (input(s), int64 (B,) labels) of ``rows``,
    reshuffled each epoch. Each sample's draws are seeded by (seed, epoch, batch, row), so
    the threads that make a batch change nothing and a resumed run sees the same data."""

    rows: Sequence[Row]
    fields: _Fields
    specs: Sequence[Preprocess]
    names: Sequence[str]
    labels: np.ndarray
    batch: int
    seed: int
    jitter_cfg: Jitter | None
    flips: bool

    def _sample(self, epoch: int, i: int, j: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, i, j])
        field, mask = self.fields.get(self.rows[j])
        if self.jitter_cfg is not None:
            field = jitter(field, rng, self.jitter_cfg)
        k = int(rng.integers(8)) if self.flips else 0
        return [dihedral(prepare(field, spec, mask), k) for spec in self.specs]

    def __call__(self, epoch: int, pool: ThreadPoolExecutor):
        """Batches from ``epoch`` on, made by ``pool``."""
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
            for i in range(math.ceil(len(self.rows) / self.batch)):
                idx = order[i * self.batch : (i + 1) * self.batch]
                views = list(pool.map(partial(self._sample, epoch, i), idx))
                xs = [np.stack([v[n] for v in views]) for n in range(len(self.specs))]
                yield _model_x(xs, self.names), self.labels[idx]
            epoch += 1


def _check_init(init: Path, config: dict) -> None:
    """Refuse a model to start from that is missing or was trained (run record beside it)
    for other inputs, classes or preprocessing than ``config``."""
    if not init.is_file():
        raise MissingFileError(f"{init}: no such model to start from")
    theirs = find_run_config(init)
    if theirs is None:
        raise ModelError(f"{init}: no leukedge_train.json run record beside it")
    for key in ("arch", "alpha", "inputs", "classes", "preprocess"):
        mine, other = config[key], theirs.get(key)
        if key == "preprocess" and other is not None:
            # Another white point only moves colours (as the jitter does): fine-tuning may
            # adapt a model to it.
            mine, other = (_but_white_point(p) for p in (mine, other))
        if other != mine:
            raise ModelError(f"{init}: trained with {key}={theirs.get(key)!r}, not {config[key]!r}")


def _but_white_point(preprocess: dict) -> dict:
    d = Preprocess.from_dict(preprocess).to_dict()
    del d["white_point"]
    return d


def _history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _configure(threads: int | None) -> None:
    """Set the Keras backend's CPU threads (before it first runs) and say where training
    runs. TensorFlow is the usual backend; with ``KERAS_BACKEND=torch`` Keras trains
    through PyTorch (and its GPU), with the same model files."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        import tensorflow as tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already runs with other thread pools
                err_console.print(f"[yellow]TensorFlow already runs: threads={threads} ignored")
        gpus = [g.name for g in tf.config.list_physical_devices("GPU")]
    where = ", ".join(gpus) if gpus else "the CPU"
    err_console.print(f"training on {where} (Keras backend {keras.backend.backend()})")


def epoch_rank(row: dict) -> float:
    """``epoch_score`` of a Keras ``logs`` dict or a ``history.csv`` row."""
    return epoch_score(row["val_accuracy"], row["val_loss"])


def train_keras(
    split_csv: str | Path,
    out_dir: str | Path,
    *,
    arch: str = "mobilenetv2",
    spec: Preprocess | None = None,
    dual: bool = False,
    epochs: int = 30,
    batch: int = 32,
    seed: int = 0,
    jitter_cfg: Jitter | None = Jitter(),
    flips: bool = True,
    balance: bool = True,
    threads: int | None = None,
    weights: str | Path | None = None,
    init: str | Path | None = None,
    freeze: bool = False,
    bn_momentum: float | None = None,
    alpha: float = 1.0,
    lr: float = 1e-3,
    cosine: bool = True,
    resume: bool = False,
    verbose: str | int = "auto",
) -> Path:
    """Train a Keras classifier on ``split_csv`` (train rows; val rows select the best
    epoch) and return the path of ``out_dir/best.keras``.

    spec : the station's preprocessing (default ``keras_preprocess(arch)``); NHWC
        with the backbone's scale and offset. ``spec.size`` is the input size.
    dual : the two-input model (``build_model(dual=True)``): inputs "field"
        (``spec``) and "masked" (the field outside the blast mask blacked out).
    jitter_cfg : stain/lamp jitter of the raw training fields (None: off).
    flips : one of the 8 flips/quarter turns at random for each training sample.
    balance : flipped copies of the smaller classes up to the largest, per epoch.
    threads : TensorFlow CPU threads (default: TensorFlow's choice). The GPU is
        used when TensorFlow sees one.
    weights, freeze, bn_momentum, alpha : ``build_model`` settings.
    init : a trained ``.keras`` of another run (same arch, inputs, classes and
        preprocessing) whose weights start this one: fine-tuning, with a fresh
        optimizer and schedule and this run's ``bn_momentum``.
    cosine : decay the learning rate from ``lr`` to 0 over the run (cosine), so
        the last epochs settle instead of stopping at full step size.
    resume : continue from ``last.keras`` and ``history.csv`` in ``out_dir``.

    Adam at ``lr``, sparse categorical cross-entropy; class ``i`` is the i-th
    label of the split in sorted order. Seeded with ``keras.utils.set_random_seed``.
    """
    if epochs < 1:
        raise UsageError(f"epochs must be at least 1, got {epochs}")
    if init is not None and weights is not None:
        raise UsageError("give backbone weights or a trained model to start from (init), not both")
    _configure(threads)
    spec = spec or keras_preprocess(arch)
    _check_preprocess(spec, arch, dual)
    split_csv, out_dir = Path(split_csv), Path(out_dir)
    rows = read_split(split_csv)
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]
    if not train or not val:
        raise DataError(f"{split_csv}: needs train rows and val rows (to pick the best epoch)")
    names = DUAL_INPUTS if dual else SINGLE_INPUTS
    config = {
        "family": "keras",
        "arch": arch,
        "alpha": alpha,
        "dual": dual,
        "inputs": list(names),
        "classes": sorted({r.label for r in rows}),
        "preprocess": spec.to_dict(),
        "jitter": asdict(jitter_cfg) if jitter_cfg else None,
        "flips": flips,
        "balance": balance,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "lr": lr,
        "cosine": cosine,
        "weights": str(weights) if weights else None,
        "init": str(init) if init else None,
        "freeze": freeze,
        "bn_momentum": bn_momentum,
    }
    if init is not None:  # before anything is written or read
        _check_init(Path(init), config)
    write_run_config(out_dir, config, split_csv)
    resume = resume and (out_dir / LAST).is_file()
    result = _train(config, train, val, out_dir, resume, threads, verbose)
    write_run_config(out_dir, {**config, "result": result}, split_csv)
    return out_dir / BEST


def _train(config: dict, train: list[Row], val: list[Row], out_dir: Path, resume: bool,
           threads: int | None, verbose) -> dict:  # fmt: skip
    """Read the fields, make the batches and the model of a run ``config`` and fit it
    (``resume``: from ``last.keras`` and ``history.csv``); returns the run's result."""
    spec, names, classes = (
        Preprocess.from_dict(config["preprocess"]),
        config["inputs"],
        config["classes"],
    )
    specs = input_specs(spec, names)
    fields = _Fields(train + val, spec, any(s.input_mode == "mask" for s in specs))
    val_data = (
        _prepare_all(val, fields, specs, names),
        np.array([classes.index(r.label) for r in val], np.int64),
    )
    seed, batch = config["seed"], config["batch"]
    train_rows = balance_rows(train, seed) if config["balance"] else train
    labels = np.array([classes.index(r.label) for r in train_rows], np.int64)
    jitter_cfg = Jitter(**config["jitter"]) if config["jitter"] else None
    batches = _TrainBatches(
        train_rows, fields, specs, names, labels, batch, seed, jitter_cfg, config["flips"]
    )
    history = _history(out_dir / HISTORY) if resume else []
    model = _model(out_dir, config, math.ceil(len(train_rows) / batch), resume=bool(history))
    _fit(model, batches, val_data, out_dir, config["epochs"], history, threads, verbose)
    history = _history(out_dir / HISTORY)
    best = max(range(len(history)), key=lambda i: epoch_rank(history[i]))
    return {
        "epochs_done": len(history),
        "best_epoch": best + 1,
        "best_val_accuracy": float(history[best]["val_accuracy"]),
        "val_n": len(val),
        "train_n": len(train_rows),
    }


def _model(out_dir: Path, config: dict, steps: int, resume: bool):
    """The compiled model a run trains: ``last.keras`` when resuming, else built from the
    run ``config`` (started from ``config["init"]``'s weights when given), seeded."""
    import keras

    keras.utils.set_random_seed(config["seed"])
    if resume:
        return keras.models.load_model(out_dir / LAST)
    model = build_model(
        config["arch"],
        len(config["classes"]),
        config["preprocess"]["size"],
        weights=config["weights"],
        freeze_backbone=config["freeze"],
        dual=config["dual"],
        bn_momentum=config["bn_momentum"],
        alpha=config["alpha"],
    )
    if config["init"] is not None:
        model.set_weights(keras.models.load_model(config["init"]).get_weights())
    lr, epochs = config["lr"], config["epochs"]
    schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule if config["cosine"] else lr),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def _fit(model, batches: _TrainBatches, val_data, out_dir: Path, epochs: int, history: list,
         threads: int | None, verbose) -> None:  # fmt: skip
    """Train from epoch ``len(history)`` to ``epochs``, saving ``best.keras`` whenever an
    epoch ranks above every earlier one (``epoch_rank``), ``last.keras`` and ``history.csv``."""
    import keras

    if len(history) >= epochs:
        return
    best_so_far = max(map(epoch_rank, history), default=None)

    def keep_best(epoch: int, logs: dict) -> None:
        nonlocal best_so_far
        rank = epoch_rank(logs)
        if best_so_far is None or rank > best_so_far:
            best_so_far = rank
            model.save(out_dir / BEST)

    callbacks = [
        keras.callbacks.LambdaCallback(on_epoch_end=keep_best),
        keras.callbacks.ModelCheckpoint(out_dir / LAST),
        keras.callbacks.CSVLogger(out_dir / HISTORY, append=bool(history)),
    ]
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        model.fit(
            batches(len(history), pool),
            steps_per_epoch=math.ceil(len(batches.rows) / batches.batch),
            shuffle=False,  # the batches are shuffled, seeded, by _TrainBatches
            validation_data=val_data,
            epochs=epochs,
            initial_epoch=len(history),
            callbacks=callbacks,
            verbose=verbose,
        )


def keras_predictor(keras_path: str | Path, threads: int | None = None) -> Predictor:
    """The ``Predictor`` of a trained ``.keras`` model of a ``train_keras`` run:
    ``predict_proba(fields: list of RGB uint8 (H, W, 3)) -> float32 (N, C)`` through the
    run's recorded preprocessing and inputs. ``threads`` is accepted for the family
    interface; the Keras backend keeps its own thread pools."""
    import keras

    keras_path = Path(keras_path)
    config = find_run_config(keras_path)
    if config is None:
        raise ModelError(f"{keras_path}: no leukedge_train.json run record beside it")
    names = config.get("inputs", list(SINGLE_INPUTS))
    specs = input_specs(Preprocess.from_dict(config["preprocess"]), names)
    model = keras.models.load_model(keras_path)

    def predict_proba(fields: list[np.ndarray]) -> np.ndarray:
        xs = [np.stack([prepare(f, s) for f in fields]) for s in specs]
        out = model(_model_x(xs, names), training=False)
        return keras.ops.convert_to_numpy(out).astype(np.float32)

    return Predictor(keras_path.parent.name, tuple(config["classes"]), predict_proba)


def keras_params(keras_path: str | Path) -> int:
    """Parameters (trainable or not) of a ``.keras`` model, counted from the file without
    TensorFlow (it and PyTorch in one process can crash)."""
    import h5py

    sizes = []
    with zipfile.ZipFile(keras_path) as z, h5py.File(io.BytesIO(z.read(KERAS_WEIGHTS))) as f:
        f.visititems(
            lambda name, obj: (
                sizes.append(obj.size)
                if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer")
                else None
            )
        )
    return int(sum(sizes))


def keras_epochs_done(keras_path: str | Path) -> int:
    """Epochs a run finished, from the ``history.csv`` beside its model."""
    return len(_history(Path(keras_path).parent / HISTORY))
