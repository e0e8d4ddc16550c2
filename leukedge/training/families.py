"""The model families leukedge trains, in one registry: no other code dispatches on a family.

A ``Family`` says what its trained model file is (``suffix``), where a training run keeps
its best one (``best``), how to train a run (``train``), how evaluators run the model
(``predictor``), and its size and progress (``params``, ``epochs_done``).
``leukedge.export.families`` registers each family's exporter under the same name.
Adding a family: a ``training/<family>.py`` with a ``train_*`` function (split, run folder
and recipe in, best model file out, the run record ``leukedge_train.json`` written), a
``*_predictor``, one ``FAMILIES`` entry, and its exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingFileError, ModelError
from ..evaluation.evaluate import Predictor, bundle_predictor
from .keras_train import keras_epochs_done, keras_params, keras_predictor, train_keras
from .runs import find_run_config
from .yolo import train_yolo_run, yolo_epochs_done, yolo_params, yolo_predictor


@dataclass(frozen=True)
class Family:
    """One model family (see the module docstring)."""

    name: str
    suffix: str
    best: tuple[str, ...]
    train: Callable[..., Path]
    predictor: Callable[[Path, int | None], Predictor]
    params: Callable[[Path], int]
    epochs_done: Callable[[Path], int]


FAMILIES = {
    "yolo": Family(
        name="yolo",
        suffix=".pt",
        best=("train/weights/best.pt", "weights/best.pt"),
        train=train_yolo_run,
        predictor=yolo_predictor,
        params=yolo_params,
        epochs_done=yolo_epochs_done,
    ),
    "keras": Family(
        name="keras",
        suffix=".keras",
        best=("best.keras",),
        train=train_keras,
        predictor=keras_predictor,
        params=keras_params,
        epochs_done=keras_epochs_done,
    ),
}


def family_of(model_file: str | Path) -> Family:
    """The family whose trained model files look like ``model_file``."""
    suffix = Path(model_file).suffix
    for family in FAMILIES.values():
        if family.suffix == suffix:
            return family
    known = ", ".join(f.suffix for f in FAMILIES.values())
    raise ModelError(f"{model_file}: not a trained model file ({known})")


def best_model(run: str | Path) -> Path | None:
    """The best model file a training run folder holds (Ultralytics' own run folder too),
    or None."""
    run = Path(run)
    found = (run / b for f in FAMILIES.values() for b in f.best)
    return next((p for p in found if p.is_file()), None)


def trained_model(path: str | Path) -> Path | None:
    """The model file of a training run: ``path`` itself when it is a trained model file,
    else ``best_model(path)``; None when ``path`` is neither (e.g. a model bundle). A run
    folder whose record names its family but that holds no model yet is a ``ModelError``."""
    path = Path(path)
    if any(path.suffix == f.suffix for f in FAMILIES.values()):
        if not path.is_file():
            raise MissingFileError(f"{path}: no such file")
        return path
    if not path.is_dir():
        return None
    best = best_model(path)
    family = FAMILIES.get((find_run_config(path) or {}).get("family"))
    if best is None and family is not None:
        raise ModelError(
            f"{path}: a {family.name} run without {' or '.join(family.best)} "
            "(has its first epoch finished?)"
        )
    return best


def load_predictor(model: str | Path, backend: str = "auto", threads: int | None = None):
    """The ``Predictor`` of a training run, a trained model file or a model bundle (a folder
    or a shipped name): what every evaluator runs. ``backend`` applies to bundles."""
    trained = trained_model(model)
    if trained is not None:
        return family_of(trained).predictor(trained, threads)
    return bundle_predictor(model, backend, threads)
