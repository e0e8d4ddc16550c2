"""CPU time of the shipped bundles' input path and inference at one thread, before/after.

Compares, in one process with the calls interleaved (A, B, A, B... on each field, so load
from other processes hits both alike), the float input path (the model fed
``scale_view`` float32 and quantizing it itself: the shipped route as it was, passed as
``--before BUNDLE``, and MobileNetV2 with its pixel table switched off) against the
bundle as it is now. Per call, the CPU time of this thread (``time.thread_time``, which
waiting for a core does not inflate), over 40 validation fields x ``CALLS`` rounds:

- ``prepare``: ``Model.prepare_batch([field])`` (white balance, resize, the model's input);
- ``infer``: ``Model.outputs`` on that input (the backend call: ``leukedge bench``'s
  inference);
- ``predict``: ``Model.predict(field)`` (field to result: prepare, infer, trust).

    python benchmarks/routes/time_predict.py [--before runs/perf/before-src/leukedge/models/default]

prints the median and the 10th percentile (closest to an idle core) of each, in ms.
"""

import argparse
import os
import time

import cv2
import numpy as np

from leukedge.data.split import read_split
from leukedge.edge.imageio import read_field
from leukedge.edge.model import load_model

N_FIELDS, CALLS = 40, 15


def float_path(model):
    """A shallow copy of ``model`` fed float32 as before the pixel tables."""
    clone = object.__new__(type(model))
    clone.__dict__.update(model.__dict__, input_luts=[None] * len(model.input_luts))
    return clone


def timings(pairs: dict, fields: list) -> dict:
    """{label: {figure: [ms per call]}}, the labels' calls interleaved per field."""
    out = {label: {"prepare": [], "infer": [], "predict": []} for label in pairs}
    for _ in range(CALLS):
        for f in fields:
            for label, model in pairs.items():
                t0 = time.thread_time()
                x = model.prepare_batch([f])
                t1 = time.thread_time()
                model.outputs(x)
                t2 = time.thread_time()
                model.predict(f)
                t3 = time.thread_time()
                rec = out[label]
                rec["prepare"].append((t1 - t0) * 1e3)
                rec["infer"].append((t2 - t1) * 1e3)
                rec["predict"].append((t3 - t2) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="the default bundle as it was (its float-input route)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rows = [r for r in read_split("runs/split4/split.csv") if r.split == "val"][:N_FIELDS]
    fields = [read_field(r.path) for r in rows]
    now = load_model("default", threads=1)
    default = {"default now": now}
    if args.before:
        default["default before"] = load_model(args.before, threads=1)
    mobilenet = load_model("mobilenetv2", threads=1)
    tflite = {"mobilenetv2 now": mobilenet, "mobilenetv2 float input": float_path(mobilenet)}
    load = [os.getloadavg()[0]]
    for pairs in (default, tflite):
        for model in pairs.values():  # warm up
            for f in fields[:5]:
                model.predict(f)
        for label, figures in timings(pairs, fields).items():
            text = ", ".join(
                f"{k} {np.median(v):.3f} (p10 {np.percentile(v, 10):.3f})"
                for k, v in figures.items()
            )
            print(f"{label} [{pairs[label].route.file}]: {text} ms CPU per call")
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) {min(load):.1f}-{max(load):.1f}")


if __name__ == "__main__":
    main()
