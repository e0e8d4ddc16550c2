"""Issue 24 items 5, 6, 14: one bounded decode path (sizes from the header before decoding,
permanent vs retryable errors, cut JPEGs refused, trailing bytes accepted) and the check of
arrays given to Model.predict."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from leukedge.edge.image_header import read_header
from leukedge.edge.imageio import (
    MAX_PIXELS,
    FieldError,
    IncompleteFieldError,
    check_field,
    decode_field,
    read_field,
)
from leukedge.edge.synth import synth_field

#: Peak memory a refused bomb may cost, including Python, numpy and OpenCV themselves.
PEAK_LIMIT_MB = 500


@pytest.fixture(scope="module")
def field():
    return synth_field("Pro", size=(240, 320), seed=3)[0]


def _encode(rgb: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), list(params))
    assert ok
    return buf.tobytes()


def deflate_zeros(n: int) -> bytes:
    """A zlib stream of ``n`` zero bytes, built in well under a second: one fully flushed
    16 MB deflate block repeated (each starts from an empty window), then the rest."""
    chunk = 1 << 24
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(n, chunk)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    end = tail.compress(bytes(rest)) + tail.flush()
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes
    return b"\x78\xda" + body * count + end + struct.pack(">I", adler)


def tiff_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """An RGB deflate TIFF of ``width`` x ``height`` black pixels in one strip, by hand."""
    strip = deflate_zeros(width * height * 3)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, None),  # BitsPerSample 8, 8, 8: stored after the directory
        (259, 3, 1, 8),  # Adobe deflate
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, None),  # StripOffsets
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bps_at = 8 + ifd_size
    strip_at = bps_at + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        value = {258: bps_at, 273: strip_at}.get(tag, value)
        packed = (
            struct.pack("<HH", value, 0) if kind == 3 and tag != 258 else struct.pack("<I", value)
        )
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + strip
    return bytes(out)


def forged_png(rgb: np.ndarray, width: int, height: int) -> bytes:
    """A small PNG whose IHDR (CRC fixed) claims ``width`` x ``height``."""
    data = bytearray(_encode(rgb, ".png"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _decode_in_subprocess(path) -> tuple[str, float]:
    """decode_field on a file in a fresh interpreter: (outcome, peak RSS in MB).

    The peak is the process's own VmHWM: ``ru_maxrss`` keeps the forking parent's peak
    across exec, so under a large pytest process it would measure pytest."""
    code = (
        "import re, sys\n"
        "from leukedge.edge.imageio import FieldError, decode_field\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "try:\n"
        "    print('decoded', decode_field(data, sys.argv[1]).shape)\n"
        "except FieldError as exc:\n"
        "    print(exc)\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    outcome, peak = out.stdout.strip().splitlines()[-2:]
    return outcome, float(peak)


def test_helpers_build_what_they_say(field):
    assert zlib.decompress(deflate_zeros((1 << 24) * 2 + 7)) == bytes((1 << 24) * 2 + 7)
    small = tiff_bomb(64, 48)
    img = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 3) and not img.any()
    assert decode_field(small).shape == (48, 64, 3)
    header = read_header(forged_png(field, 7000, 7000))
    assert (header.format, header.width, header.height) == ("png", 7000, 7000)


def test_deflate_tiff_bomb_is_refused_before_decoding(tmp_path):
    """Item 5: 1.2 MB of TIFF decoding to 1.2 GB (20000 x 20000 RGB)."""
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_bomb())
    assert path.stat().st_size < 2_000_000
    outcome, peak = _decode_in_subprocess(path)
    assert "bomb.tif: image too large (20000x20000 > 40000000 px)" in outcome
    assert peak < PEAK_LIMIT_MB, f"peak memory {peak:.0f} MB"
    with pytest.raises(FieldError) as info:
        read_field(path)
    assert info.value.permanent


def test_49_megapixel_png_is_refused_before_decoding(tmp_path, field):
    """Item 5: a PNG under the old 50 MP limit that took 1.5 GB; over the 40 MP cap now."""
    path = tmp_path / "huge.png"
    path.write_bytes(forged_png(field, 7000, 7000))
    outcome, peak = _decode_in_subprocess(path)
    assert "huge.png: image too large (7000x7000 > 40000000 px)" in outcome
    assert peak < PEAK_LIMIT_MB, f"peak memory {peak:.0f} MB"
    assert MAX_PIXELS == 40_000_000


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif", ".bmp", ".webp", ".ppm"])
def test_every_format_is_sized_from_its_header(field, ext):
    data = _encode(field, ext)
    header = read_header(data)
    assert (header.width, header.height) == (320, 240)
    assert decode_field(data).shape == (240, 320, 3)
    with pytest.raises(FieldError, match=r"too large \(320x240 > 76799 px\)"):
        decode_field(data, "f" + ext, max_pixels=320 * 240 - 1)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif", ".bmp", ".webp", ".ppm"])
def test_cut_files_are_incomplete_not_permanent(field, ext):
    """A file cut short may still be being written: retryable, unlike damaged content."""
    data = _encode(field, ext)
    for cut in (len(data) // 3, len(data) - 5):
        with pytest.raises(IncompleteFieldError, match=r"f\.\w+: truncated") as info:
            decode_field(data[:cut], "f" + ext)
        assert not info.value.permanent
    with pytest.raises(IncompleteFieldError, match="empty file"):
        decode_field(b"", "f" + ext)


@pytest.mark.parametrize("data", [b"not an image", b"GIF89a" + bytes(20), b"\xff\xd8\xff\xd9"])
def test_content_failures_are_permanent(data):
    with pytest.raises(FieldError) as info:
        decode_field(data, "x.jpg")
    assert info.value.permanent and not isinstance(info.value, IncompleteFieldError)


def test_unaccepted_formats_say_what_to_save_instead(field):
    with pytest.raises(FieldError, match=r"x\.gif: GIF image; save the field as JPEG, PNG"):
        decode_field(b"GIF89a" + bytes(40), "x.gif")


@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.95, 0.99])
def test_jpeg_cut_and_reterminated_is_refused(field, fraction):
    """Item 6: a baseline JPEG cut anywhere and given a new end marker decodes with grey
    fill and no error from OpenCV; it is refused, permanently (the bytes are complete)."""
    data = _encode(field, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    cut = data[: int(len(data) * fraction)] + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(FieldError, match=r"cut\.jpg: truncated JPEG") as info:
        decode_field(cut, "cut.jpg")
    assert info.value.permanent


def test_progressive_jpeg_missing_scans_is_refused(field):
    data = _encode(field, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert decode_field(data).shape == (240, 320, 3)
    cut = data[: len(data) // 4] + b"\xff\xd9"
    with pytest.raises(FieldError, match="truncated progressive JPEG"):
        decode_field(cut, "p.jpg")


def test_jpeg_with_trailing_bytes_is_accepted(field):
    """Item 6: bytes after the end marker (camera padding, a second picture) are ignored."""
    data = _encode(field, ".jpg")
    plain = decode_field(data)
    for trailer in (bytes(range(128)), b"\xff" * 128, data[:128]):
        np.testing.assert_array_equal(decode_field(data + trailer, "t.jpg"), plain)


def test_complete_jpeg_ending_in_grey_is_accepted(field):
    """The grey corner that triggers the exact check also occurs in real, complete images."""
    rgb = field.copy()
    rgb[-32:, -32:] = 128
    data = _encode(rgb, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95)
    out = decode_field(data, "grey.jpg")
    assert (out[-1, -1] == 128).all()


def test_file_too_large_to_be_a_field_is_not_read(tmp_path):
    path = tmp_path / "big.bmp"
    path.write_bytes(b"BM" + bytes(3_000_000))
    with pytest.raises(FieldError, match=r"big\.bmp: file too large"):
        read_field(path, max_pixels=100_000)


BAD_ARRAYS = {
    "float 0..1": (np.random.default_rng(0).random((64, 64, 3)), "float64 .* 0..1"),
    "uint16": (np.zeros((64, 64, 3), np.uint16), "uint16 .* scale them"),
    "bool": (np.zeros((64, 64, 3), bool), "bool .* a mask"),
    "int64": (np.zeros((64, 64, 3), np.int64), "int64"),
    "empty": (np.zeros((0, 0, 3), np.uint8), r"shape \(0, 0, 3\); the array is empty"),
    "CHW": (np.zeros((3, 64, 64), np.uint8), "channels first"),
    "gray": (np.zeros((64, 64), np.uint8), "grayscale"),
    "RGBA": (np.zeros((64, 64, 4), np.uint8), "alpha"),
    "list": ([[[0, 0, 0]]], "got list; convert it"),
    "None": (None, "got NoneType"),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_check_field_refuses_what_is_not_an_rgb_uint8_field(name):
    value, match = BAD_ARRAYS[name]
    with pytest.raises(FieldError, match=match) as info:
        check_field(value)
    message = str(info.value)
    assert message.startswith("field: expected an RGB uint8 (H, W, 3)") and "\n" not in message


@pytest.fixture(scope="module")
def model():
    from leukedge.edge.model import load_model

    return load_model("default", self_test=False)


def test_predict_refuses_bad_arrays_with_one_clear_line(model, field):
    """Item 14: float 0..1 and uint16 flipped the class silently; others were tracebacks."""
    assert model.predict(field).label in model.classes
    for value, match in BAD_ARRAYS.values():
        with pytest.raises(ValueError, match=match):
            model.predict(value)
        with pytest.raises(ValueError, match=match):
            model.predict_batch([field, value])
