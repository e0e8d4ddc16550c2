"""Per-slide results in SQLite: one durable transaction per field, none twice.

The database (``results.db`` in the results folder; default
``$LEUKEDGE_RESULTS`` or ``~/.local/share/leukedge/results``) runs in WAL mode
with ``synchronous=FULL``: a result is on disk when ``log_result`` returns, so
power loss or SIGKILL loses at most the field in flight. (With NORMAL, WAL
commits are durable only at the next checkpoint: a hot folder could then have
marked a field done whose row was lost.) A unique key
(slide, source_id, image_sha256) makes logging idempotent: logging the same
field again is a no-op that returns False, and ``has`` lets a restarted run
skip fields already done.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

#: Version of the schema this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
DB_NAME = "results.db"

#: _MIGRATIONS[v] upgrades a database from schema version v to v + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE slides (
            id TEXT PRIMARY KEY,
            started REAL NOT NULL,
            ended REAL,
            model_sha256 TEXT,
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            slide TEXT NOT NULL REFERENCES slides(id),
            source_id TEXT NOT NULL,
            time REAL NOT NULL,
            image_sha256 TEXT,
            model_sha256 TEXT,
            label TEXT,
            probabilities TEXT,
            confidence REAL,
            uncertain INTEGER,
            cell_count INTEGER,
            timings TEXT,
            error TEXT,
            CHECK ((error IS NULL) = (label IS NOT NULL)),
            UNIQUE (slide, source_id, image_sha256)
        )""",
    ),
)

_REQUIRED = ("source_id", "image_sha256", "label", "probabilities")
_OPTIONAL = ("time", "model_sha256", "confidence", "uncertain", "cell_count", "timings")
_COLUMNS = (
    "source_id, time, image_sha256, model_sha256, label, probabilities, confidence, "
    "uncertain, cell_count, timings, error"
)


class SchemaError(RuntimeError):
    """The database was written by a newer leukedge."""


def default_results_dir() -> Path:
    """``$LEUKEDGE_RESULTS`` if set, else ``~/.local/share/leukedge/results``."""
    env = os.environ.get("LEUKEDGE_RESULTS")
    return Path(env) if env else Path.home() / ".local/share/leukedge/results"


@dataclass(frozen=True)
class Slide:
    """A slide's row and its counts (``fields`` includes ``errors``)."""

    id: str
    started: float
    ended: float | None
    model_sha256: str | None
    meta: dict[str, Any]
    fields: int
    errors: int


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).astimezone().isoformat("T", "seconds")


def _json(value: dict | None) -> str | None:
    return None if value is None else json.dumps({str(k): float(v) for k, v in value.items()})


class ResultsLog:
    """The results database in a folder (``results.db``) or at a ``.db`` path.

    ``create=False`` raises ``FileNotFoundError`` instead of creating a missing
    database. Raises ``SchemaError`` for a database of a newer schema; older
    ones are migrated in one transaction.
    """

    def __init__(self, location: str | Path | None = None, *, create: bool = True):
        path = Path(location) if location is not None else default_results_dir()
        self.path = path if path.suffix in (".db", ".sqlite", ".sqlite3") else path / DB_NAME
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no results database at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"{self.path}: WAL mode unavailable (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")  # another process may be migrating too
        try:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: results schema version {version} is newer than this "
                    f"leukedge supports ({SCHEMA_VERSION}); upgrade leukedge"
                )
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- slides -----------------------------------------------------------------

    def start_slide(self, slide_id: str, *, model_sha256: str | None = None, **meta: Any) -> Slide:
        """Start ``slide_id``, or continue it after a restart (its start time and
        metadata are kept, ``ended`` is cleared). ``meta`` must be JSON-serialisable."""
        self._db.execute(
            "INSERT INTO slides (id, started, model_sha256, meta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET ended = NULL",
            (slide_id, time.time(), model_sha256, json.dumps(meta)),
        )
        return self.slide(slide_id)

    def end_slide(self, slide_id: str) -> None:
        """Record when ``slide_id`` ended."""
        self._db.execute("UPDATE slides SET ended = ? WHERE id = ?", (time.time(), slide_id))

    def _slides(self, where: str = "", params: tuple = ()) -> list[Slide]:
        rows = self._db.execute(
            "SELECT s.*, COUNT(r.id) AS fields, COUNT(r.error) AS errors FROM slides s "
            f"LEFT JOIN results r ON r.slide = s.id {where} GROUP BY s.id ORDER BY s.started",
            params,
        )
        return [Slide(**{**dict(r), "meta": json.loads(r["meta"])}) for r in rows]

    def slides(self) -> list[Slide]:
        """All slides, oldest first."""
        return self._slides()

    def slide(self, slide_id: str) -> Slide:
        """One slide; ``KeyError`` naming the latest slides if there is none."""
        found = self._slides("WHERE s.id = ?", (slide_id,))
        if found:
            return found[0]
        known = ", ".join(s.id for s in self.slides()[-5:]) or "none"
        raise KeyError(f"no slide {slide_id!r} in {self.path} (latest: {known})")

    # -- results ----------------------------------------------------------------

    def _insert(self, slide_id: str, values: tuple) -> bool:
        try:
            cur = self._db.execute(
                f"INSERT INTO results (slide, {_COLUMNS}) VALUES "
                "(?, ?, ?, ?, COALESCE(?, (SELECT model_sha256 FROM slides WHERE id = ?)), "
                "?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (slide, source_id, image_sha256) DO NOTHING",
                (slide_id, *values[:4], slide_id, *values[4:]),
            )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise KeyError(f"no slide {slide_id!r}; call start_slide first") from exc
            raise
        return cur.rowcount == 1

    def log_result(self, slide_id: str, result: dict[str, Any]) -> bool:
        """Log one classified field; True if new, False if already logged.

        ``result`` keys: source_id, image_sha256, label, probabilities
        ({class: p}) and optionally time (default now), model_sha256 (default
        the slide's), confidence (default max p), uncertain (bool), cell_count,
        timings ({stage: seconds}). Numpy scalars are fine.
        """
        missing = [k for k in _REQUIRED if not result.get(k)]
        unknown = sorted(set(result) - set(_REQUIRED) - set(_OPTIONAL))
        if missing or unknown:
            raise ValueError(
                f"result for slide {slide_id!r}: missing {missing}, unknown {unknown}; "
                f"keys are {_REQUIRED + _OPTIONAL}"
            )
        probs = result["probabilities"]
        confidence = result.get("confidence")
        uncertain, cells = result.get("uncertain"), result.get("cell_count")
        return self._insert(
            slide_id,
            (
                result["source_id"],
                float(result.get("time") or time.time()),
                result["image_sha256"],
                result.get("model_sha256"),
                str(result["label"]),
                _json(probs),
                float(max(probs.values()) if confidence is None else confidence),
                None if uncertain is None else int(bool(uncertain)),
                None if cells is None else int(cells),
                _json(result.get("timings")),
                None,
            ),
        )

    def log_error(
        self,
        slide_id: str,
        source_id: str,
        error: str,
        image_sha256: str | None = None,
        *,
        when: float | None = None,
    ) -> bool:
        """Log a field that could not be classified (at ``when``, default now); True
        if new. Errors without ``image_sha256`` (no frame at all) are never deduplicated."""
        values = (source_id, when or time.time(), image_sha256, None) + (None,) * 6
        return self._insert(slide_id, (*values, str(error)))

    def has(self, slide_id: str, source_id: str, image_sha256: str | None) -> bool:
        """True if this field (result or error) is already logged for the slide."""
        row = self._db.execute(
            "SELECT 1 FROM results WHERE slide = ? AND source_id = ? AND image_sha256 IS ?",
            (slide_id, source_id, image_sha256),
        ).fetchone()
        return row is not None

    def results(self, slide_id: str) -> list[dict[str, Any]]:
        """The slide's rows in logging order; probabilities/timings as dicts,
        uncertain as bool (None if not given)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM results WHERE slide = ? ORDER BY id", (slide_id,)
        )
        out = []
        for r in rows:
            row = dict(r)
            for key in ("probabilities", "timings"):
                row[key] = json.loads(row[key]) if row[key] else None
            row["uncertain"] = None if row["uncertain"] is None else bool(row["uncertain"])
            out.append(row)
        return out

    def tally(self, slide_id: str) -> dict[str, Any]:
        """Counts for a slide: fields, classified, errors, uncertain and per label."""
        rows = self.results(slide_id)
        classified = [r for r in rows if r["error"] is None]
        return {
            "slide": slide_id,
            "fields": len(rows),
            "classified": len(classified),
            "errors": len(rows) - len(classified),
            "uncertain": sum(bool(r["uncertain"]) for r in classified),
            "labels": dict(Counter(r["label"] for r in classified)),
        }

    # -- export -----------------------------------------------------------------

    def export(self, slide_id: str, fmt: str = "csv", out: str | Path | TextIO | None = None):
        """Write a slide's results as CSV (one row per field, a ``p_<class>`` column
        per class, local ISO times) or JSON (slide, tally and rows; epoch times)
        to ``out`` (a path or text stream; default stdout)."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}; use csv or json")
        args = (fmt, self.slide(slide_id), self.results(slide_id), self.tally(slide_id))
        if isinstance(out, (str, Path)):
            with open(out, "w", newline="", encoding="utf-8") as f:
                _write(f, *args)
        else:
            _write(out or sys.stdout, *args)


def _write(f: TextIO, fmt: str, slide: Slide, rows: list[dict], tally: dict) -> None:
    if fmt == "json":
        head = {
            "id": slide.id,
            "started": slide.started,
            "ended": slide.ended,
            "model_sha256": slide.model_sha256,
            "meta": slide.meta,
        }
        json.dump({"slide": head, "tally": tally, "results": rows}, f, indent=2)
        f.write("\n")
        return
    classes = list(dict.fromkeys(c for r in rows for c in (r["probabilities"] or {})))
    fields = ["slide", "source_id", "time", "label", "confidence", "uncertain", "cell_count"]
    fields += [f"p_{c}" for c in classes] + ["error", "image_sha256", "model_sha256", "timings"]
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        probs = r["probabilities"] or {}
        writer.writerow(
            {
                **r,
                "slide": slide.id,
                "time": _iso(r["time"]),
                "timings": json.dumps(r["timings"]) if r["timings"] else "",
                **{f"p_{c}": probs.get(c, "") for c in classes},
            }
        )
