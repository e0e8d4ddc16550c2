"""The ``leukedge`` CLI verbs, one module each."""

from typing import NoReturn

import typer

from ..console import err_console


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with status 2 (bad input or options)."""
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
