"""What every worker of every engine does first: load the bundle and check it is the one
the run was started with."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2

from ..edge.bundle import BundleError
from ..edge.model import load_model
from ..edge.pipeline import FieldPipeline


def load_pipeline(bundle: str | Path, model_sha256: str) -> FieldPipeline:
    """The station's ``FieldPipeline`` on ``bundle``, with one OpenCV and one inference
    thread (a worker is one core). ``load_model`` verifies the bundle's SHA-256s; this
    also refuses a bundle whose model is not ``model_sha256``."""
    cv2.setNumThreads(1)
    with warnings.catch_warnings():  # the driver loaded this bundle and showed them once
        warnings.simplefilter("ignore")
        model = load_model(bundle, threads=1)
    if model.sha256 != model_sha256:
        raise BundleError(
            f"{bundle}: model SHA-256 {model.sha256} on this worker, {model_sha256} in the run; "
            "give every node the same bundle"
        )
    return FieldPipeline(model)
