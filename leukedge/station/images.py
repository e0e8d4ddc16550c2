"""Images of a logged field for the page: a thumbnail with the blast mask outline, what the
model was given, and its explanation map drawn over the field. Each is computed once per
field and kept in a small cache (an explanation costs ``GRID**2`` extra inferences)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..edge.capture_trigger import preview
from ..edge.explain import occlusion_map, overlay, preprocessed_view
from ..edge.imageio import FieldError, read_field
from ..edge.report import thumbnail
from ..edge.segment import segment
from ..edge.station import Station
from ..errors import LeukedgeError

#: Width of a gallery thumbnail and of an explanation as shown, in pixels.
THUMB_WIDTH = 200
EXPLAIN_WIDTH = 640


class FieldImageError(LeukedgeError, LookupError):
    """A field without an image to show (an error field, or its image was not kept)."""


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB uint8 (H, W, 3) image."""
    return _encode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) image."""
    return _encode(".png", rgb, [cv2.IMWRITE_PNG_COMPRESSION, 6])


def _encode(ext: str, rgb: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} image as {ext}")
    return buf.tobytes()


class FieldImages:
    """The images of ``station``'s logged fields, by field id (``KeyError``: no such
    field; ``FieldImageError``: no image for it)."""

    def __init__(self, station: Station, cache: int = 64):
        self.station = station
        self.thumbnail = lru_cache(maxsize=4 * cache)(self._thumbnail)
        self.view = lru_cache(maxsize=cache)(self._view)
        self.explanation = lru_cache(maxsize=cache // 4)(self._explanation)

    def field(self, field_id: int) -> np.ndarray:
        """The field's RGB uint8 (H, W, 3) image, as it was classified."""
        row = self.station.log.field(field_id)
        if row["error"] is not None:
            raise FieldImageError(f"field {field_id} could not be classified: {row['error']}")
        if not row["frame"]:
            raise FieldImageError(f"field {field_id}: its image was not kept")
        try:
            return read_field(row["frame"])
        except (FieldError, OSError) as exc:
            raise FieldImageError(f"field {field_id}: its image cannot be read ({exc})") from exc

    def _thumbnail(self, field_id: int) -> bytes:
        """JPEG: the field ``THUMB_WIDTH`` px wide with the blast mask outline (as in the
        report)."""
        return encode_jpeg(thumbnail(self.field(field_id), THUMB_WIDTH), 85)

    def _view(self, field_id: int) -> bytes:
        """PNG: what the model was given (the preprocessed, centre-cropped view)."""
        rgb = self.field(field_id)
        with self.station.model_in_use() as model:
            return encode_png(preprocessed_view(rgb, model))

    def _explanation(self, field_id: int) -> bytes:
        """PNG: the occlusion map of the predicted class over the field, with the mask
        outline, at most ``EXPLAIN_WIDTH`` px wide."""
        rgb = self.field(field_id)
        mask = segment(rgb).mask
        with self.station.model_in_use() as model:
            heat = occlusion_map(rgb, model, mask=mask)
        shown = overlay(rgb, heat, mask)
        return encode_png(preview(shown, EXPLAIN_WIDTH))
