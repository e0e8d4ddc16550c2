"""Scoring archives of slides with the station's own per-field pipeline, on this machine
(a process pool) or on a Ray cluster (Ray Data). Ray is imported only by the Ray engine,
and nothing in ``leukedge.edge`` imports this package.

``score_archive(src, out, ...)`` scores a folder tree, list file or glob into a resumable
OUT folder of part files with a per-slide summary; ``score_paths(paths, ...)`` scores a
list of files in memory. Both run the station's pipeline as a ``Job``; ``run_paths`` runs
any other job on a list of files (``leukedge eval``: predictions under its conditions).
"""

from .listing import FieldRef, field_refs, list_fields
from .rows import COLUMNS, decode
from .score import (
    BATCH_SIZE,
    ENGINES,
    ScoreReport,
    check_options,
    run_paths,
    score_archive,
    score_paths,
    slide_summary,
)
from .store import FORMATS, ResultStore
from .worker import Job

__all__ = [
    "BATCH_SIZE",
    "COLUMNS",
    "ENGINES",
    "FORMATS",
    "FieldRef",
    "Job",
    "ResultStore",
    "ScoreReport",
    "check_options",
    "decode",
    "field_refs",
    "list_fields",
    "run_paths",
    "score_archive",
    "score_paths",
    "slide_summary",
]
