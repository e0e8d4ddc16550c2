"""Image sizes and completeness from the encoded bytes alone, before anything is decoded.

A decoder allocates what the header asks for: a 2 MB TIFF can claim 20000 x 20000 pixels
(1.2 GB decoded). ``read_header`` parses the header of every format leukedge accepts
(JPEG, PNG, TIFF and BigTIFF, BMP, WebP, PNM/PAM) in pure Python, so the size can be
refused before decoding, and tells a file that ends early (``complete`` False: it may
still be being written) from one that is complete. Other formats OpenCV could read
(GIF, AVIF, JPEG 2000, HDR, Sun raster...) are not accepted, so no decoder ever runs
on a size nobody checked.

For JPEG it also walks every marker segment: the image ends at the EOI that follows
the last scan (bytes after it are ignored, as decoders do), and a progressive JPEG
whose scans do not bring every coefficient of every component to full precision was
cut and re-terminated (decoders fill the rest without an error).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

FORMATS = ("jpeg", "png", "tiff", "bmp", "webp", "pnm")

#: More scans than any encoder writes: each one is a pass over the whole image.
MAX_JPEG_SCANS = 100
#: More TIFF directory entries than any writer needs.
MAX_TIFF_ENTRIES = 1000

_PNG = b"\x89PNG\r\n\x1a\n"
# 0xFF followed by a marker code inside entropy-coded data (not a stuffed 0x00, not RSTn,
# not a fill byte).
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Formats OpenCV may read but leukedge does not accept, by their first bytes.
_REFUSED = (
    (b"GIF8", "GIF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"PF", "PFM"),
    (b"Pf", "PFM"),
)
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*(?:\n|$))*([^\s#]+)")


class HeaderError(ValueError):
    """Bytes that are not a complete, supported image; ``complete`` False when they end
    before the header says the image does (a file still being written, or cut)."""

    def __init__(self, problem: str, complete: bool = True):
        self.problem, self.complete = problem, complete
        super().__init__(problem)


def _short(what: str) -> HeaderError:
    return HeaderError(
        f"truncated {what}: the file ends early (still being written, or cut: save it again)",
        complete=False,
    )


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says.

    format : one of ``FORMATS``.
    width, height : pixels (> 0).
    end : bytes that belong to the image; anything after them is trailing data.
    scan_end : JPEG only: offset of the marker that ends the last scan (else ``end``).
    """

    format: str
    width: int
    height: int
    end: int
    scan_end: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader:
    """The ``ImageHeader`` of encoded image bytes; ``HeaderError`` for an unsupported
    format, a damaged header, or (``complete`` False) data that ends early."""
    if data[:2] == b"\xff\xd8":
        header = _jpeg(data)
    elif data[:8] == _PNG:
        header = _png(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        header = _tiff(data)
    elif data[:2] == b"BM":
        header = _bmp(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        header = _webp(data)
    elif len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"1234567":
        header = _pnm(data)
    else:
        other = next((name for magic, name in _REFUSED if data.startswith(magic)), None)
        if data[4:8] == b"ftyp":
            other = "AVIF/HEIF"
        if other is None:
            raise HeaderError("not a readable image")
        raise HeaderError(f"{other} image; save the field as JPEG, PNG, TIFF, BMP or WebP")
    if header.width <= 0 or header.height <= 0:
        raise HeaderError(f"{header.format.upper()} header gives no size")
    return header


def _jpeg(data: bytes) -> ImageHeader:
    n, pos = len(data), 2
    size = components = None
    progressive, scans, scan_end = False, 0, 0
    final: dict[int, set[int]] = {}  # component id -> coefficients at full precision
    while True:
        if pos >= n:
            raise _short("JPEG (no end marker)")
        if data[pos] != 0xFF:  # stray bytes between segments: decoders skip them too
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                raise _short("JPEG (no end marker)")
            pos = found.start()
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise _short("JPEG (no end marker)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if marker in (0x00, 0xD8):
            raise HeaderError(f"damaged JPEG (unexpected marker 0x{marker:02X} at byte {pos})")
        if pos + 2 > n:
            raise _short("JPEG")
        length = struct.unpack(">H", data[pos : pos + 2])[0]
        if length < 2:
            raise HeaderError(f"damaged JPEG (segment length {length} at byte {pos})")
        seg_end = pos + length
        if seg_end > n:
            raise _short("JPEG")
        seg = data[pos + 2 : seg_end]
        if marker in _JPEG_SOF:
            if size is not None:
                raise HeaderError("damaged JPEG (two frame headers)")
            if len(seg) < 6 or len(seg) < 6 + 3 * seg[5]:
                raise HeaderError("damaged JPEG (short frame header)")
            height, width = struct.unpack(">HH", seg[1:5])
            size = (width, height)
            components = {seg[6 + 3 * i] for i in range(seg[5])}
            progressive = marker in _JPEG_PROGRESSIVE
            final = {c: set() for c in components}
        elif marker == 0xDA:
            if size is None:
                raise HeaderError("damaged JPEG (image data before the frame header)")
            ns = seg[0] if seg else 0
            if ns == 0 or len(seg) < 4 + 2 * ns:
                raise HeaderError("damaged JPEG (short scan header)")
            ids = [seg[1 + 2 * i] for i in range(ns)]
            if not set(ids) <= components:
                raise HeaderError("damaged JPEG (scan of a component the frame lacks)")
            ss, se, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] & 0x0F
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise HeaderError(f"JPEG with more than {MAX_JPEG_SCANS} scans; re-save it")
            if progressive and al == 0:
                for c in ids:
                    final[c].update(range(ss, min(se, 63) + 1))
            found = _JPEG_MARKER.search(data, seg_end)
            if found is None:
                raise _short("JPEG (no end marker)")
            pos = scan_end = found.start()
            while scan_end > seg_end and data[scan_end - 1] == 0xFF:
                scan_end -= 1  # fill bytes before the marker: the scan ends before them
            continue
        pos = seg_end
    if size is None or scans == 0:
        raise HeaderError("JPEG without image data")
    if progressive and any(len(k) < 64 for k in final.values()):
        raise HeaderError(
            "truncated progressive JPEG (scans missing; the file was cut and re-terminated)"
        )
    return ImageHeader("jpeg", size[0], size[1], pos, scan_end)


def _png(data: bytes) -> ImageHeader:
    n, pos = len(data), 8
    size = None
    while True:
        if pos + 8 > n:
            raise _short("PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 0x7FFFFFFF:
            raise HeaderError(f"damaged PNG (chunk length {length} at byte {pos})")
        body, pos = data[pos + 8 : pos + 8 + length], pos + 12 + length
        if pos > n:
            raise _short("PNG")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise HeaderError("damaged PNG (the first chunk is not IHDR)")
            size = struct.unpack(">II", body[:8])
        elif kind == b"IEND":
            return ImageHeader("png", size[0], size[1], pos, pos)


# TIFF field types -> (struct code, size); only the integer types a size or offset uses.
_TIFF_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
# Bytes per value of every TIFF field type, to find where each entry's values end.
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TIFF_SIZES |= {13: 4, 16: 8, 17: 8, 18: 8}


def _tiff(data: bytes) -> ImageHeader:
    n = len(data)
    bo = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(bo + "H", data[2:4])[0] == 43
    if big:
        if n < 16:
            raise _short("TIFF")
        if struct.unpack(bo + "HH", data[4:8]) != (8, 0):
            raise HeaderError("damaged BigTIFF header")
        ifd = struct.unpack(bo + "Q", data[8:16])[0]
        count_fmt, entry_fmt, entry_size, inline = "Q", "HHQ8s", 20, 8
    else:
        if n < 8:
            raise _short("TIFF")
        ifd = struct.unpack(bo + "I", data[4:8])[0]
        count_fmt, entry_fmt, entry_size, inline = "H", "HHI4s", 12, 4
    count_size = struct.calcsize(count_fmt)
    if ifd < 8:
        raise HeaderError(f"damaged TIFF (first directory at byte {ifd})")
    if ifd + count_size > n:
        raise _short("TIFF")
    (count,) = struct.unpack(bo + count_fmt, data[ifd : ifd + count_size])
    if count == 0 or count > MAX_TIFF_ENTRIES:
        raise HeaderError(f"damaged TIFF ({count} directory entries)")
    start = ifd + count_size
    if start + count * entry_size + inline > n:  # the entries and the next directory's offset
        raise _short("TIFF")
    tags: dict[int, list[int]] = {}
    for i in range(count):
        off = start + i * entry_size
        tag, kind, num, value = struct.unpack(bo + entry_fmt, data[off : off + entry_size])
        length = num * _TIFF_SIZES.get(kind, 1)
        if length <= inline:
            raw = value[:length]
        else:
            (where,) = struct.unpack(bo + ("Q" if big else "I"), value)
            if where + length > n:
                raise _short("TIFF")
            raw = data[where : where + length]
        if tag in (256, 257, 273, 279, 324, 325) and kind in _TIFF_TYPES:
            tags[tag] = list(struct.unpack(f"{bo}{num}{_TIFF_TYPES[kind][0]}", raw))
    width, height = tags.get(256, [0])[0], tags.get(257, [0])[0]
    offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
    if not offsets or not counts or len(offsets) != len(counts):
        raise HeaderError("damaged TIFF (no strip or tile locations)")
    end = max(o + c for o, c in zip(offsets, counts))
    if end > n:
        raise _short("TIFF")
    return ImageHeader("tiff", width, height, n, n)


def _bmp(data: bytes) -> ImageHeader:
    n = len(data)
    if n < 26:
        raise _short("BMP")
    offset, dib = struct.unpack("<II", data[10:18])
    if dib == 12:
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
        compression = 0
    else:
        if n < 34:
            raise _short("BMP")
        width, height, _, bpp, compression = struct.unpack("<iiHHI", data[18:34])
        height = abs(height)
    if compression in (0, 3) and width > 0 and bpp in (1, 4, 8, 16, 24, 32):
        end = offset + (width * bpp + 31) // 32 * 4 * height
        if end > n:
            raise _short("BMP")
    return ImageHeader("bmp", width, height, n, n)


def _webp(data: bytes) -> ImageHeader:
    n = len(data)
    (riff,) = struct.unpack("<I", data[4:8])
    if 8 + riff > n:
        raise _short("WebP")
    if n < 30:
        raise HeaderError("damaged WebP (header too short)")
    kind = data[12:16]
    if kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("damaged WebP (no VP8 start code)")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
    elif kind == b"VP8L":
        if data[20] != 0x2F:
            raise HeaderError("damaged WebP (no VP8L signature)")
        (bits,) = struct.unpack("<I", data[21:25])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise HeaderError(f"damaged WebP (unknown chunk {kind!r})")
    return ImageHeader("webp", width, height, 8 + riff, 8 + riff)


def _pnm(data: bytes) -> ImageHeader:
    kind = data[1:2]
    head = data[:4096]
    if kind == b"7":
        fields: dict[bytes, int] = {}
        end = head.find(b"ENDHDR\n")
        if end < 0:
            raise _short("PAM header") if len(data) < 4096 else HeaderError("damaged PAM header")
        for line in head[3:end].splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL"):
                fields[parts[0]] = int(parts[1]) if parts[1].isdigit() else 0
        width, height = fields.get(b"WIDTH", 0), fields.get(b"HEIGHT", 0)
        channels, maxval, start = fields.get(b"DEPTH", 0), fields.get(b"MAXVAL", 0), end + 7
    else:
        tokens, pos = [], 2
        for _ in range(2 if kind in b"14" else 3):
            m = _PNM_TOKEN.match(head, pos)
            if m is None or not m[1].isdigit():
                if m is None and len(data) < 4096:
                    raise _short("PNM header")
                raise HeaderError("damaged PNM header")
            tokens.append(int(m[1]))
            pos = m.end()
        width, height = tokens[0], tokens[1]
        maxval = tokens[2] if len(tokens) == 3 else 1
        channels = 3 if kind in b"36" else 1
        start = pos + 1
    if kind in b"4567" and width > 0 and height > 0:
        row = (width + 7) // 8 if kind == b"4" else width * channels * (2 if maxval > 255 else 1)
        if start + row * height > len(data):
            raise _short("PNM")
    return ImageHeader("pnm", width, height, len(data), len(data))
