"""One field through the station: validate -> segment -> preprocess -> classify -> result.

A field is ``uncertain`` when any of these holds (``FieldResult.reasons`` says which):
- ``low-confidence``: the top probability is below the model's threshold;
- ``no-cell``: segmentation found no blast-like cell;
- ``out-of-distribution``: the field's mean LAB colour lies more than ``max_z``
  standard deviations from the training fields' (``ood`` in the bundle manifest),
  or, for bundles without those figures, the field is nearly black or blank
  (mean lightness outside ``BLANK_L``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .model import Model
from .segment import segment
from .sources.base import Frame

#: Mean LAB lightness (0-255) outside which a field is treated as blank or dark.
BLANK_L = (30.0, 252.0)


@dataclass
class FieldResult:
    """The outcome of one field: a classification, or an ``error``."""

    source: str
    time: float
    image_sha256: str | None = None
    model_sha256: str | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    confidence: float | None = None
    uncertain: bool = False
    reasons: tuple[str, ...] = ()
    cell_count: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        """The JSON-lines record: label/probabilities/... for a result, error for a failure."""
        if self.error is not None:
            return {"source": self.source, "error": self.error}
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return {k: v for k, v in out.items() if k != "error"}

    def log_record(self) -> dict:
        """Keyword record for ``ResultsLog.log_result``."""
        return {
            "source_id": self.source,
            "time": self.time,
            "image_sha256": self.image_sha256,
            "model_sha256": self.model_sha256,
            "label": self.label,
            "probabilities": self.probabilities,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "cell_count": self.cell_count,
            "timings": {k: v / 1e3 for k, v in self.timings_ms.items()},
        }


def colour_stat(rgb: np.ndarray) -> np.ndarray:
    """Mean LAB colour of an RGB uint8 (H, W, 3) field: float64 (3,).

    Large frames are sampled on a regular grid of about 224 x 224 pixels.
    """
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1]) // 224))
    sample = np.ascontiguousarray(rgb[::step, ::step])
    return cv2.cvtColor(sample, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)


def ood_reference(fields, max_z: float = 4.0) -> dict:
    """The manifest's ``ood`` entry from training fields (RGB uint8 (H, W, 3) each)."""
    stats = np.stack([colour_stat(f) for f in fields])
    return {
        "statistic": "mean LAB colour of the field",
        "lab_mean": stats.mean(axis=0).round(3).tolist(),
        "lab_std": stats.std(axis=0).round(3).tolist(),
        "max_z": max_z,
        "n": len(stats),
    }


def out_of_distribution(rgb: np.ndarray, ood: dict | None) -> bool:
    """Whether an RGB uint8 (H, W, 3) field is far from the training fields (see module doc)."""
    lab = colour_stat(rgb)
    if ood:
        z = np.abs(lab - np.asarray(ood["lab_mean"])) / np.maximum(np.asarray(ood["lab_std"]), 1.0)
        return bool(z.max() > float(ood.get("max_z", 4.0)))
    return not BLANK_L[0] <= lab[0] <= BLANK_L[1]


class FieldPipeline:
    """Classify frames with a loaded model; never raises for a bad frame."""

    def __init__(self, model: Model, seg_mode: str = "robust", threshold: float | None = None):
        self.model = model
        self.seg_mode = seg_mode
        self.threshold = model.uncertain_threshold if threshold is None else float(threshold)
        self.ood = model.manifest.get("ood")

    def __call__(self, frame: Frame) -> FieldResult:
        res = FieldResult(frame.source_id, frame.time, frame.sha256, self.model.sha256)
        if frame.error is not None or frame.rgb is None:
            res.error = frame.error or f"{frame.source_id}: no image"
            return res
        try:
            t0 = time.perf_counter()
            seg = segment(frame.rgb, mode=self.seg_mode)
            t1 = time.perf_counter()
            pred = self.model.predict(frame.rgb, seg.mask)
        except (ValueError, cv2.error) as exc:
            res.error = f"{frame.source_id}: {exc}"
            return res
        res.label, res.probabilities, res.confidence = (
            pred.label,
            pred.probabilities,
            pred.confidence,
        )
        res.cell_count = len(seg.cells)
        res.timings_ms = {"segment": (t1 - t0) * 1e3, **pred.timings_ms}
        reasons = []
        if pred.confidence < self.threshold:
            reasons.append("low-confidence")
        if not seg.cells:
            reasons.append("no-cell")
        if out_of_distribution(frame.rgb, self.ood):
            reasons.append("out-of-distribution")
        res.reasons, res.uncertain = tuple(reasons), bool(reasons)
        return res
