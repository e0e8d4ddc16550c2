"""A small persistent set of finished files, rewritten atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: (file name, size in bytes, mtime in ns): a changed file is a new field.
Key = tuple[str, int, int]


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file,
    never a torn one (temp file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DoneSet:
    """Keys of files whose results are logged, kept in a JSON file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._keys = {(str(n), int(s), int(m)) for n, s, m in raw["done"]}
        except FileNotFoundError:
            self._keys = set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: unreadable hot-folder state ({exc}); delete it to start over "
                "(the results log still skips fields it holds)"
            ) from exc

    def __contains__(self, key: Key) -> bool:
        return key in self._keys

    def add(self, key: Key) -> None:
        """Add ``key`` and persist the set before returning."""
        self._keys.add(key)
        done = sorted(self._keys, key=lambda k: (k[2], k[0]))
        write_atomic(self.path, json.dumps({"version": 1, "done": done}, indent=0))
