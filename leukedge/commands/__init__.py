"""The ``leukedge`` CLI verbs, one module each: parse the options, call the library, print.

One mechanism turns errors into exit codes, the same in every verb: library code raises a
``leukedge.errors.LeukedgeError`` (the edge core's ``BundleError``, ``FieldError`` & co.
are ones too), and ``ErrorsAsExit``, the class of the root command, prints it as one
``error: ...`` line on stderr and exits with its ``exit_code`` (2: bad input). A verb
that finds bad input itself calls ``fail``. Results go to stdout, diagnostics to stderr.
"""

from typing import NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..console import err_console
from ..errors import LeukedgeError, UsageError


def fail(message: str) -> NoReturn:
    """Stop the verb with ``error: message`` on stderr and exit status 2 (bad input)."""
    raise UsageError(message)


def print_error(exc: BaseException) -> None:
    """The one-line ``error:`` message of an error, on stderr (its text is not markup)."""
    err_console.print(f"[red]error:[/red] {escape(str(exc))}")


class ErrorsAsExit(TyperGroup):
    """The root command: a ``LeukedgeError`` from any verb becomes one line and its exit
    status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LeukedgeError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
