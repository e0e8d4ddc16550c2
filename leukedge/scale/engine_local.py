"""The local engine: a pool of processes on this machine, one bundle load per process.

Each process runs one OpenCV and one inference thread, so N workers use N cores; at most
two batches per worker are in flight, so memory stays bounded whatever the archive size.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from .rows import Task, score_tasks
from .worker import load_pipeline

_STATE: tuple | None = None  # (pipeline, model name) of this worker process


def _init(bundle: str, model_sha256: str, model_name: str) -> None:
    global _STATE
    _STATE = (load_pipeline(bundle, model_sha256), model_name)


def _score(tasks: list[Task]) -> list[dict]:
    pipeline, name = _STATE
    return score_tasks(pipeline, name, tasks)


def run_batches(
    batches: Sequence[list[Task]],
    bundle: Path,
    model_name: str,
    model_sha256: str,
    workers: int | None = None,
) -> Iterator[list[dict]]:
    """Score ``batches`` in ``workers`` processes (default: one per core); yields each
    batch's records (``score_tasks``) as it finishes, in no particular order."""
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(str(bundle), model_sha256, model_name),
    )
    todo = iter(batches)
    pending: set[Future] = set()
    try:
        while True:
            while len(pending) < 2 * workers and (batch := next(todo, None)) is not None:
                pending.add(pool.submit(_score, batch))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
