"""Shared Rich consoles: results on stdout, progress and messages on stderr.

Messages are never hard-wrapped, so a file path in an error stays on one line.
"""

from rich.console import Console

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
