"""The light edge core: numpy, OpenCV, ONNX Runtime and LiteRT only.

Nothing under ``leukedge.edge`` may import tensorflow, torch or ultralytics.
"""

from .classes import CLASSES, SCHEMES, scheme_classes
from .model import Model, Prediction, load_model
from .segment import Segmentation, segment
from .synth import synth_field

__all__ = [
    "CLASSES",
    "SCHEMES",
    "scheme_classes",
    "synth_field",
    "segment",
    "Segmentation",
    "load_model",
    "Model",
    "Prediction",
]
