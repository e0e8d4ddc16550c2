"""A bundle's trust figures (the manifest's ``trust``), computed from its training split.

``add_trust`` (``leukedge bundle add-trust``) gives the model file (and each file of its
``model.routes``) its feature output (``leukedge.export.features``) when it lacks one,
runs the bundle's own model on the split's fields through the bundle's own preprocessing,
as the station does, and writes:

- ``trust.features``: class means and shared covariance of the training fields' pooled
  features, the threshold at ``percentile`` of held-out distances
  (``leukedge.edge.features``): the validation fields' and, cross-fitted, the training
  fields' (``FOLDS`` folds by duplicate group, each scored by statistics fitted without it).
  A tail percentile of 278 validation fields alone is their second-largest distance: on
  the shipped default it put the threshold where 2.0% of the out-of-fold training fields
  lay above it, four times the percentile's promise; ten times the held-out fields make it
  hold;
- ``trust.calibration``: the temperature fitted on the validation fields as they are and
  under each shift of the shift suite (the lamp and stain changes the station must take),
  the expected calibration error before and after, and the lowest low-confidence threshold
  at which those fields above it are at least ``target`` accurate
  (``leukedge.edge.calibration``). Clean validation fields alone are too few errors to fit
  on (one in 278 for each shipped model: fitted on them alone, the default model's
  temperature came out 0.42, and its threshold the lowest validation confidence, 0.50);
- ``trust.quality`` and ``trust.scale``: the training fields' focus, exposure and colour
  limits and red-cell size (``leukedge.edge.quality``, ``leukedge.edge.scale``), with the
  lower-magnification discriminant (``leukedge.export.magnification``).

Every file's SHA-256 is then re-stamped, and a known-answer self-test already in the
bundle is made again (``leukedge.export.selftest``) so it checks the features too.
Training-time balancing and jitter play no part: each field of the split counts once, as
it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from leukedge.data.split import Row, read_split
from leukedge.edge.bundle import MANIFEST, read_manifest, sha256_file, verify_bundle, write_manifest
from leukedge.edge.calibration import (
    Calibration,
    confident_threshold,
    fit_temperature,
    scale_probabilities,
)
from leukedge.edge.features import fit_feature_stats
from leukedge.edge.imageio import read_field
from leukedge.edge.model import Model, resolve_bundle
from leukedge.edge.quality import quality_reference
from leukedge.edge.scale import lower_magnification, measure_cells, parse_scale_reference
from leukedge.errors import DataError
from leukedge.evaluation.metrics import expected_calibration_error, reliability
from leukedge.evaluation.shifts import SHIFTS, apply_shift
from leukedge.progress import progress_bar

from .common import FOLDS, class_indices, held_out_folds
from .features import add_feature_output, model_outputs
from .magnification import scale_figures
from .selftest import add_self_test

#: Percentile of the held-out feature distances above which a field is out of distribution.
DEFAULT_PERCENTILE = 99.5
#: Accuracy the confident validation fields must reach at the low-confidence threshold.
DEFAULT_TARGET = 0.995
#: Principal axes kept of the features' shared covariance.
DEFAULT_AXES = 32


@dataclass
class SplitOutputs:
    """A split's model outputs: raw ``probs`` float32 (N, C), ``features`` float32 (N, D),
    ``labels`` int64 (N,)."""

    probs: np.ndarray
    features: np.ndarray
    labels: np.ndarray


def rebase_rows(rows: Sequence[Row], data: str | Path) -> list[Row]:
    """The rows with their paths moved under ``data``, for a data set that has moved since
    the split was written: the split's data folder is the paths' common folder, or the
    nearest folder above it under which ``data`` holds the first row's file."""
    root = Path(os.path.commonpath([os.path.dirname(r.path) for r in rows]))
    found = (
        p
        for p in (root, *root.parents)
        if (Path(data) / Path(rows[0].path).relative_to(p)).is_file()
    )
    root = next(found, root)
    return [replace(r, path=str(Path(data) / Path(r.path).relative_to(root))) for r in rows]


def split_rows(split_csv: Path, manifest: dict, data: str | Path | None) -> list[Row]:
    """The split's rows; ``DataError`` if it is not the split the bundle was trained on, or
    its fields are not where it says."""
    if not split_csv.is_file():
        raise DataError(f"{split_csv}: no such split; make it with: leukedge data split DATA")
    expected = manifest.get("data_manifest_sha256")
    if expected and (found := sha256_file(split_csv)) != expected:
        raise DataError(
            f"{split_csv}: SHA-256 {found[:12]}... is not the bundle's training split "
            f"({expected[:12]}...); recreate it with the command in the model card"
        )
    rows = read_split(split_csv)
    rows = rebase_rows(rows, data) if data is not None else rows
    if missing := [r.path for r in rows if not Path(r.path).is_file()]:
        raise DataError(
            f"{split_csv}: {len(missing)} field(s) not found, e.g. {missing[0]}; "
            "pass --data with the data set's folder"
        )
    return rows


def split_outputs(
    model: Model, rows: Sequence[Row], description: str, shift: str | None = None
) -> SplitOutputs:
    """Run ``model`` on the rows' fields (under a shift of the shift suite, if given), one at
    a time as on the station."""
    probs, feats = [], []
    for r in progress_bar(rows, description):
        rgb = read_field(r.path)
        rgb = rgb if shift is None else apply_shift(rgb, shift)
        out = model.outputs(model.prepare_batch([rgb]))
        probs.append(out["probabilities"][0])
        feats.append(out["features"][0])
    return SplitOutputs(np.stack(probs), np.stack(feats), class_indices(rows, model.classes))


def held_out_distances(
    train: SplitOutputs, groups: np.ndarray, n_classes: int, axes: int
) -> np.ndarray:
    """float32 (N,) feature distance of each training field from statistics fitted on the
    other folds (``common.held_out_folds``)."""
    fold = held_out_folds(groups)
    out = np.empty(len(fold), np.float32)
    for k in range(FOLDS):
        held = fold == k
        stats = fit_feature_stats(train.features[~held], train.labels[~held], n_classes, axes)
        out[held] = stats.distances(train.features[held])
    return out


def add_trust(
    bundle: str | Path,
    split_csv: str | Path,
    data: str | Path | None = None,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    target: float = DEFAULT_TARGET,
    axes: int = DEFAULT_AXES,
    threads: int | None = None,
) -> dict:
    """Add ``trust.features`` and ``trust.calibration`` to a bundle, in place (module doc).

    Returns a report: the validation figures (flag rate, ECE before and after on the
    calibration fields and on the clean ones, the threshold and the share of fields under
    it) and the calibration fields' reliability-diagram data before and after
    (``leukedge.evaluation.metrics.reliability``).
    """
    folder = resolve_bundle(bundle)
    manifest = read_manifest(folder)
    verify_bundle(folder, manifest)
    split_csv = Path(split_csv)
    rows = split_rows(split_csv, manifest, data)
    by_split = {s: [r for r in rows if r.split == s] for s in ("train", "val")}
    if empty := [s for s, rs in by_split.items() if not rs]:
        raise DataError(f"{split_csv}: no {' or '.join(empty)} rows")

    model_file = folder / manifest["model"]["file"]
    for route in manifest["model"].get("routes", []):  # the same network, for other CPUs
        add_feature_output(folder / route["file"])
    add_feature_output(model_file)
    base = {k: v for k, v in manifest.items() if k != "trust"}
    base["model"] = {**manifest["model"], "outputs": model_outputs(model_file)}
    model = Model(folder, base, "auto", threads)
    train = split_outputs(model, by_split["train"], "Training fields")
    val = split_outputs(model, by_split["val"], "Validation fields")

    stats = fit_feature_stats(train.features, train.labels, len(model.classes), axes)
    val_dist = stats.distances(val.features)
    groups = np.array([r.group for r in by_split["train"]])
    oof_dist = held_out_distances(train, groups, len(model.classes), axes)
    stats = stats.with_threshold(np.concatenate([val_dist, oof_dist]), percentile)

    shifted = [split_outputs(model, by_split["val"], f"Validation fields, {s}", s) for s in SHIFTS]
    probs = np.concatenate([val.probs, *(o.probs for o in shifted)])
    labels = np.concatenate([val.labels, *(o.labels for o in shifted)])
    temperature = fit_temperature(probs, labels)
    calibrated = scale_probabilities(probs, temperature)
    cal = Calibration(
        temperature,
        confident_threshold(calibrated, labels, target),
        target,
        expected_calibration_error(labels, probs),
        expected_calibration_error(labels, calibrated),
        "val",
        ("clean", *SHIFTS),
        len(labels),
    )
    clean = cal.apply(val.probs)
    train_fields = [read_field(r.path) for r in by_split["train"]]
    scale = scale_figures(train_fields, train.labels, groups)
    scale_ref = parse_scale_reference({"trust": {"scale": scale}})[0]
    val_lower = [
        lower_magnification(measure_cells(read_field(r.path)), scale_ref) for r in by_split["val"]
    ]
    trust = {
        **(manifest.get("trust") or {}),
        "features": stats.to_dict(),
        "calibration": cal.to_dict(),
        "quality": quality_reference(train_fields),
        "scale": scale,
    }
    write_manifest(folder, {**base, "trust": trust})
    if "self_test" in manifest:  # known answers again, now with the features
        tolerance = manifest["self_test"].get("tolerance", {}).get("probabilities")
        add_self_test(folder, tolerance)
    return {
        "bundle": str(folder / MANIFEST),
        "train_n": len(train.labels),
        "val_n": len(val.labels),
        "feature_dim": stats.dim,
        "feature_threshold": stats.threshold,
        "val_flagged": float(np.mean(val_dist > stats.threshold)),
        "train_out_of_fold_flagged": float(np.mean(oof_dist > stats.threshold)),
        "calibration_n": len(labels),
        "temperature": temperature,
        "ece_before": cal.ece_before,
        "ece_after": cal.ece_after,
        "ece_clean_before": expected_calibration_error(val.labels, val.probs),
        "ece_clean_after": expected_calibration_error(val.labels, clean),
        "threshold": cal.threshold,
        "lower_magnification": {
            **{k: v for k, v in scale["lower"].items() if k not in ("weights", "statistic")},
            "val_flagged": float(np.mean(val_lower)),
        },
        "val_under_threshold": float(np.mean(clean.max(axis=1) < cal.threshold)),
        "calibration_under_threshold": float(np.mean(calibrated.max(axis=1) < cal.threshold)),
        "reliability": {
            "before": reliability(labels, probs),
            "after": reliability(labels, calibrated),
        },
    }


def plot_reliability(report: dict, path: str | Path, title: str) -> Path:
    """The calibration fields' reliability diagrams (validation, clean and under the shift
    suite) before and after temperature scaling, side by side, from an ``add_trust`` report,
    as a PNG (``leukedge.evaluation.plots``)."""
    from leukedge.evaluation.render import check_plots

    check_plots()
    from matplotlib.figure import Figure

    from leukedge.evaluation.plots import plot_reliability as plot_one

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    fig.suptitle(title)
    for sub, key in zip(fig.subfigures(1, 2), ("before", "after")):
        plot_one(sub, {"clean": {"reliability": report["reliability"][key],
                                 "ece": report[f"ece_{key}"]}})  # fmt: skip
        name = "model file" if key == "before" else f"T = {report['temperature']:.2f}"
        sub.suptitle(f"{key} ({name}): {report['calibration_n']} validation fields")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
