"""Reading smear fields from files and bytes, with a clear error for bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

#: Largest field accepted, in pixels (a 12 MP HQ camera frame is 12.3 MP).
MAX_PIXELS = 50_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class FieldError(ValueError):
    """A file that cannot be used as a smear field; names the file and the problem."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _truncated(data: bytes) -> bool:
    """True when a JPEG lacks its end marker or a PNG its IEND chunk."""
    tail = data[-64:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in tail
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in tail
    return False


def decode_field(data: bytes, source: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS):
    """Decode an encoded image into an RGB uint8 (H, W, 3) field.

    Raises ``FieldError`` naming ``source`` for empty, truncated, undecodable,
    grayscale, RGBA, 16-bit or over-large (> ``max_pixels``) images.
    """
    if not data:
        raise FieldError(source, "empty file (0 bytes)")
    size = _header_size(data)
    if size and size[0] * size[1] > max_pixels:
        raise FieldError(source, f"image too large ({size[0]}x{size[1]} > {max_pixels} px)")
    if _truncated(data):
        raise FieldError(source, "truncated image (end marker missing)")
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise FieldError(source, "not a readable image")
    if img.ndim == 3 and img.shape[0] * img.shape[1] > max_pixels:
        raise FieldError(
            source, f"image too large ({img.shape[1]}x{img.shape[0]} > {max_pixels} px)"
        )
    if img.dtype != np.uint8:
        raise FieldError(
            source, f"{img.dtype} pixels (e.g. 16-bit); an 8-bit RGB field is required"
        )
    if img.ndim == 2 or img.shape[2] == 1:
        raise FieldError(source, "grayscale image; a colour (RGB) smear field is required")
    if img.shape[2] == 4:
        raise FieldError(source, "image has an alpha channel (RGBA); save the field as RGB")
    if img.shape[2] != 3:
        raise FieldError(source, f"{img.shape[2]} channels; an RGB field is required")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_field(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an RGB uint8 (H, W, 3) field; ``FieldError`` if unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FieldError(path, f"cannot read file ({exc.strerror or exc})") from exc
    return decode_field(data, path, max_pixels)


def write_field(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) field (or a bool/uint8 (H, W) mask) to an image file."""
    arr = rgb.astype(np.uint8) * 255 if rgb.dtype == bool else rgb
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr):
        raise FieldError(path, "cannot write image (unknown extension or unwritable folder)")
