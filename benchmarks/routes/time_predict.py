"""CPU time of the shipped bundles' input path and inference at one thread, before/after.

Loads each shipped bundle twice in one process and calls both alternately on each field
(A, B, A, B...), so load from other processes hits both alike. "Before" is either

- ``--before TREE``: an older source tree (a ``git archive`` of an earlier commit: its
  code and its bundles, imported under another package name), so every change since counts;
- ``--before-route FILE``: this checkout's code with the default's route replaced by an
  older route file that takes the float input (and MobileNetV2 fed float32, quantized by
  the backend, as before the pixel tables): the input path alone.

Per call, the CPU time of this thread (``time.thread_time``, which waiting for a core does
not inflate), over 40 validation fields x ``ROUNDS`` rounds:

- ``prepare``: ``Model.prepare_batch([field])`` (white balance, resize, the model's input);
- ``infer``: ``Model.outputs`` on that input (the backend call: ``leukedge bench``'s
  inference);
- ``predict``: ``Model.predict(field)`` (field to result: prepare, infer, trust).

    git archive fe27946 leukedge | tar -x -C runs/perf/before-src
    python benchmarks/routes/time_predict.py --before runs/perf/before-src
    python benchmarks/routes/time_predict.py \
        --before-route runs/perf/before-src/leukedge/models/default/model-u8s8.onnx

prints the median and the 10th percentile (closest to an idle core) of each, in ms.
"""

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from leukedge.data.split import read_split
from leukedge.edge.backends import open_backend
from leukedge.edge.imageio import read_field
from leukedge.edge.model import load_model

N_FIELDS, ROUNDS = 40, 15


def load_before(tree: str):
    """``load_model`` of the ``leukedge`` package in ``tree``, imported as ``leukedge_before``
    (``leukedge.edge`` imports only itself, relatively)."""
    package = Path(tree) / "leukedge"
    spec = importlib.util.spec_from_file_location(
        "leukedge_before", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["leukedge_before"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("leukedge_before.edge.model").load_model


def float_input(model, route_file: str | None = None):
    """A shallow copy of ``model`` fed float32 (no pixel table), on ``route_file`` if given."""
    clone = object.__new__(type(model))
    clone.__dict__.update(model.__dict__, input_luts=[None] * len(model.input_luts))
    if route_file:
        clone.backend = open_backend(route_file, threads=1)
    return clone


def timings(pairs: dict, fields: list) -> dict:
    """{label: {figure: [ms per call]}}, the labels' calls interleaved per field."""
    out = {label: {"prepare": [], "infer": [], "predict": []} for label in pairs}
    for _ in range(ROUNDS):
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
    before = parser.add_mutually_exclusive_group(required=True)
    before.add_argument("--before", help="older source tree (with leukedge/)")
    before.add_argument("--before-route", help="older float-input route file of default")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rows = [r for r in read_split("runs/split4/split.csv") if r.split == "val"][:N_FIELDS]
    fields = [read_field(r.path) for r in rows]
    load_old = load_before(args.before) if args.before else None
    load = [os.getloadavg()[0]]
    for bundle in ("default", "mobilenetv2"):
        now = load_model(bundle, threads=1)
        if load_old is not None:
            old = load_old(bundle, threads=1)
        else:
            old = float_input(now, args.before_route if bundle == "default" else None)
        pairs = {"now": now, "before": old}
        for model in pairs.values():  # warm up
            for f in fields[:5]:
                model.predict(f)
        for label, figures in timings(pairs, fields).items():
            text = ", ".join(
                f"{k} {np.median(v):.3f} (p10 {np.percentile(v, 10):.3f})"
                for k, v in figures.items()
            )
            print(f"{bundle} {label} [{pairs[label].route.file}]: {text} ms CPU per call")
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) {min(load):.1f}-{max(load):.1f}")


if __name__ == "__main__":
    main()
