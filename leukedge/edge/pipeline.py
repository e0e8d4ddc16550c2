"""One frame through the station: trust gate -> training scale -> segment -> classify -> result.

The gate (``FieldPipeline.gate``) runs before inference: it measures the frame's red cells
(``scale``), brings it to the training scale, judges focus, exposure and colour there
(``quality``), and cuts a large frame into training-size fields. Each field is segmented and
classified in one batch; a frame of several fields gets the mean probabilities of the fields
that hold a cell (all of them when none does). The result is ``uncertain`` when any reason in
``REASONS`` holds, and ``FieldResult.reasons`` says which (``duplicate`` is the slide's
verdict, ``slide.SlideTally``). A frame the gate flags is still classified, so the station can
show what the model would have said; the flag keeps it out of the slide's call.

Bundles without ``trust.quality``/``trust.scale`` are judged with the built-in Taleqani figures,
and without ``trust.features`` by their colour alone (``out_of_distribution``): each fallback
is a line in ``FieldPipeline.notes``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .bundle import MANIFEST
from .imageio import check_field
from .model import Model, Prediction
from .phash import perceptual_hash
from .quality import judge, measure, parse_quality_reference
from .scale import check_scale, normalise, parse_scale_reference, tiles
from .segment import Segmentation, segment
from .sources.base import Frame

#: The stable reason strings of ``FieldResult.reasons`` and what each means.
REASONS: dict[str, str] = {
    "low-confidence": "the top probability is below the model's threshold",
    "blurred": "out of focus: less fine detail than the training fields have",
    "under-exposed": "too dark, or many pixels black",
    "over-exposed": "too bright, or many pixels white in all three colours",
    "colour-cast": "cell colours unlike the training fields' even after white balancing "
    "(another stain or camera)",
    "scale": "the magnification cannot be matched to the training fields: red cells smaller "
    "than in training (a lower magnification), not measurable, or so large that the frame "
    "holds less than a training field",
    "too-small": "too few pixels, or less than a training field's worth of smear",
    "no-cell": "no cell found: an empty or blank frame, or no blast-like cell",
    "out-of-distribution": "the model's features (or, for bundles without feature statistics, "
    "the field's colour) lie outside what it was trained on",
    "duplicate": "the same field as an earlier one of the slide (identical bytes or a "
    "perceptual hash within a few bits): counted once",
}

#: Mean LAB lightness (0-255) outside which a field is treated as blank or dark.
BLANK_L = (30.0, 252.0)


@dataclass
class FieldResult:
    """The outcome of one field: a classification, or an ``error``.

    ``quality`` holds what the gate measured (``quality.measure``'s figures, plus
    ``cell_diameter`` px, ``scale_factor`` applied and ``fields`` classified); ``phash`` is
    the frame's perceptual hash (hex), the slide's near-duplicate evidence.
    """

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
    quality: dict[str, float] | None = None
    phash: str | None = None
    ood_score: float | None = None

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
            "reasons": list(self.reasons),
            "quality": self.quality,
            "phash": self.phash,
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
    """Whether an RGB uint8 (H, W, 3) field's mean LAB colour lies more than ``max_z``
    standard deviations from the training fields' (``ood`` in the manifest), or, without
    those figures, the field is nearly black or blank (mean lightness outside ``BLANK_L``).
    The fallback for bundles without feature statistics."""
    lab = colour_stat(rgb)
    if ood:
        z = np.abs(lab - np.asarray(ood["lab_mean"])) / np.maximum(np.asarray(ood["lab_std"]), 1.0)
        return bool(z.max() > float(ood.get("max_z", 4.0)))
    return not BLANK_L[0] <= lab[0] <= BLANK_L[1]


@dataclass(frozen=True, eq=False)
class Gate:
    """What the gate found for a frame: ``reasons`` (from ``REASONS``), ``measures`` (for
    ``FieldResult.quality``) and ``fields``, the RGB uint8 training-scale fields to classify
    (the frame itself when it cannot be brought to the training scale)."""

    reasons: tuple[str, ...]
    measures: dict[str, float]
    fields: list[np.ndarray]


@dataclass(frozen=True, eq=False)
class Analysis:
    """A frame before the model (``FieldPipeline.analyse``): its ``result`` so far (source,
    hashes, gate and segmentation timings; ``error`` set when the frame cannot be used), and
    otherwise the frame as a checked RGB uint8 (H, W, 3) array, its ``gate`` and the
    segmentation of each of the gate's fields."""

    result: FieldResult
    rgb: np.ndarray | None = None
    gate: Gate | None = None
    segs: list[Segmentation] = field(default_factory=list)


class FieldPipeline:
    """Classify frames with a loaded model; never raises for a bad frame.

    ``pipeline(frame)`` is ``classify([analyse(frame)])[0]``: the work before the model
    (``analyse``) may run on another thread than the model's (``classify``), and several
    frames may share one model call.

    ``notes`` lists the bundle's fallbacks (the model's own and the gate's).
    """

    def __init__(self, model: Model, seg_mode: str = "robust", threshold: float | None = None):
        self.model = model
        self.seg_mode = seg_mode
        self.threshold = model.uncertain_threshold if threshold is None else float(threshold)
        self.ood = model.manifest.get("ood")
        where = str(model.bundle / MANIFEST)
        self.quality_ref, quality_note = parse_quality_reference(model.manifest, where)
        self.scale_ref, scale_note = parse_scale_reference(model.manifest, where)
        self.field_px = int(self.scale_ref["field_px"])
        #: Fields per model call: None (any number), or 1 for an ONNX file whose input's
        #: batch is fixed at 1 (ONNX Runtime cannot resize it; LiteRT resizes its input).
        fixed = model.backend.name == "onnxruntime" and model.backend.input_shape[:1] == (1,)
        self.model_batch = 1 if fixed else None
        batch_note = (
            f"{model.model_file.name} takes one field per call (its input's batch is fixed "
            "at 1): fields are classified one at a time"
            if self.model_batch == 1
            else None
        )
        notes = tuple(n for n in (quality_note, scale_note, batch_note) if n)
        self.notes: tuple[str, ...] = tuple(getattr(model, "notes", ())) + notes

    def gate(self, rgb: np.ndarray) -> Gate:
        """Judge an RGB uint8 (H, W, 3) frame before inference (module doc)."""
        sc = check_scale(rgb, self.scale_ref)
        scaled = {"cell_diameter": round(sc.diameter, 2), "scale_factor": round(sc.factor, 3)}
        if sc.reason == "too-small":
            return Gate(("too-small",), scaled, [rgb])
        norm = normalise(rgb, sc.factor)
        m = measure(norm, self.field_px, sc.stained)
        reasons = judge(m, self.quality_ref)
        if sc.reason and "no-cell" not in reasons:  # an empty frame has no cells to measure
            reasons += (sc.reason,)
        fields = [rgb] if sc.reason else tiles(norm, self.field_px)
        measures = {k: round(v, 4) for k, v in m.items()} | scaled | {"fields": len(fields)}
        return Gate(reasons, measures, fields)

    def analyse(self, frame: Frame) -> Analysis:
        """Everything before the model for one frame: the gate, the perceptual hash and the
        segmentation of each field (``Analysis``; its result's ``error`` set for a bad frame).
        Never raises for a bad frame."""
        res = FieldResult(frame.source_id, frame.time, frame.sha256, self.model.sha256)
        if frame.error is not None or frame.rgb is None:
            res.error = frame.error or f"{frame.source_id}: no image"
            return Analysis(res)
        try:
            t0 = time.perf_counter()
            rgb = check_field(frame.rgb, frame.source_id)
            gate = self.gate(rgb)
            res.phash = perceptual_hash(rgb).tobytes().hex()
            t1 = time.perf_counter()
            segs = [segment(f, mode=self.seg_mode) for f in gate.fields]
            t2 = time.perf_counter()
        except (ValueError, cv2.error) as exc:
            res.error = f"{frame.source_id}: {exc}"
            return Analysis(res)
        res.timings_ms = {"gate": (t1 - t0) * 1e3, "segment": (t2 - t1) * 1e3}
        return Analysis(res, rgb, gate, segs)

    def classify(self, analyses: Sequence[Analysis]) -> list[FieldResult]:
        """The results of analysed frames, in order, with one model call for all their fields
        (one per frame if that call fails, so a bad frame gets its own error)."""
        todo = [a for a in analyses if a.result.error is None]
        if not todo:
            return [a.result for a in analyses]
        fields = [f for a in todo for f in a.gate.fields]
        masks = [s.mask for a in todo for s in a.segs]
        step = self.model_batch or len(fields)
        try:
            preds = [
                p
                for i in range(0, len(fields), step)
                for p in self.model.predict_batch(fields[i : i + step], masks[i : i + step])
            ]
        except (ValueError, cv2.error) as exc:
            if len(todo) == 1:
                todo[0].result.error = f"{todo[0].result.source}: {exc}"
                return [a.result for a in analyses]
            for a in todo:
                self.classify([a])
            return [a.result for a in analyses]
        start = 0
        for a in todo:
            n = len(a.gate.fields)
            self._finish(a, preds[start : start + n])
            start += n
        return [a.result for a in analyses]

    def __call__(self, frame: Frame) -> FieldResult:
        return self.classify([self.analyse(frame)])[0]

    def _finish(self, a: Analysis, preds: list[Prediction]) -> None:
        """Fill ``a.result`` from the predictions of its fields."""
        res, gate, segs = a.result, a.gate, a.segs
        with_cells = [i for i, s in enumerate(segs) if s.cells] or list(range(len(segs)))
        classes = self.model.classes
        probs = np.mean([[preds[i].probabilities[c] for c in classes] for i in with_cells], 0)
        k = int(np.argmax(probs))
        res.label, res.confidence = classes[k], float(probs[k])
        res.probabilities = {c: float(p) for c, p in zip(classes, probs)}
        res.cell_count = sum(len(s.cells) for s in segs)
        res.quality = gate.measures
        for p in preds:  # each prediction's timings are its share of its model call
            for k, v in p.timings_ms.items():
                res.timings_ms[k] = res.timings_ms.get(k, 0.0) + v
        reasons = list(gate.reasons)
        if res.confidence < self.threshold:
            reasons.append("low-confidence")
        if not any(s.cells for s in segs) and "no-cell" not in reasons:
            reasons.append("no-cell")
        scores = [preds[i].ood_score for i in with_cells if preds[i].ood_score is not None]
        res.ood_score = max(scores) if scores else None
        if self.model.feature_stats is not None:
            ood = any(preds[i].out_of_distribution for i in with_cells)
        else:
            ood = out_of_distribution(a.rgb, self.ood)
        if ood:
            reasons.append("out-of-distribution")
        res.reasons, res.uncertain = tuple(reasons), bool(reasons)
