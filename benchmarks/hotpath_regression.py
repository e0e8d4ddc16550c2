"""Regression check of the station's hot path: every output of ``FieldPipeline`` unchanged.

    python benchmarks/hotpath_regression.py record runs/perf/p2/before.jsonl.gz
    python benchmarks/hotpath_regression.py compare runs/perf/p2/before.jsonl.gz [--batch 16]

Runs the station's ``FieldPipeline`` (robust segmentation, one OpenCV and one inference thread)
on: every field of ``../shared/data/taleqani-all`` (decoded from its JPEG bytes, as a folder
source does); the validation and test fields of ``runs/split4/split.csv`` under each generated
condition of ``benchmarks/trust_gate.py`` (2x, 0.5x, defocus, exposure, thumbnails, colour
shifts); the other-lab lymphocytes of ``../shared/data/ood-pbc-lymphocytes``; and generated
2028 x 1520 camera frames (the large-frame path: scale, tiles, downscaled segmentation). The
``default`` bundle sees all of it; ``mobilenetv2`` and ``default`` without feature statistics
(the colour out-of-distribution fallback) see every 8th shared field and the conditions of the
test fields.

Per frame it keeps the label, probabilities, confidence, reasons, cell count, ood score, phash,
the gate's measures, the error and a hash of the segmentation mask of each classified field.
``compare`` demands all of them equal, probabilities and ood score within ``TOL``, and prints
the differences. Exit status 1 when anything differs. ``--batch N`` classifies N frames per
model call (``FieldPipeline.analyse`` then ``classify``), as the station's folder path does.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from trust_gate import CONDITIONS, SHARED  # noqa: E402

from leukedge.data.split import read_split  # noqa: E402
from leukedge.edge.classes import CLASSES  # noqa: E402
from leukedge.edge.imageio import decode_field  # noqa: E402
from leukedge.edge.model import load_model  # noqa: E402
from leukedge.edge.pipeline import FieldPipeline  # noqa: E402
from leukedge.edge.segment import segment  # noqa: E402
from leukedge.edge.sources import Frame  # noqa: E402
from leukedge.edge.synth import synth_field  # noqa: E402

#: Largest difference allowed in a probability or an ood score.
TOL = 1e-6
FRAME = (1520, 2028)


def inputs(split_csv: Path, every: int = 1, conditions_of: tuple[str, ...] = ("val", "test")):
    """(name, RGB uint8 frame) pairs, in a fixed order."""
    files = sorted((SHARED / "taleqani-all" / "Original").glob("*/*.jpg"))
    for p in files[::every]:
        yield f"shared:{p.parent.name}/{p.name}", decode_field(p.read_bytes(), p)
    rows = [r for r in read_split(split_csv) if r.split in conditions_of]
    for r in rows:
        rgb = decode_field(Path(r.path).read_bytes(), r.path)
        for cond, fn in CONDITIONS.items():
            yield f"{cond}:{Path(r.path).name}", np.ascontiguousarray(fn(rgb))
    if every == 1:
        for p in sorted((SHARED / "ood-pbc-lymphocytes" / "images").glob("*.jpg")):
            yield f"pbc:{p.name}", decode_field(p.read_bytes(), p)
        for i in range(8):
            yield f"camera:{i}", synth_field(CLASSES[i % 4], size=FRAME, seed=i)[0]


def record(pipeline: FieldPipeline, name: str, rgb: np.ndarray, res) -> dict:
    out = {k: v for k, v in res.to_json().items() if k not in ("time", "timings_ms")}
    out.pop("model_sha256", None)  # a route file re-made with identical outputs is fine
    if res.error is None:
        gate = pipeline.gate(rgb)
        masks = [segment(f, mode=pipeline.seg_mode).mask for f in gate.fields]
        out["masks"] = [hashlib.sha1(np.packbits(m)).hexdigest()[:16] for m in masks]
    return out


def configs(split_csv: Path):
    """(config name, pipeline, inputs) to record."""
    default = load_model("default", threads=1)
    yield "default", FieldPipeline(default), inputs(split_csv)
    mobile = load_model("mobilenetv2", threads=1)
    yield "mobilenetv2", FieldPipeline(mobile), inputs(split_csv, 8, ("test",))
    colour = load_model("default", threads=1)
    colour.feature_stats = None  # the fallback of bundles without trust.features
    yield "default-colour-ood", FieldPipeline(colour), inputs(split_csv, 8, ("test",))


def batches(frames, size: int):
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(split_csv: Path, batch: int = 1) -> dict[str, dict]:
    """Every record; with ``batch`` > 1, frames are classified that many at a time."""
    cv2.setNumThreads(1)
    out: dict[str, dict] = {}
    for cname, pipeline, frames in configs(split_csv):
        t0, n = time.process_time(), 0
        for items in batches(frames, batch):
            if batch == 1:
                results = [pipeline(Frame(items[0][0], rgb=items[0][1]))]
            else:
                results = pipeline.classify(
                    [pipeline.analyse(Frame(name, rgb=rgb)) for name, rgb in items]
                )
            for (name, rgb), res in zip(items, results):
                out[f"{cname}|{name}"] = record(pipeline, name, rgb, res)
                n += 1
        print(f"{cname}: {n} frames, {time.process_time() - t0:.1f} CPU s", file=sys.stderr)
    return out


def _text(value) -> str:
    return json.dumps(value, sort_keys=True)


def differences(a: dict, b: dict, key: str = "") -> list[str]:
    """Where two records differ (floats within ``TOL`` for probabilities and ood_score)."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if k == "probabilities" and x and y and x.keys() == y.keys():
            worst = max(abs(x[c] - y[c]) for c in x)
            if worst > TOL:
                diffs.append(f"{key}{k}: max |dp| {worst:.2e}")
        elif k == "ood_score" and x is not None and y is not None:
            if abs(x - y) > TOL:
                diffs.append(f"{key}{k}: {x} != {y}")
        elif _text(x) != _text(y):  # NaN measures are equal to themselves here
            diffs.append(f"{key}{k}: {x!r} != {y!r}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("record", "compare"))
    ap.add_argument("path", type=Path)
    ap.add_argument("--batch", type=int, default=1, help="frames per model call")
    ap.add_argument("--split-csv", type=Path, default=HERE.parent / "runs/split4/split.csv")
    args = ap.parse_args(argv)
    if not (SHARED / "taleqani-all").is_dir():
        print(f"{SHARED / 'taleqani-all'}: no data; nothing to check", file=sys.stderr)
        return 2
    now = run(args.split_csv, args.batch)
    if args.action == "record":
        args.path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(args.path, "wt") as f:
            for k, v in now.items():
                f.write(json.dumps({"key": k, **v}) + "\n")
        print(f"recorded {len(now)} frames to {args.path}")
        return 0
    with gzip.open(args.path, "rt") as f:
        before = {r.pop("key"): r for r in map(json.loads, f)}
    diffs = [f"missing: {k}" for k in before.keys() - now.keys()]
    diffs += [f"new: {k}" for k in now.keys() - before.keys()]
    exact = 0
    for k in before.keys() & now.keys():
        d = differences(before[k], now[k], f"{k}: ")
        diffs += d
        exact += _text(before[k]) == _text(now[k])
    print(f"{len(before)} frames recorded, {len(now)} now; {exact} bit-identical")
    for d in diffs[:50]:
        print(d)
    print("SAME" if not diffs else f"DIFFERENT: {len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
