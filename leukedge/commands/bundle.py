"""``leukedge bundle``: maintain model bundles after export (trust figures, self-test, signature).

Each sub-command is a thin verb over a library function that rewrites the bundle's
manifest (and its SHA-256s) in place.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Maintain model bundles: trust figures, known-answer self-test, signature.")
