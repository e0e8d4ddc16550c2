"""Per-slide results in SQLite: durable transactions, no field twice.

The database (``results.db`` in the results folder; default
``$LEUKEDGE_RESULTS`` or ``~/.local/share/leukedge/results``) runs in WAL mode
with ``synchronous=FULL``: a result is on disk when ``log_result`` returns, so
power loss or SIGKILL loses at most the field in flight. (With NORMAL, WAL
commits are durable only at the next checkpoint.) Inside ``transaction`` the
results of a group of fields are on disk together, with one disk sync, when
the block ends; a crash before then loses the group, none of which is then
logged, so all of it is processed again on restart. A unique key
(slide, source_id, image_sha256) makes logging idempotent: logging the same
field again is a no-op, and ``has`` lets a restarted station skip fields
already done. The log is the only done-state: nothing is written into a
watched folder, and a new or emptied results folder starts afresh.

A slide has a validated id (``validate_slide_id``), an operator, notes, a state
(open or ended), start and end times, the model's name and SHA-256 and, once
ended, its stored call. Every field keeps its reasons for being uncertain.
SQLite problems (a corrupt file, a read-only folder, a full disk) surface as
``ResultsError`` naming the database and what to do; committed rows stay intact.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..errors import LeukedgeError

#: Version of the schema this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = 2
DB_NAME = "results.db"
MEMORY = ":memory:"

#: A slide id: 1-64 letters, digits, ``-``, ``_`` or ``.``, starting with a letter or
#: digit, so an id is always one safe path component (never ``..`` or hidden).
SLIDE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

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
    (  # v2: slides first-class (state, operator, notes, model, stored call), field reasons
        "ALTER TABLE slides ADD COLUMN state TEXT NOT NULL DEFAULT 'open' "
        "CHECK (state IN ('open', 'ended'))",
        "ALTER TABLE slides ADD COLUMN operator TEXT",
        "ALTER TABLE slides ADD COLUMN notes TEXT",
        "ALTER TABLE slides ADD COLUMN model TEXT",
        "ALTER TABLE slides ADD COLUMN call TEXT",
        "UPDATE slides SET state = CASE WHEN ended IS NULL THEN 'open' ELSE 'ended' END, "
        "model = json_extract(meta, '$.model'), operator = json_extract(meta, '$.operator'), "
        "meta = json_remove(meta, '$.model', '$.operator')",
        "ALTER TABLE results ADD COLUMN reasons TEXT",
        "ALTER TABLE results ADD COLUMN quality TEXT",
        "ALTER TABLE results ADD COLUMN phash TEXT",
        "ALTER TABLE results ADD COLUMN frame TEXT",
        "CREATE INDEX results_image ON results (image_sha256)",
    ),
)

_REQUIRED = ("source_id", "image_sha256", "label", "probabilities")
_OPTIONAL = (
    "time",
    "model_sha256",
    "confidence",
    "uncertain",
    "cell_count",
    "timings",
    "reasons",
    "quality",
    "phash",
    "frame",
)
_COLUMNS = (
    "source_id, time, image_sha256, model_sha256, label, probabilities, confidence, "
    "uncertain, cell_count, timings, reasons, quality, phash, frame, error"
)
_JSON_COLUMNS = ("probabilities", "timings", "reasons", "quality")


class ResultsError(LeukedgeError, RuntimeError):
    """The results database cannot be read or written; names the file and the fix."""


class SchemaError(ResultsError):
    """The database was written by a newer leukedge."""


class SlideError(LeukedgeError, ValueError):
    """A slide id or slide state that does not allow the request (bad id, ended slide)."""


def validate_slide_id(slide_id: str) -> str:
    """``slide_id`` if it is a valid slide id (see ``SLIDE_ID``), else ``SlideError``."""
    if not isinstance(slide_id, str) or not SLIDE_ID.fullmatch(slide_id):
        raise SlideError(
            f"invalid slide id {slide_id!r}: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (e.g. S-0042)"
        )
    return slide_id


def default_results_dir() -> Path:
    """``$LEUKEDGE_RESULTS`` if set, else ``~/.local/share/leukedge/results``."""
    env = os.environ.get("LEUKEDGE_RESULTS")
    return Path(env) if env else Path.home() / ".local/share/leukedge/results"


@dataclass(frozen=True)
class SlideInfo:
    """A slide's row and its counts (``fields`` includes ``errors``).

    state : "open" or "ended". call : the stored call of an ended slide
    (``{"label", "text", "refer", "figures"}``), else None.
    """

    id: str
    state: str
    started: float
    ended: float | None
    operator: str | None
    notes: str | None
    model: str | None
    model_sha256: str | None
    call: dict[str, Any] | None
    meta: dict[str, Any]
    fields: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).astimezone().isoformat("T", "seconds")


def _floats(value: dict | None) -> str | None:
    return None if value is None else json.dumps({str(k): float(v) for k, v in value.items()})


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=float)


def _problem(path: Path, exc: sqlite3.Error) -> ResultsError:
    """A one-line ``ResultsError`` for a SQLite failure on ``path``."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        fix = "move it aside (it is kept for inspection) and start again; a new one is created"
        return ResultsError(f"{path}: not a readable results database ({text}); {fix}")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        fix = "check that the folder and file are writable by this user"
    elif "full" in text:
        fix = "free disk space; results committed so far are kept"
    else:
        fix = "check the disk and the file's permissions"
    return ResultsError(f"{path}: cannot use the results database ({text}); {fix}")


class ResultsLog:
    """The results database in a folder (``results.db``), at a ``.db`` path, or
    ``":memory:"`` (nothing kept; demos and tests).

    ``create=False`` raises ``FileNotFoundError`` instead of creating a missing
    database. Raises ``SchemaError`` for a database of a newer schema; older
    ones are migrated in one transaction. Safe to share between threads.
    """

    def __init__(self, location: str | Path | None = None, *, create: bool = True):
        memory = str(location) == MEMORY
        path = Path(location) if location is not None else default_results_dir()
        if memory or path.suffix in (".db", ".sqlite", ".sqlite3"):
            self.path = path
        else:
            self.path = path / DB_NAME
        if not memory and not create and not self.path.is_file():
            raise FileNotFoundError(f"no results database at {self.path}")
        self._lock = threading.RLock()
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise ResultsError(
                f"{self.path}: cannot open the results database ({exc}); "
                "check that the folder exists and is writable"
            ) from exc
        self._db.row_factory = sqlite3.Row
        try:
            with self._sql():
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal" and not memory:
                    raise ResultsError(f"{self.path}: WAL mode unavailable (got {mode!r})")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """Hold the lock; turn SQLite errors into one-line ``ResultsError``."""
        with self._lock:
            try:
                yield
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise _problem(self.path, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Keep the writes made in the block in one transaction: one commit (one disk sync)
        at its end keeps all of them, and an error or a crash before it keeps none. Other
        threads wait for the block; a block inside another joins the outer one."""
        with self._sql():
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        with self.transaction():  # another process may be migrating too
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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- slides -----------------------------------------------------------------

    def start_slide(
        self,
        slide_id: str,
        *,
        model_sha256: str | None = None,
        model: str | None = None,
        operator: str | None = None,
        notes: str | None = None,
        reopen: bool = False,
        **meta: Any,
    ) -> SlideInfo:
        """Start ``slide_id``, or continue it if it is open (its start time, model,
        operator and metadata are kept; ``notes`` given here replace the old ones).

        An ended slide raises ``SlideError`` unless ``reopen`` (its stored call is
        then cleared). ``meta`` must be JSON-serialisable.
        """
        validate_slide_id(slide_id)
        with self.transaction():
            row = self._db.execute(
                "SELECT state, ended FROM slides WHERE id = ?", (slide_id,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO slides (id, started, model_sha256, model, operator, notes, "
                    "meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (slide_id, time.time(), model_sha256, model, operator, notes, _dump(meta)),
                )
            elif row["state"] == "ended" and not reopen:
                raise SlideError(
                    f"slide {slide_id!r} ended at {_iso(row['ended'])}; use a new slide id, "
                    "or reopen it to add fields"
                )
            else:
                self._db.execute(
                    "UPDATE slides SET state = 'open', ended = NULL, call = NULL, "
                    "notes = COALESCE(?, notes), operator = COALESCE(operator, ?) WHERE id = ?",
                    (notes, operator, slide_id),
                )
        return self.slide(slide_id)

    def end_slide(self, slide_id: str, call: dict[str, Any] | None = None) -> SlideInfo:
        """End ``slide_id`` now and store its ``call`` (JSON-serialisable); ``KeyError``
        if there is no such slide."""
        with self._sql():
            cur = self._db.execute(
                "UPDATE slides SET state = 'ended', ended = ?, call = ? WHERE id = ?",
                (time.time(), _dump(call), slide_id),
            )
        if cur.rowcount == 0:
            self.slide(slide_id)  # raises KeyError naming the known slides
        return self.slide(slide_id)

    def _slides(self, where: str = "", params: tuple = ()) -> list[SlideInfo]:
        with self._sql():
            rows = self._db.execute(
                "SELECT s.id, s.state, s.started, s.ended, s.operator, s.notes, s.model, "
                "s.model_sha256, s.call, s.meta, COUNT(r.id) AS fields, "
                "COUNT(r.error) AS errors FROM slides s "
                f"LEFT JOIN results r ON r.slide = s.id {where} "
                "GROUP BY s.id ORDER BY s.started",
                params,
            ).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            row["meta"] = json.loads(row["meta"] or "{}")
            row["call"] = json.loads(row["call"]) if row["call"] else None
            out.append(SlideInfo(**row))
        return out

    def slides(self) -> list[SlideInfo]:
        """All slides, oldest first."""
        return self._slides()

    def slide(self, slide_id: str) -> SlideInfo:
        """One slide; ``KeyError`` naming the latest slides if there is none."""
        found = self._slides("WHERE s.id = ?", (slide_id,))
        if found:
            return found[0]
        known = ", ".join(s.id for s in self.slides()[-5:]) or "none"
        raise KeyError(f"no slide {slide_id!r} in {self.path} (latest: {known})")

    def find_slide(self, slide_id: str) -> SlideInfo | None:
        """One slide, or None if there is none."""
        found = self._slides("WHERE s.id = ?", (slide_id,))
        return found[0] if found else None

    def state(self, slide_id: str) -> str | None:
        """A slide's state ("open" or "ended"), or None if there is no such slide; cheaper
        than ``find_slide``, which counts the slide's fields."""
        with self._sql():
            row = self._db.execute("SELECT state FROM slides WHERE id = ?", (slide_id,)).fetchone()
        return None if row is None else row["state"]

    # -- results ----------------------------------------------------------------

    def _insert(self, slide_id: str, values: tuple) -> int | None:
        try:
            with self._sql():
                cur = self._db.execute(
                    f"INSERT INTO results (slide, {_COLUMNS}) VALUES "
                    "(?, ?, ?, ?, COALESCE(?, (SELECT model_sha256 FROM slides WHERE id = ?)), "
                    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (slide, source_id, image_sha256) DO NOTHING",
                    (slide_id, *values[:4], slide_id, *values[4:]),
                )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise KeyError(f"no slide {slide_id!r}; call start_slide first") from exc
            raise
        return cur.lastrowid if cur.rowcount == 1 else None

    def log_result(self, slide_id: str, result: dict[str, Any]) -> int | None:
        """Log one classified field; its row id if new, None if already logged.

        ``result`` keys: source_id, image_sha256, label, probabilities
        ({class: p}) and optionally time (default now), model_sha256 (default
        the slide's), confidence (default max p), uncertain (bool), cell_count,
        timings ({stage: seconds}), reasons (strings), quality ({name: figure}),
        phash (hex string) and frame (path of the field's image file). Numpy
        scalars are fine.
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
        reasons = result.get("reasons")
        frame = result.get("frame")
        return self._insert(
            slide_id,
            (
                result["source_id"],
                float(result.get("time") or time.time()),
                result["image_sha256"],
                result.get("model_sha256"),
                str(result["label"]),
                _floats(probs),
                float(max(probs.values()) if confidence is None else confidence),
                None if uncertain is None else int(bool(uncertain)),
                None if cells is None else int(cells),
                _floats(result.get("timings")),
                None if reasons is None else json.dumps([str(r) for r in reasons]),
                _dump(result.get("quality")),
                result.get("phash"),
                None if frame is None else str(frame),
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
        frame: str | Path | None = None,
    ) -> int | None:
        """Log a field that could not be classified (at ``when``, default now); its row
        id if new. Errors without ``image_sha256`` (no frame at all) are never
        deduplicated."""
        values = (source_id, when or time.time(), image_sha256, None) + (None,) * 9
        path = None if frame is None else str(frame)
        return self._insert(slide_id, (*values, path, str(error)))

    def set_reasons(self, field_id: int, reasons: tuple[str, ...] | list[str]) -> None:
        """Replace a logged field's reasons (e.g. add "duplicate", known once counted)."""
        with self._sql():
            self._db.execute(
                "UPDATE results SET reasons = ? WHERE id = ?",
                (json.dumps([str(r) for r in reasons]), field_id),
            )

    def has(self, slide_id: str, source_id: str, image_sha256: str | None) -> bool:
        """True if this field (result or error) is already logged for the slide.
        Always False without ``image_sha256``: such errors are never deduplicated."""
        return image_sha256 is not None and self.field_state(slide_id, source_id, image_sha256)[1]

    def field_state(
        self, slide_id: str, source_id: str, image_sha256: str | None
    ) -> tuple[str | None, bool]:
        """``(state(slide_id), has(slide_id, source_id, image_sha256))`` in one query: what
        a station asks of every field it reads and again of every field it logs."""
        with self._sql():
            row = self._db.execute(
                "SELECT state, EXISTS (SELECT 1 FROM results WHERE slide = slides.id "
                "AND source_id = ? AND image_sha256 = ?) AS logged FROM slides WHERE id = ?",
                (source_id, image_sha256, slide_id),
            ).fetchone()
        return (None, False) if row is None else (row["state"], bool(row["logged"]))

    def slide_of(self, source_id: str, image_sha256: str | None) -> str | None:
        """The slide (the latest) that holds this field, or None."""
        if image_sha256 is None:
            return None
        with self._sql():
            row = self._db.execute(
                "SELECT slide FROM results WHERE image_sha256 = ? AND source_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (image_sha256, source_id),
            ).fetchone()
        return None if row is None else row["slide"]

    def results(self, slide_id: str) -> list[dict[str, Any]]:
        """The slide's fields in logging order, as plain dicts: ``id`` (the field's
        row id), the ``log_result`` keys (probabilities, timings, quality as dicts,
        reasons as a list, uncertain as bool or None) and ``error``."""
        with self._sql():
            rows = self._db.execute(
                f"SELECT id, {_COLUMNS} FROM results WHERE slide = ? ORDER BY id", (slide_id,)
            ).fetchall()
        return [_row(r) for r in rows]

    def outcomes(self, slide_id: str) -> list[dict[str, Any]]:
        """The slide's fields in logging order with only what a slide's tally counts, as
        ``results`` gives them: ``id``, ``label``, ``uncertain``, ``error``,
        ``image_sha256``, ``phash`` and ``reasons`` (the other JSON columns not decoded)."""
        with self._sql():
            rows = self._db.execute(
                "SELECT id, label, uncertain, error, image_sha256, phash, reasons "
                "FROM results WHERE slide = ? ORDER BY id",
                (slide_id,),
            ).fetchall()
        return [_row(r) for r in rows]

    def field(self, field_id: int) -> dict[str, Any]:
        """One field by its row id, with its ``slide``; ``KeyError`` if there is none."""
        with self._sql():
            r = self._db.execute(
                f"SELECT id, slide, {_COLUMNS} FROM results WHERE id = ?", (field_id,)
            ).fetchone()
        if r is None:
            raise KeyError(f"no field {field_id} in {self.path}")
        return _row(r)

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

    def record(self, slide_id: str) -> dict[str, Any]:
        """Everything stored about a slide as plain dicts (reports, the web page, JSON):
        ``{"slide": SlideInfo fields (with the stored call), "tally": ..., "fields": [...]}``.
        Each field's ``frame`` is the path of its image file (a saved frame or the
        source file; None if not kept)."""
        return {
            "slide": self.slide(slide_id).to_json(),
            "tally": self.tally(slide_id),
            "fields": self.results(slide_id),
        }

    # -- export -----------------------------------------------------------------

    def export(self, slide_id: str, fmt: str = "csv", out: str | Path | TextIO | None = None):
        """Write a slide's results as CSV (one row per field, a ``p_<class>`` column
        per class, local ISO times; cells that a spreadsheet would run as a formula
        are quoted with a leading ``'``) or JSON (slide, tally and rows; epoch
        times) to ``out`` (a path, its folder created if missing, or a text
        stream; default stdout)."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}; use csv or json")
        record = self.record(slide_id)
        if isinstance(out, (str, Path)):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with open(out, "w", newline="", encoding="utf-8") as f:
                _write(f, fmt, record)
        else:
            _write(out or sys.stdout, fmt, record)


def _row(r: sqlite3.Row) -> dict[str, Any]:
    row = dict(r)
    for key in _JSON_COLUMNS:
        if key in row:
            row[key] = json.loads(row[key]) if row[key] else None
    row["uncertain"] = None if row["uncertain"] is None else bool(row["uncertain"])
    return row


#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA) else value


def _write(f: TextIO, fmt: str, record: dict) -> None:
    slide, rows = record["slide"], record["fields"]
    if fmt == "json":
        json.dump({"slide": slide, "tally": record["tally"], "results": rows}, f, indent=2)
        f.write("\n")
        return
    classes = list(dict.fromkeys(c for r in rows for c in (r["probabilities"] or {})))
    fields = ["slide", "source_id", "time", "label", "confidence", "uncertain", "reasons"]
    fields += ["cell_count", *(f"p_{c}" for c in classes), "error", "image_sha256"]
    fields += ["model_sha256", "timings"]
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        probs = r["probabilities"] or {}
        row = {
            **r,
            "slide": slide["id"],
            "time": _iso(r["time"]),
            "reasons": " ".join(r["reasons"] or ()),
            "timings": json.dumps(r["timings"]) if r["timings"] else "",
            **{f"p_{c}": probs.get(c, "") for c in classes},
        }
        writer.writerow({k: _cell(v) for k, v in row.items()})
