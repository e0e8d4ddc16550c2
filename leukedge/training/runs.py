"""Training-run records: ``leukedge_train.json`` holds what a run was made from; and
``epoch_score``, how a run picks its best epoch."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from .. import __version__
from ..edge.bundle import sha256_file

RUN_CONFIG = "leukedge_train.json"


def epoch_score(val_accuracy: float, val_loss: float) -> float:
    """How a training epoch ranks (higher is better): validation accuracy, ties broken by the
    lower validation loss (on a few hundred validation fields many epochs tie). The loss
    term is under 1e-6, less than one field of accuracy on any split under a million fields."""
    return float(val_accuracy) + 1e-6 / (1.0 + float(val_loss))


def write_run_config(run_dir: str | Path, config: dict, split_csv: str | Path) -> Path:
    """Record a run's settings, the split file and its SHA-256, and the software versions."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        **config,
        "split_csv": str(Path(split_csv).resolve()),
        "data_manifest_sha256": sha256_file(split_csv),
        "leukedge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = run_dir / RUN_CONFIG
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def find_run_config(path: str | Path) -> dict | None:
    """The run record in ``path`` or one of its parents (a run folder, a .pt inside it), or None."""
    path = Path(path).resolve()
    for folder in [path, *path.parents][:4]:
        candidate = folder / RUN_CONFIG
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def weights_of(run: str | Path) -> Path | None:
    """The best weights a ``leukedge train`` run folder holds (YOLO ``train/weights/best.pt``,
    or ``weights/best.pt`` when given Ultralytics' own folder; Keras ``best.keras``), or None."""
    run = Path(run)
    candidates = (
        run / "weights" / "best.pt",
        run / "train" / "weights" / "best.pt",
        run / "best.keras",
    )
    return next((p for p in candidates if p.is_file()), None)


def trained_model(path: str | Path) -> Path | None:
    """The model file of a training run: ``path`` itself when it is a ``.pt`` or ``.keras``
    file, else ``weights_of(path)``; None when ``path`` is neither.

    Raises FileNotFoundError for a ``.pt`` or ``.keras`` path that does not exist.
    """
    path = Path(path)
    if path.suffix in (".pt", ".keras"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return path
    return weights_of(path)
