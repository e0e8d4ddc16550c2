"""What the model sees: one definition shared by training, export calibration and the station.

Input modes:
- ``field``: the whole RGB field;
- ``field-wb``: the field divided by its bright background, per channel
  (removes lamp colour and brightness); ``white_point`` says how the background is
  found: ``bright-median`` (``illumination.white_balance``, the default) or
  ``local-max`` (``illumination.flat_field``: a local maximum, which glare pins at 255
  on most real fields; bundles made before ``white_point`` existed used it);
- ``mask``: the reference notebook's input, the field with everything outside the
  blast mask set to black.

The field is then resized so its shorter side is ``size`` and centre-cropped to
``size x size`` (what Ultralytics does for classification), and scaled as
``x * scale + offset`` in RGB order (Ultralytics: ``scale=1/255, offset=0``;
MobileNetV2's own ``preprocess_input``: ``scale=1/127.5, offset=-1``).

A model file whose input takes integers (an INT8 model's first step quantizes the scaled
float input) gets them straight from the uint8 view: scaling and quantization act on
each pixel value alone, so a 256-entry table (``integer_lut``) gives exactly the integers
the float path would, without a float copy of the field (``lut_view``; the backend's
``IntegerInput.arrange`` then puts them in the file's layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .illumination import flat_field, white_balance
from .segment import segment

INPUT_MODES = ("field", "field-wb", "mask")
# White point name -> the function that divides a field by it; the first is the default.
WHITE_BALANCES = {"bright-median": white_balance, "local-max": flat_field}
WHITE_POINTS = tuple(WHITE_BALANCES)
DEFAULT_WHITE_POINT = WHITE_POINTS[0]
_IDENTITY = np.arange(256, dtype=np.uint8)


@dataclass(frozen=True)
class Preprocess:
    """Preprocessing settings, stored in every bundle manifest and training run."""

    input_mode: str = "field-wb"
    segmentation: str = "robust"
    size: int = 224
    layout: str = "NCHW"
    scale: float = 1 / 255
    offset: float = 0.0
    white_point: str = DEFAULT_WHITE_POINT

    def __post_init__(self):
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"unknown input mode {self.input_mode!r}; choose {INPUT_MODES}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"unknown layout {self.layout!r}; choose NCHW or NHWC")
        if self.white_point not in WHITE_POINTS:
            raise ValueError(f"unknown white point {self.white_point!r}; choose {WHITE_POINTS}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Settings from a manifest; one written before ``white_point`` existed used local-max."""
        d = {"white_point": "local-max"} | d
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def model_view(
    field: np.ndarray,
    mode: str,
    mask: np.ndarray | None = None,
    seg: str = "robust",
    white_point: str = DEFAULT_WHITE_POINT,
):
    """The RGB uint8 (H, W, 3) image a model gets for ``field`` under an input mode.

    ``mask`` (bool (H, W)) is used by the "mask" mode; it is computed with
    ``segment(field, seg)`` when not given. ``white_point`` is used by "field-wb".
    """
    if mode == "field":
        return field
    if mode == "field-wb":
        return WHITE_BALANCES[white_point](field)
    if mode == "mask":
        if mask is None:
            mask = segment(field, mode=seg).mask
        return np.where(mask[..., None], field, np.uint8(0))
    raise ValueError(f"unknown input mode {mode!r}; choose {INPUT_MODES}")


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop: uint8 (size, size, 3)."""
    h, w = rgb.shape[:2]
    k = size / min(h, w)
    nh, nw = max(size, round(h * k)), max(size, round(w * k))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return rgb[top : top + size, left : left + size]


def view(field: np.ndarray, spec: Preprocess, mask: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) field -> the uint8 (S, S, 3) image the model sees, before scaling."""
    return resize_crop(
        model_view(field, spec.input_mode, mask, spec.segmentation, spec.white_point), spec.size
    )


def _scaled(img: np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 array -> float32 ``x * scale + offset``, elementwise (same shape)."""
    return img.astype(np.float32) * np.float32(spec.scale) + np.float32(spec.offset)


def scale_view(img: np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 (..., S, S, 3) model view(s) -> float32 (..., 3, S, S) or (..., S, S, 3) model
    input(s): ``x * scale + offset`` in the layout ``spec`` says."""
    x = _scaled(img, spec)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3)) if spec.layout == "NCHW" else x


def integer_lut(spec: Preprocess, quantize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(256,) integer model input of each pixel value: ``quantize`` (a runtime's float ->
    integer step, elementwise) of what ``scale_view`` makes of it. Indexing it with a view
    gives the same integers as quantizing ``scale_view`` of the view."""
    return quantize(_scaled(np.arange(256, dtype=np.uint8), spec))


def lut_view(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) model views -> ``lut.dtype`` (N, S, S, 3): each pixel value looked up
    in ``integer_lut``'s table (the views themselves when it is the identity)."""
    if lut.dtype == np.uint8 and np.array_equal(lut, _IDENTITY):
        return img
    table = lut.view(np.uint8) if lut.dtype == np.int8 else lut
    return (
        cv2.LUT(img.reshape(-1, img.shape[-2], img.shape[-1]), table)
        .reshape(img.shape)
        .view(lut.dtype)
    )


def prepare(field: np.ndarray, spec: Preprocess, mask: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) field -> float32 (3, S, S) or (S, S, 3) model input, as ``spec`` says."""
    return scale_view(view(field, spec, mask), spec)
