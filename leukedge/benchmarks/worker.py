"""One latency measurement in a fresh process: a bundle, an Ultralytics ``.pt`` or a
``.keras`` model, at a given thread count, on one 224 px field image.

Reports ``cold_start_ms`` (process spawn to the first result for the field file),
``infer`` (the network alone on a prepared batch of one: the bundle's backend, a raw
torch forward, a direct Keras call), ``predict`` (field in, probabilities out through
the usual API: ``Model.predict``, Ultralytics ``predict``, Keras ``model.predict``)
and ``peak_rss_mb`` (the process's peak resident memory).

    python -m leukedge.benchmarks.worker '{"kind": "bundle", "path": DIR, "threads": 1, ...}'
"""

from __future__ import annotations

import os
import resource
import sys
import time

from .machine import proc_kib
from .spawn import child_main
from .timing import Budget, time_calls


def _peak_rss_mb() -> float:
    """Peak resident memory of this process: ``VmHWM`` on Linux (``ru_maxrss`` there
    would include the parent's, inherited across ``exec``), else ``ru_maxrss``."""
    if (kib := proc_kib("/proc/self/status", "VmHWM")) is not None:
        return kib / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB


def _bundle(p: dict):
    import cv2

    from ..edge.imageio import read_field
    from ..edge.model import load_model

    cv2.setNumThreads(p["threads"])
    model = load_model(p["path"], p["backend"], p["threads"], route=p.get("route"))
    field = read_field(p["field"])
    model.predict(field)
    cold = time.time() - p["spawned"]
    x = model.prepare_batch([field])  # the input the model file takes (integers for INT8 ones)
    # infer: the network alone (the temperature is trust, as in the end-to-end stages)
    return cold, lambda: model.outputs(x), lambda: model.predict(field)


def _ultralytics(p: dict):
    import cv2

    from ..offline import ensure_offline

    ensure_offline()
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    from ..edge.imageio import read_field
    from ..edge.preprocess import Preprocess, prepare

    cv2.setNumThreads(p["threads"])
    torch_utils.NUM_THREADS = p["threads"]  # Ultralytics resets torch's threads to this
    torch.set_num_threads(p["threads"])
    yolo = YOLO(p["path"], task="classify")
    bgr = cv2.imread(p["field"])  # what a user passes Ultralytics: a path or a BGR array
    args = {"imgsz": p["size"], "device": "cpu", "verbose": False}
    yolo.predict(bgr, **args)
    cold = time.time() - p["spawned"]
    net = yolo.model.eval()  # fused by the first predict, as Ultralytics runs it
    x = torch.from_numpy(prepare(read_field(p["field"]), Preprocess.from_dict(p["preprocess"])))

    def infer():
        with torch.inference_mode():
            return net(x[None])

    return cold, infer, lambda: yolo.predict(bgr, **args)


def _keras(p: dict):
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(p["threads"])
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    import keras
    import tensorflow as tf

    from ..edge.imageio import read_field
    from ..edge.preprocess import Preprocess, prepare

    tf.config.threading.set_intra_op_parallelism_threads(p["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = keras.models.load_model(p["path"])
    spec = Preprocess.from_dict(p["preprocess"])
    field = read_field(p["field"])

    def predict():
        return model.predict(prepare(field, spec)[None], verbose=0)

    predict()
    cold = time.time() - p["spawned"]
    x = prepare(field, spec)[None]
    return cold, lambda: model(x, training=False), predict


KINDS = {"bundle": _bundle, "ultralytics": _ultralytics, "keras": _keras}


def handle(p: dict) -> dict:
    cold, infer, predict = KINDS[p["kind"]](p)
    budget = Budget(**p["budget"])
    return {
        "cold_start_ms": cold * 1e3,
        "infer": time_calls(infer, budget),
        "predict": time_calls(predict, budget),
        "peak_rss_mb": _peak_rss_mb(),
    }


if __name__ == "__main__":
    child_main(handle)
