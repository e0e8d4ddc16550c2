"""Score an archive: list the fields, skip those OUT already holds, run an engine, write
parts as batches finish, then the per-slide summary by the station's slide rule."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..edge.model import Model, load_model
from ..edge.pipeline import FieldPipeline
from ..edge.slide import SlideTally
from ..errors import UsageError
from .listing import field_refs, list_fields
from .rows import TASK_COLUMNS, Task, decode, pipeline_scorer
from .store import ResultStore
from .worker import Job

ENGINES = ("local", "ray")

#: Fields per batch (one part file each): a killed run loses at most the batches in flight.
BATCH_SIZE = 128

#: ``progress(done, total)``: fields handled so far (scored or skipped) of ``total``.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ScoreReport:
    """What one ``score_archive`` run did; ``summary`` is what ``slides.json`` holds
    (``notes``: how the pipeline judged fields, e.g. with built-in trust figures)."""

    out: Path
    summary: dict
    scored: int
    skipped: int
    errors: int
    seconds: float

    @property
    def fields_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def check_options(engine: str, workers: int | None, batch_size: int, address: str | None):
    """``UsageError`` for an unknown engine, a count below 1 or a misplaced address."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise UsageError("--batch-size and --workers must be at least 1")
    if address and engine != "ray":
        raise UsageError("--address joins a Ray cluster: use it with --engine ray")


def run_engine(
    engine: str,
    tasks: Sequence[Task],
    job: Job,
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    address: str | None = None,
) -> Iterator[list[dict]]:
    """The records of ``tasks`` run by ``job`` on ``engine``, batch by batch as they finish."""
    check_options(engine, workers, batch_size, address)
    if not tasks:
        return iter(())
    batches = [list(tasks[i : i + batch_size]) for i in range(0, len(tasks), batch_size)]
    if engine == "local":
        from .engine_local import run_batches

        return run_batches(batches, job, workers)
    try:
        from .engine_ray import run_batches
    except ImportError as exc:
        raise UsageError(
            f"--engine ray needs Ray Data ({exc}): pip install 'leukedge[scale]'"
        ) from exc
    return run_batches(batches, job, workers, address=address)


def pipeline_job(model: Model) -> Job:
    """The ``Job`` of ``leukedge score``: the station's pipeline on ``model``'s bundle."""
    return Job(model.bundle, model.sha256, pipeline_scorer, TASK_COLUMNS)


def run_paths(
    paths: Sequence[str | Path],
    job: Job,
    engine: str = "local",
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    address: str | None = None,
) -> Iterator[list[dict]]:
    """The records of ``job`` on the files ``paths`` (each once, as absolute paths, slides
    their folders: ``field_refs``), batch by batch as they finish: how ``leukedge eval``
    runs a large labelled set on many cores or a Ray cluster."""
    tasks = [Task(r.path, r.slide) for r in field_refs(paths)]
    return run_engine(engine, tasks, job, workers, batch_size, address)


def slide_summary(rows: Sequence[dict], model: Model) -> dict:
    """Per-slide tallies and calls (``SlideTally``) of rows (records or decoded rows),
    slides sorted by id."""
    tallies: dict[str, SlideTally] = {}
    for row in sorted(rows, key=lambda r: r["path"]):
        tally = tallies.setdefault(row["slide"], SlideTally(row["slide"]))
        tally.add(
            row["label"],
            bool(row["uncertain"]),
            row["error"] is not None,
            sha256=row["sha256"],
            phash=row["phash"],
            reasons=row["reasons"],
        )
    return {
        "model": model.name,
        "model_sha256": model.sha256,
        "fields": len(rows),
        "errors": sum(r["error"] is not None for r in rows),
        "slides": [tallies[s].summary() for s in sorted(tallies)],
    }


def score_archive(
    src: str | Path,
    out: str | Path,
    model: str | Path = "default",
    engine: str = "local",
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    address: str | None = None,
    fmt: str = "parquet",
    progress: Progress | None = None,
) -> ScoreReport:
    """Score every field of ``src`` (``list_fields``) into ``out``.

    Resumable: a field whose file content was already scored into ``out`` by this model
    is skipped. Raises a ``LeukedgeError`` for a bad SRC, option or bundle, and
    ``StepFailed`` when the Ray workers fail.
    """
    check_options(engine, workers, batch_size, address)
    refs = list_fields(src)
    net = load_model(model)
    store = ResultStore(out, fmt)
    stored = store.records(net.sha256, ["sha256"])
    done = {p: r["sha256"] for p, r in stored.items() if r["sha256"]}
    tasks = [Task(r.path, r.slide, done.get(r.path)) for r in refs]
    scored = skipped = errors = 0
    if progress is not None:
        progress(0, len(tasks))
    t0 = time.perf_counter()
    for records in run_engine(engine, tasks, pipeline_job(net), workers, batch_size, address):
        new = [r for r in records if not r["skipped"]]
        store.write(new)
        scored, skipped = scored + len(new), skipped + len(records) - len(new)
        errors += sum(r["error"] is not None for r in new)
        if progress is not None:
            progress(scored + skipped, len(tasks))
    seconds = time.perf_counter() - t0
    listed = {r.path for r in refs}
    columns = ["slide", "sha256", "phash", "label", "uncertain", "reasons", "error"]
    stored = store.records(net.sha256, columns)
    rows = [r for p, r in stored.items() if p in listed]
    notes = list(FieldPipeline(net).notes)  # e.g. built-in trust figures for an old bundle
    summary = {"source": str(src), **slide_summary(rows, net), "notes": notes}
    store.write_slides(summary)
    return ScoreReport(store.out, summary, scored, skipped, errors, seconds)


def score_paths(
    paths: Sequence[str | Path],
    model: str | Path = "default",
    engine: str = "local",
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    address: str | None = None,
) -> list[dict]:
    """Decoded rows (``rows.decode``) of ``paths``, in their order, scored in memory by an
    engine with the station's pipeline. Slides are the paths' folders (``field_refs``)."""
    check_options(engine, workers, batch_size, address)
    net = load_model(model)
    found = {}
    for records in run_paths(paths, pipeline_job(net), engine, workers, batch_size, address):
        found.update((r["path"], decode(r)) for r in records)
    return [found[os.path.abspath(Path(p).expanduser())] for p in paths]
