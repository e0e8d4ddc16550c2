"""Training-run records: ``leukedge_train.json`` holds what a run was made from;
``epoch_score``, how a run picks its best epoch; ``training_split``, the split it trains on."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from .. import __version__
from ..data.layouts import find_dataset
from ..data.split import make_split
from ..edge.bundle import sha256_file
from ..errors import UsageError

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


def training_split(
    run_dir: str | Path,
    split_csv: str | Path | None,
    data: str | Path | None,
    scheme: str,
    seed: int,
    ratios: tuple[float, float, float] | None = None,
) -> Path:
    """The ``split.csv`` a run trains on: ``split_csv``, else a new leak-safe split of the
    dataset folder ``data`` in ``run_dir/split`` (``make_split``'s ratios unless given)."""
    if split_csv is not None:
        return Path(split_csv)
    if data is None:
        raise UsageError("give --split-csv or --data")
    extra = {"ratios": ratios} if ratios else {}
    make_split(find_dataset(data), Path(run_dir) / "split", scheme, seed, **extra)
    return Path(run_dir) / "split" / "split.csv"
