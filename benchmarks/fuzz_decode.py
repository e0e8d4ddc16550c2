"""Mutation fuzzing of the field decoder and the segmenter (issue 24).

Real JPEG, PNG, TIFF, BMP, WebP and PNM bytes (synthetic smear fields encoded by OpenCV in
several variants) are mutated (bytes flipped or set, header integers set to extremes,
ranges inserted, deleted, duplicated or cut off, splices of other files) and fed to
``decode_field`` and then, when a field comes out, to ``segment``. The contract: every
case ends in a field or a ``FieldError``, quickly; anything else (another exception, a
crash of the process, a case slower than the time bound) is a finding.

    python benchmarks/fuzz_decode.py --cases 50000 --workers 2 --timeout 10 --out fuzz-out

runs the cases in worker processes, so a crash or a hang is caught, recorded with the
bytes that caused it (``--out``), and the run goes on. ``tests/test_fuzz_decode.py`` uses
the same seeds and mutations through hypothesis, a few thousand cases in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from leukedge.edge.imageio import FieldError, decode_field
from leukedge.edge.segment import segment
from leukedge.edge.synth import synth_field

#: Decoded fields are at most this large while fuzzing, so a mutated size stays cheap.
FUZZ_MAX_PIXELS = 300_000
# Integers a header field is set to: zero, one, sign and width boundaries.
EXTREMES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF)
EXTREMES += (0x80000000, 0xFFFFFFFF)
_LOCK = threading.Lock()
OPS = ("flip", "set", "int", "insert", "delete", "duplicate", "truncate", "splice")


@cache
def seed_files() -> dict[str, bytes]:
    """Encoded fields: name -> bytes, each format in the variants OpenCV writes."""
    rgb = synth_field("Pre", size=(60, 80), seed=11)[0]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    variants = {
        "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
        "jpeg-progressive": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "jpeg-restart": (".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        "jpeg-444": (
            ".jpg",
            [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
        ),
        "png": (".png", []),
        "tiff": (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
        "tiff-lzw": (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 5]),
        "tiff-deflate": (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 8]),
        "bmp": (".bmp", []),
        "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
        "webp-lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "ppm": (".ppm", []),
    }
    out = {}
    for name, (ext, params) in variants.items():
        ok, buf = cv2.imencode(ext, bgr, params)
        assert ok, name
        out[name] = buf.tobytes()
    return out


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutations ``(op, position, value)``: positions wrap around the data; ``value``
    is a byte, an (integer, width, big-endian) triple, a length, or bytes, by op."""
    buf = bytearray(data)
    seeds = list(seed_files().values())
    for op, pos, value in ops:
        n = len(buf)
        if n == 0:
            break
        i = pos % n
        if op == "flip":
            buf[i] ^= value or 1
        elif op == "set":
            buf[i] = value
        elif op == "int":
            number, width, big = value
            raw = (number % (1 << (8 * width))).to_bytes(width, "big" if big else "little")
            buf[i : i + width] = raw
        elif op == "insert":
            buf[i:i] = value
        elif op == "delete":
            del buf[i : i + value]
        elif op == "duplicate":
            buf[i:i] = buf[i : i + value]
        elif op == "truncate":
            del buf[i:]
        elif op == "splice":
            other = seeds[value % len(seeds)]
            buf[i:] = other[i % len(other) :]
    return bytes(buf)


def random_ops(rng: np.random.Generator) -> list[tuple]:
    """1-6 random mutations, half of them aimed at the first 64 bytes (the headers)."""
    ops = []
    for _ in range(int(rng.integers(1, 7))):
        op = OPS[int(rng.integers(len(OPS)))]
        pos = int(rng.integers(64) if rng.random() < 0.5 else rng.integers(1 << 20))
        if op in ("flip", "set"):
            value = int(rng.integers(256))
        elif op == "int":
            number = EXTREMES[int(rng.integers(len(EXTREMES)))]
            if rng.random() < 0.3:
                number = int(rng.integers(1 << 32))
            value = (number, int(rng.choice([1, 2, 4])), bool(rng.random() < 0.5))
        elif op == "insert":
            value = rng.integers(256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:
            value = int(rng.integers(1, 256))
        ops.append((op, pos, value))
    return ops


def check(data: bytes, mode: str = "robust") -> str:
    """Decode ``data`` and segment the field: "field", "refused" or "incomplete" (a
    ``FieldError``); any other exception propagates (a finding)."""
    try:
        rgb = decode_field(data, "fuzz", max_pixels=FUZZ_MAX_PIXELS)
    except FieldError as exc:
        return "refused" if exc.permanent else "incomplete"
    h, w = rgb.shape[:2]
    assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3) and 0 < h * w <= FUZZ_MAX_PIXELS
    seg = segment(rgb, mode)
    assert seg.mask.shape == (h, w)
    return "field"


def case(index: int, seed: int) -> tuple[str, bytes]:
    """Case ``index`` of a run with ``seed``: (seed file name, mutated bytes), reproducible."""
    rng = np.random.default_rng([seed, index])
    names = sorted(seed_files())
    name = names[index % len(names)]
    return name, mutate(seed_files()[name], random_ops(rng))


def _worker(start: int, stop: int, seed: int) -> None:
    """Run cases [start, stop), one line per case on stdout: index, outcome, ms."""
    for index in range(start, stop):
        _, data = case(index, seed)
        t0 = time.perf_counter()
        try:
            outcome = check(data)
        except Exception as exc:  # a finding: report it and go on
            outcome = f"error:{type(exc).__name__}:{str(exc)[:200]}".replace("\n", " ")
        print(index, outcome, f"{(time.perf_counter() - t0) * 1e3:.2f}", flush=True)


def _shard(start: int, stop: int, seed: int, timeout: float, findings: list, counts: Counter):
    """Run a shard in worker processes, restarting after a crash or a hang."""
    lock = _LOCK
    next_index = start
    while next_index < stop:
        cmd = [sys.executable, __file__, "--worker", str(next_index), str(stop), str(seed)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if not sel.select(timeout):
                proc.kill()
                with lock:
                    findings.append({"index": next_index, "kind": "hang", "after_s": timeout})
                next_index += 1
                break
            line = proc.stdout.readline()
            if not line:
                code = proc.wait()
                if code != 0:
                    with lock:
                        findings.append({"index": next_index, "kind": f"crash (exit {code})"})
                    next_index += 1
                else:
                    next_index = stop
                break
            parts = line.split()
            if len(parts) < 3 or not parts[0].isdigit():
                continue  # not a result line (a library printing on stdout)
            index, outcome, ms = int(parts[0]), " ".join(parts[1:-1]), float(parts[-1])
            next_index = index + 1
            kind = outcome.split(":", 1)[0]
            with lock:
                counts[kind] += 1
                counts["slowest_ms"] = max(counts["slowest_ms"], ms)
                if kind == "error":
                    findings.append({"index": index, "kind": outcome})
        sel.close()
        proc.stdout.close()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--seed", type=int, default=0, help="Run seed (cases are reproducible).")
    parser.add_argument("--timeout", type=float, default=10.0, help="Seconds a case may take.")
    parser.add_argument("--out", type=Path, help="Folder for the summary and finding bytes.")
    parser.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    t0 = time.time()
    findings: list[dict] = []
    counts: Counter = Counter(slowest_ms=0.0)
    bounds = np.linspace(0, args.cases, args.workers + 1).astype(int)
    threads = [
        threading.Thread(
            target=_shard, args=(int(a), int(b), args.seed, args.timeout, findings, counts)
        )
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {
        "cases": args.cases,
        "seed": args.seed,
        "seconds": round(time.time() - t0, 1),
        "outcomes": {k: v for k, v in counts.items() if k != "slowest_ms"},
        "slowest_case_ms": round(counts["slowest_ms"], 1),
        "findings": findings,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for f in findings:
            name, data = case(f["index"], args.seed)
            (args.out / f"case-{f['index']}-{name}.bin").write_bytes(data)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
