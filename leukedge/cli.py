"""The ``leukedge`` command line: one program, Ultralytics-style verbs.

Each verb lives in ``leukedge.commands.<verb>`` and imports heavy libraries
only inside its functions, so ``leukedge run`` stays as light as the edge core.
The root command's class (``ErrorsAsExit``) turns any ``LeukedgeError`` of any verb
into one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import typer

from . import __version__
from .commands import (
    ErrorsAsExit,
    bench,
    bundle,
    data,
    demo,
    doctor,
    evaluate,
    explain,
    export,
    results,
    run,
    score,
    segment,
    serve,
    study,
    train,
)

app = typer.Typer(
    name="leukedge",
    help="B-ALL blood-smear classification: data, segmentation, training, export "
    "and an offline edge station. Decision support for research use, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ErrorsAsExit,
)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.command("eval")(evaluate.evaluate)
app.command("export")(export.export)
app.add_typer(results.app, name="results")
app.add_typer(bundle.app, name="bundle")
app.command("run")(run.run)
app.command("serve")(serve.serve)
app.command("doctor")(doctor.doctor)
app.command("demo")(demo.demo)
app.command("segment")(segment.segment)
app.command("explain")(explain.explain)
app.command("score")(score.score)
app.command("bench")(bench.bench)
app.command("study")(study.study)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leukedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """B-ALL blood-smear classification from notebook to Raspberry Pi."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
