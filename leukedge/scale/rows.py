"""One row per field: the station's ``FieldPipeline`` result as a flat, storable record.

A record holds only str, float, int, bool, None and a list of str, so the same record
travels between processes, through Ray's object store and into Parquet or CSV:
``probabilities`` is JSON text (class -> probability, the model's class order) and
``reasons`` a list of the pipeline's reason strings (``pipeline.REASONS``), ``phash`` the
field's perceptual hash (hex) with which the slide rule counts near-copies once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..edge.model import Model
from ..edge.pipeline import FieldPipeline, FieldResult
from ..edge.sources.base import Frame
from ..edge.sources.files import read_frame
from ..edge.station import BATCH

#: Record columns, in file order, with their Arrow type names.
COLUMNS: dict[str, str] = {
    "path": "string",
    "slide": "string",
    "sha256": "string",
    "label": "string",
    "probabilities": "string",
    "confidence": "float64",
    "uncertain": "bool",
    "reasons": "list<string>",
    "cell_count": "int64",
    "phash": "string",
    "ood_score": "float64",
    "model": "string",
    "model_sha256": "string",
    "error": "string",
}

#: What ``score_tasks`` returns: the record columns and the ``skipped`` flag.
TASK_COLUMNS = {**COLUMNS, "skipped": "bool"}


@dataclass(frozen=True)
class Task:
    """One field to score: its file, its slide, and the content SHA-256 of the row
    already stored for it with this model (None: not scored yet)."""

    path: str
    slide: str
    done_sha256: str | None = None


def _classified(pipeline: FieldPipeline, frames: list[Frame]) -> list[FieldResult]:
    """The pipeline's results of a group of frames, in order, from one model call, as the
    station's folder path makes them (a call per field costs about a third more per field).
    A group that raises is redone frame by frame, so an odd field is an error result, never
    a failed batch."""
    try:
        return pipeline.classify([pipeline.analyse(f) for f in frames])
    except Exception:  # noqa: BLE001 (redone one by one, each error kept)
        return [_result(pipeline, f) for f in frames]


def _result(pipeline: FieldPipeline, frame: Frame) -> FieldResult:
    try:
        return pipeline(frame)
    except Exception as exc:  # noqa: BLE001 (one odd file must not end a long job)
        error = f"{frame.source_id}: {type(exc).__name__}: {exc}"
        return FieldResult(frame.source_id, frame.time, frame.sha256, error=error)


def score_tasks(pipeline: FieldPipeline, model_name: str, tasks: Iterable[Task]) -> list[dict]:
    """Read and score fields exactly as the station does (``read_frame`` -> ``pipeline``,
    ``BATCH`` fields per model call).

    Returns one record per task, each with an extra ``skipped`` flag: True (and no other
    figures) when the file's content SHA-256 equals the task's ``done_sha256``, i.e. this
    model already scored this content. A field that raises is an error record, never a
    failed batch.
    """
    out: list[dict] = []
    todo: list[tuple[int, Task, Frame]] = []  # (place in out, task, frame) of the next group

    def classify_todo() -> None:
        for (k, task, _), res in zip(todo, _classified(pipeline, [f for _, _, f in todo])):
            out[k] = _record(pipeline, model_name, task, res)
        todo.clear()

    for task in tasks:
        frame = read_frame(Path(task.path))
        if task.done_sha256 is not None and frame.sha256 == task.done_sha256:
            out.append({"path": task.path, "skipped": True})
            continue
        todo.append((len(out), task, frame))
        out.append({})  # filled when its group is classified
        if len(todo) == BATCH:
            classify_todo()
    if todo:
        classify_todo()
    return out


def _record(pipeline: FieldPipeline, model_name: str, task: Task, result: FieldResult) -> dict:
    return {
        "path": task.path,
        "slide": task.slide,
        "sha256": result.image_sha256,
        "label": result.label,
        "probabilities": None if result.probabilities is None else json.dumps(result.probabilities),
        "confidence": result.confidence,
        "uncertain": bool(result.uncertain),
        "reasons": list(result.reasons),
        "cell_count": int(result.cell_count),
        "phash": result.phash,
        "ood_score": result.ood_score,
        "model": model_name,
        "model_sha256": pipeline.model.sha256,
        "error": result.error,
        "skipped": False,
    }


def pipeline_scorer(model: Model):
    """A worker's scorer for ``leukedge score`` (``worker.Job``): ``score_tasks`` with the
    station's ``FieldPipeline`` on ``model``."""
    return partial(score_tasks, FieldPipeline(model), model.name)


def decode(record: dict) -> dict:
    """A stored record with ``probabilities`` as a dict and ``reasons`` as a tuple."""
    row = {k: record.get(k) for k in COLUMNS}
    if row["probabilities"] is not None:
        row["probabilities"] = json.loads(row["probabilities"])
    row["reasons"] = tuple(row["reasons"] or ())
    return row
