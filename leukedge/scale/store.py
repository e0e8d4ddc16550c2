"""An OUT folder of scored fields: one part file per batch, written atomically.

Layout::

    OUT/parts/part-<run>-<n>.parquet   (or .csv) the rows of one batch
    OUT/slides.json                    the per-slide summaries of the last run

A part is written under a hidden temporary name and renamed into place, so a killed run
leaves whole parts only (Parquet readers and ``pandas.read_parquet(OUT / "parts")`` skip
hidden files). Parts sort in the order they were written; when a field (path and model)
was scored more than once, because its file changed, the last row counts.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import UsageError
from .rows import COLUMNS, decode

FORMATS = ("parquet", "csv")
PARTS = "parts"
SLIDES = "slides.json"


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 (the submodule the callers use)
    except ImportError as exc:
        raise UsageError(
            "Parquet needs pyarrow: pip install 'leukedge[scale]' (or use --format csv)"
        ) from exc
    return pyarrow


def arrow_schema(columns: dict[str, str] = COLUMNS):
    """The ``pyarrow.Schema`` of records with ``columns`` (name -> type, as ``COLUMNS``)."""
    pa = _pyarrow()
    types = {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_()}
    types |= {"int64": pa.int64(), "list<string>": pa.list_(pa.string())}
    return pa.schema([(name, types[kind]) for name, kind in columns.items()])


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    return repr(value) if isinstance(value, float) else str(value)


def _from_csv(row: dict) -> dict:
    """A CSV row back to a record (empty cells are None)."""
    rec = {k: (row.get(k) or None) for k in COLUMNS}
    for k in ("confidence", "ood_score"):
        rec[k] = None if rec[k] is None else float(rec[k])
    rec["uncertain"] = rec["uncertain"] == "True"
    rec["cell_count"] = int(rec["cell_count"] or 0)
    rec["reasons"] = rec["reasons"].split(";") if rec["reasons"] else []
    return rec


class ResultStore:
    """The OUT folder: ``write`` a batch of records, ``records()`` to read them back."""

    def __init__(self, out: str | Path, fmt: str = "parquet"):
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.out = Path(out)
        self.parts = self.out / PARTS
        self.fmt = fmt
        if fmt == "parquet":
            _pyarrow()
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"{self.out}: exists and is not a folder; give a folder for --out")
        self.parts.mkdir(parents=True, exist_ok=True)
        self.run = f"{time.time_ns():020d}"
        self._n = 0

    def write(self, records: list[dict]) -> Path | None:
        """Write one batch of records as one part; None when there are none."""
        if not records:
            return None
        self._n += 1
        path = self.parts / f"part-{self.run}-{self._n:06d}.{self.fmt}"
        if self.fmt == "parquet":
            pa = _pyarrow()
            schema = arrow_schema()
            table = pa.Table.from_pylist([{k: r[k] for k in COLUMNS} for r in records], schema)
            _atomic(path, lambda tmp: pa.parquet.write_table(table, tmp))
        else:

            def write_csv(tmp: Path) -> None:
                with open(tmp, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(COLUMNS)
                    writer.writerows([_csv_cell(r[k]) for k in COLUMNS] for r in records)

            _atomic(path, write_csv)
        return path

    def part_files(self) -> list[Path]:
        """Finished parts, oldest first."""
        return sorted(
            p
            for p in self.parts.glob("part-*")
            if p.suffix.lstrip(".") in FORMATS and not p.name.startswith(".")
        )

    def _read_part(self, path: Path, columns: list[str]) -> Iterator[dict]:
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    rec = _from_csv(row)
                    yield {k: rec[k] for k in columns}
        else:
            yield from _pyarrow().parquet.read_table(path, columns=columns).to_pylist()

    def records(self, model_sha256: str, columns: Sequence[str] = tuple(COLUMNS)) -> dict:
        """Path -> the last record stored for it by the model with this SHA-256 (only
        ``columns`` of it, to keep a large OUT's index small)."""
        wanted = list(dict.fromkeys(["path", "model_sha256", *columns]))
        latest: dict[str, dict] = {}
        for part in self.part_files():
            for rec in self._read_part(part, wanted):
                if rec["model_sha256"] == model_sha256:
                    latest[rec["path"]] = rec
        return latest

    def rows(self, model_sha256: str) -> list[dict]:
        """Decoded rows (``rows.decode``) of one model, sorted by path."""
        return [decode(r) for _, r in sorted(self.records(model_sha256).items())]

    def write_slides(self, summary: dict) -> Path:
        """Write the per-slide summary (``slides.json``) atomically."""
        path = self.out / SLIDES
        _atomic(path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
        return path
