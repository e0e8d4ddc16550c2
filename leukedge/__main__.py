"""``python -m leukedge``: the ``leukedge`` command line."""

from .cli import main

main()
