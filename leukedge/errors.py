"""leukedge's own exceptions: problems a user can fix, each with a message that names the
file or option at fault and what to do.

Library code raises them; the command line (``leukedge.commands.ErrorsAsExit``) prints
any of them as one ``error: ...`` line on stderr and exits with its ``exit_code`` (2, bad
input; 1, a step that failed), in every verb.
Anything else is a bug and keeps its traceback. Each class also derives from the built-in
exception it refines, so ``except ValueError`` callers keep working. Standard library only:
every layer, ``leukedge.edge`` included, may import this module.
"""

from __future__ import annotations


class LeukedgeError(Exception):
    """Base: bad input, options or state that the message tells the user how to fix."""

    #: The command line's exit status for this error.
    exit_code = 2


class UsageError(LeukedgeError, ValueError):
    """Options that cannot work together, or a value out of range."""


class DataError(LeukedgeError, ValueError):
    """A data folder, split file or set of fields that cannot be used as asked."""


class ModelError(LeukedgeError, ValueError):
    """A trained model, training run or export that is not what the operation needs."""


class MissingFileError(LeukedgeError, FileNotFoundError):
    """A file or folder named by the user that does not exist."""


class MissingExtraError(LeukedgeError, ImportError):
    """A package this operation needs is not installed; the message names the extra."""


class StepFailed(LeukedgeError, RuntimeError):
    """A step run as its own process (e.g. one training run of a study) failed; the message
    names its log."""

    exit_code = 1
