"""The local engine: a pool of processes on this machine, one bundle load per process.

Each process runs one OpenCV and one inference thread, so N workers use N cores; at most
two batches per worker are in flight, so memory stays bounded whatever the archive size.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from .rows import Task
from .worker import Job, Scorer

_SCORER: Scorer | None = None  # this worker process's scorer


def _init(job: Job) -> None:
    global _SCORER
    _SCORER = job.start()


def _score(tasks: list[Task]) -> list[dict]:
    return _SCORER(tasks)


def run_batches(
    batches: Sequence[list[Task]], job: Job, workers: int | None = None
) -> Iterator[list[dict]]:
    """Run ``job`` on ``batches`` in ``workers`` processes (default: one per core); yields
    each batch's records as it finishes, in no particular order."""
    workers = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(job,),
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
