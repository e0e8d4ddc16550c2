"""Reading smear fields from files and bytes: one bounded decode path, with clear errors.

Every encoded field goes through ``decode_field``: the header is read without decoding
(``image_header``), an image over ``max_pixels`` is refused before any decoder allocates
it, the bytes are decoded once, and the result is checked to be an RGB uint8 field.
Errors say whether retrying can help: ``IncompleteFieldError`` (``permanent`` False) for
bytes that end before the image does, a file perhaps still being written, to be read
again once it has changed; every other ``FieldError`` (``permanent`` True) is about the
content, which the same bytes will never change.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import LeukedgeError
from .image_header import HeaderError, ImageHeader, read_header

#: Largest field accepted, in pixels: a 12 MP HQ camera frame is 12.3 MP; 40 MP decodes to
#: 120 MB, which a 2 GB Raspberry Pi can hold alongside the model.
MAX_PIXELS = 40_000_000
#: Encoded bytes per pixel beyond which a file cannot be an 8-bit RGB field (uncompressed
#: RGBA is 4), so longer files are refused unread.
MAX_BYTES_PER_PIXEL = 4

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Appended to the last JPEG scan to tell a complete scan from a cut one (see _cut_jpeg).
_FILLER = bytes(range(1, 255))


class FieldError(LeukedgeError, ValueError):
    """A file that cannot be used as a smear field; names the file and the problem.

    ``permanent`` is True: the bytes themselves are unusable, so decoding them again gives
    the same error (``IncompleteFieldError`` is the exception).
    """

    permanent = True

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class IncompleteFieldError(FieldError):
    """Bytes that end before the image does: a file still being written, or cut short.
    Read it again once its size or time has changed; if it no longer changes, it is cut."""

    permanent = False


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """Largest encoded size accepted for fields of at most ``max_pixels``."""
    return MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20)


def _imdecode(data: bytes) -> np.ndarray | None:
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    return None if img is None or img.size == 0 else img


def _cut_jpeg(data: bytes, header: ImageHeader, img: np.ndarray) -> bool:
    """Whether a JPEG's last scan was cut and re-terminated (decoders fill the rest grey).

    libjpeg leaves every block after the data runs out at zero: uniform grey (128) to the
    end of the image. Only when the last pixel is that grey is it checked exactly: the
    scan is decoded again with filler bytes before its end marker. A complete scan never
    reads them (same pixels); a cut one decodes them (different pixels). A cut inside the
    last MCU (at most its 16 x 16 pixels wrong) leaves no grey and is not detected.
    """
    if img.ndim != 3 or not (img[-1, -1] == 128).all():
        return False
    probe = data[: header.scan_end] + _FILLER + data[header.scan_end : header.end]
    other = _imdecode(probe)
    return other is None or other.shape != img.shape or not np.array_equal(other, img)


def decode_field(
    data: bytes, source: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, TIFF, BMP, WebP, PNM) into an RGB uint8
    (H, W, 3) field.

    Raises ``IncompleteFieldError`` naming ``source`` for empty or cut-short bytes, and
    ``FieldError`` for an image over ``max_pixels`` (checked before decoding), an
    unsupported format, damaged data (a JPEG cut and re-terminated included),
    grayscale, RGBA or 16-bit pixels. Bytes after the image's end are ignored.
    """
    if not data:
        raise IncompleteFieldError(source, "empty file (0 bytes)")
    if len(data) > max_file_bytes(max_pixels):
        raise FieldError(
            source, f"file too large ({len(data) / 1e6:.0f} MB for at most {max_pixels} px)"
        )
    try:
        header = read_header(data)
    except HeaderError as exc:
        cls = FieldError if exc.complete else IncompleteFieldError
        raise cls(source, exc.problem) from None
    if header.pixels > max_pixels:
        raise FieldError(
            source,
            f"image too large ({header.width}x{header.height} > {max_pixels} px); "
            "save a smaller field",
        )
    img = _imdecode(data if header.end == len(data) else data[: header.end])
    if img is None:
        raise FieldError(source, f"not a readable image (damaged {header.format.upper()} data)")
    if img.shape[0] * img.shape[1] > max_pixels:
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
    if header.format == "jpeg" and _cut_jpeg(data, header, img):
        raise FieldError(
            source, "truncated JPEG (data cut and re-terminated: the rest is grey fill)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image_bytes(path: str | Path, max_pixels: int = MAX_PIXELS) -> bytes:
    """The bytes of an image file; ``FieldError`` (permanent) for a file too large to be a
    field of at most ``max_pixels`` (``max_file_bytes``), which is not read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_file_bytes(max_pixels):
            raise FieldError(
                path, f"file too large ({size / 1e6:.0f} MB for at most {max_pixels} px)"
            )
        return path.read_bytes()
    except OSError as exc:
        raise FieldError(path, f"cannot read file ({exc.strerror or exc})") from exc


def read_field(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an RGB uint8 (H, W, 3) field (``read_image_bytes``, then
    ``decode_field``); ``FieldError`` if unusable."""
    return decode_field(read_image_bytes(path, max_pixels), path, max_pixels)


def check_field(field: object, name: str = "field") -> np.ndarray:
    """``field`` as a C-contiguous RGB uint8 (H, W, 3) array (1 <= H * W <= ``MAX_PIXELS``),
    else a ``FieldError`` naming ``name``, what was given and how to convert it."""
    expected = "expected an RGB uint8 (H, W, 3) numpy array"
    if not isinstance(field, np.ndarray):
        hint = (
            "; convert it with np.asarray(x, np.uint8)" if isinstance(field, (list, tuple)) else ""
        )
        raise FieldError(name, f"{expected}, got {type(field).__name__}{hint}")
    shape, dtype = field.shape, field.dtype
    if dtype == np.uint8 and field.ndim == 3 and shape[2] == 3 and shape[0] and shape[1]:
        if shape[0] * shape[1] > MAX_PIXELS:
            raise FieldError(name, f"too large ({shape[1]}x{shape[0]} > {MAX_PIXELS} px)")
        return np.ascontiguousarray(field)
    if field.ndim == 3 and shape[0] in (3, 4) and shape[2] not in (1, 3, 4):
        hint = "; channels first? use x.transpose(1, 2, 0)"
    elif field.ndim == 3 and shape[2] == 4:
        hint = "; an alpha channel: drop it with x[..., :3]"
    elif field.ndim == 2 or (field.ndim == 3 and shape[2] == 1):
        hint = "; grayscale: a colour field is required"
    elif field.size == 0:
        hint = "; the array is empty"
    elif dtype.kind == "f":
        hint = "; floats in 0..1? use (x * 255).round().astype(np.uint8)"
    elif dtype.kind == "b":
        hint = "; a mask? pass the field itself"
    elif dtype.kind in "iu":
        hint = f"; {dtype} values: scale them to 0..255 and use x.astype(np.uint8)"
    else:
        hint = ""
    raise FieldError(name, f"{expected}, got {dtype} array of shape {shape}{hint}")


def write_field(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) field (or a bool/uint8 (H, W) mask) to an image file."""
    arr = rgb.astype(np.uint8) * 255 if rgb.dtype == bool else rgb
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr):
        raise FieldError(path, "cannot write image (unknown extension or unwritable folder)")
