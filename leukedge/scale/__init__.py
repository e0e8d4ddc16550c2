"""Scoring archives of slides with the station's own per-field pipeline, on this machine
(a process pool) or on a Ray cluster (Ray Data). Ray is imported only by the Ray engine,
and nothing in ``leukedge.edge`` imports this package.

``score_archive(src, out, ...)`` scores a folder tree, list file or glob into a resumable
OUT folder of part files with a per-slide summary; ``score_paths(paths, ...)`` scores a
list of files in memory (for evaluation of large labelled sets).
"""

from .listing import FieldRef, field_refs, list_fields
from .rows import COLUMNS, decode
from .score import BATCH_SIZE, ENGINES, ScoreReport, score_archive, score_paths, slide_summary
from .store import FORMATS, ResultStore

__all__ = [
    "BATCH_SIZE",
    "COLUMNS",
    "ENGINES",
    "FORMATS",
    "FieldRef",
    "ResultStore",
    "ScoreReport",
    "decode",
    "field_refs",
    "list_fields",
    "score_archive",
    "score_paths",
    "slide_summary",
]
