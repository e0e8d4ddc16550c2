"""End to end, stage by stage: decode -> gate -> segment -> preprocess -> infer -> trust.

Each bundle runs the station's own ``FieldPipeline`` (robust segmentation) on encoded
224 px fields (the data folder's JPEGs, else generated fields as JPEG) and on
generated 2028x1520 camera frames (JPEG), with one OpenCV and one inference thread.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from ..edge.classes import CLASSES
from ..edge.imageio import decode_field
from ..edge.model import load_model
from ..edge.pipeline import FieldPipeline
from ..edge.sources.base import Frame
from ..edge.synth import synth_field
from .segmentation import FRAME

#: The pipeline's own stages (``FieldResult.timings_ms``) after decoding: the trust gate
#: (scale, quality, tiles, perceptual hash), segmentation, preprocessing, inference and the
#: model's trust step (calibration, feature distance).
STAGES = ("decode", "gate", "segment", "preprocess", "infer", "trust")


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def inputs(data_dir: Path, quick: bool) -> dict[str, list[bytes]]:
    """Encoded inputs: ``field_224`` and ``frame_2028x1520``."""
    n = 4 if quick else 60
    files = sorted((Path(data_dir) / "Original").glob("*/*.jpg"))
    if files:
        fields = [p.read_bytes() for p in files[:: max(1, len(files) // n)][:n]]
    else:
        fields = [_jpeg(synth_field(CLASSES[i % 4], seed=i)[0]) for i in range(n)]
    frames = [
        _jpeg(synth_field(CLASSES[i % 4], size=FRAME, seed=i)[0]) for i in range(1 if quick else 2)
    ]
    return {"field_224": fields, "frame_2028x1520": frames * (1 if quick else 4)}


def stage_times(pipeline: FieldPipeline, encoded: list[bytes]) -> dict:
    """Median ms of each stage, of the rest of the call (``other``: hashing, the
    out-of-distribution check, bookkeeping) and of the whole call, over ``encoded``."""
    ms: dict[str, list[float]] = {k: [] for k in (*STAGES, "other", "total")}
    for i, data in enumerate(encoded):
        t0 = time.perf_counter()
        rgb = decode_field(data)
        t1 = time.perf_counter()
        result = pipeline(Frame(f"bench#{i}", rgb=rgb, data=data))
        t2 = time.perf_counter()
        if result.error:
            raise RuntimeError(result.error)
        ms["decode"].append((t1 - t0) * 1e3)
        for stage in STAGES[1:]:
            ms[stage].append(result.timings_ms.get(stage, 0.0))
        ms["total"].append((t2 - t0) * 1e3)
        ms["other"].append(ms["total"][-1] - sum(ms[k][-1] for k in STAGES))
    out = {f"{k}_median_ms": float(np.median(v)) for k, v in ms.items()}
    out["n"] = len(encoded)
    return out


def run(models: list[dict], data_dir: Path, quick: bool) -> dict:
    """Stage timings of every bundle record in ``models`` on each input kind."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        encoded = inputs(data_dir, quick)
        rows = []
        for m in [m for m in models if m.get("picked", True)]:  # the file this machine runs
            pipeline = FieldPipeline(load_model(m["bundle"], m["backend"], 1, route=m.get("route")))
            for kind, data in encoded.items():
                rows.append(
                    {
                        "name": m["name"],
                        "model": m["model"],
                        "precision": m["precision"],
                        "format": m["format"],
                        "backend": m["backend"],
                        "input": kind,
                        **stage_times(pipeline, data),
                    }
                )
    finally:
        cv2.setNumThreads(threads)
    return {"threads": 1, "segmentation": "robust", "rows": rows}
