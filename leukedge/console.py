"""Shared Rich consoles: results on stdout, progress and messages on stderr."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
