"""Each model family's exporter, under the names of ``leukedge.training.families``, and
``export_run``: a training run (or its model file) -> verified model bundles.

An ``Exporter`` says which formats a family exports to (the first ones by default), how,
where the family keeps a run folder relative to its model file, and what the model was
trained on (``recorded_preprocess``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..edge.preprocess import Preprocess
from ..errors import MissingFileError, ModelError, UsageError
from ..training.families import family_of, trained_model
from ..training.runs import find_run_config
from . import keras, yolo
from .common import DEFAULT_UNCERTAIN_THRESHOLD, ExportSettings


@dataclass(frozen=True)
class Exporter:
    """How one family exports (see the module docstring)."""

    formats: tuple[str, ...]
    export: Callable[..., dict[str, Path]]
    run_folder: Callable[[Path], Path]
    recorded_preprocess: Callable[[Path], dict]


EXPORTERS = {
    "yolo": Exporter(
        yolo.FORMATS, yolo.export_yolo_bundles, yolo.run_dir, yolo.recorded_preprocess
    ),
    "keras": Exporter(
        keras.FORMATS, keras.export_keras_bundles, lambda p: p.parent, keras.recorded_preprocess
    ),
}


@dataclass(frozen=True)
class Exported:
    """What ``export_run`` did: the model file, the output folder, the preprocessing the
    bundles declare and the bundles (name -> folder)."""

    model: Path
    out: Path
    spec: Preprocess
    bundles: dict[str, Path]


def recorded_split(model: Path, run_folder: Path) -> Path | None:
    """The split a model was trained on: its run record's, else a ``split.csv`` in its run
    folder or next to it."""
    record = find_run_config(model) or {}
    candidates = [Path(record["split_csv"])] if record.get("split_csv") else []
    candidates += [run_folder / "split.csv", run_folder.parent / "split.csv"]
    return next((p for p in candidates if p.is_file()), None)


def export_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    formats: Sequence[str] | None = None,
    split_csv: str | Path | None = None,
    int8: bool = True,
    calib_n: int = 300,
    onnx_int8: dict | None = None,
    preprocess: Mapping[str, object] | None = None,
    uncertain_threshold: float = DEFAULT_UNCERTAIN_THRESHOLD,
) -> Exported:
    """Export the model of a training run folder (or a trained model file) to bundles.

    formats : default: the family's (``Exporter.formats``).
    split_csv : the split the model was trained on (train: INT8 calibration, val:
        evaluation); default ``recorded_split``.
    out : default ``RUN/export`` (the run folder of a model file).
    preprocess : ``Preprocess`` fields that override the recorded ones (input_mode,
        segmentation, size).
    onnx_int8 : ``quantize_onnx`` settings. Other arguments as the family's exporter.
    """
    run = Path(run)
    model = trained_model(run)
    if model is None:
        raise ModelError(
            f"{run}: neither a trained model file nor a training run folder holding one "
            "(weights/best.pt, train/weights/best.pt or best.keras)"
        )
    exporter = EXPORTERS[family_of(model).name]
    run_folder = exporter.run_folder(model)
    split_csv = Path(split_csv) if split_csv else recorded_split(model, run_folder)
    if split_csv is None:
        raise UsageError(f"no split.csv recorded for {model} or found next to it; pass --split-csv")
    if not split_csv.is_file():
        raise MissingFileError(f"{split_csv}: no such split file")
    spec = Preprocess.from_dict({**exporter.recorded_preprocess(model), **(preprocess or {})})
    out = Path(out) if out else (run if run.is_dir() else run_folder) / "export"
    settings = ExportSettings(
        split_csv, int8, calib_n, uncertain_threshold=uncertain_threshold, onnx_int8=onnx_int8 or {}
    )
    bundles = exporter.export(model, out, spec, settings, to=formats or exporter.formats)
    return Exported(model, out, spec, bundles)
