"""What every worker of every engine runs: a ``Job``. It loads the bundle once, checks it is
the one the run was started with, and scores batches of tasks with what it made of it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from ..edge.bundle import BundleError
from ..edge.model import Model, load_model

#: A batch of ``rows.Task`` -> one record per task (a dict of the job's ``columns``).
Scorer = Callable[[list], list[dict]]


@dataclass(frozen=True)
class Job:
    """What an engine's workers do, picklable (it travels to each worker).

    ``scorer`` makes a worker's ``Scorer`` of the loaded model: a module-level function or
    a ``functools.partial`` of one (the station's pipeline for ``leukedge score``,
    predictions under the evaluation's conditions for ``leukedge eval``). ``columns``
    names the records' fields with their Arrow types (as ``rows.COLUMNS``), for the Ray
    engine's blocks; ``backend`` is ``load_model``'s.
    """

    bundle: Path
    model_sha256: str
    scorer: Callable[[Model], Scorer]
    columns: dict[str, str]
    backend: str = "auto"

    def start(self, bundle: str | Path | None = None) -> Scorer:
        """This worker's scorer: the job's bundle (or ``bundle``, a worker's own copy of
        it) loaded and verified by ``load_verified``."""
        bundle = bundle or self.bundle
        return self.scorer(load_verified(bundle, self.model_sha256, self.backend))


def load_verified(bundle: str | Path, model_sha256: str, backend: str = "auto") -> Model:
    """The model of ``bundle`` on ``backend`` with one OpenCV and one inference thread (a
    worker is one core). ``load_model`` verifies the bundle's SHA-256s; this also refuses
    a bundle whose model is not ``model_sha256``."""
    cv2.setNumThreads(1)
    with warnings.catch_warnings():  # the driver loaded this bundle and showed them once
        warnings.simplefilter("ignore")
        model = load_model(bundle, backend, threads=1)
    if model.sha256 != model_sha256:
        raise BundleError(
            f"{bundle}: model SHA-256 {model.sha256} on this worker, {model_sha256} in the run; "
            "give every node the same bundle"
        )
    return model
