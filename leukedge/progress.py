"""Rich progress bars on stderr, quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .console import err_console

T = TypeVar("T")


def progress_bar(items: Iterable[T], description: str) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on stderr (only when it is a terminal)."""
    if not sys.stderr.isatty():
        yield from items
        return
    total = len(items) if isinstance(items, Sized) else None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)
