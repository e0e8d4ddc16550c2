"""Fidelity of each route file vs the fp32 reconstruction and vs the shipped INT8 file
(val: agreement, accuracy drop; test: accuracy). Usage: fidelity.py FILE... -> fidelity.json"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from leukedge.edge.backends import open_backend
from leukedge.export.fidelity import compare

X = {s: np.load(f"runs/perf/{s}_x.npy") for s in ("val", "test")}
Y = {s: np.load(f"runs/perf/{s}_y.npy") for s in ("val", "test")}


def probs(path, split):
    b = open_backend(path, "auto", 2)
    nchw = X[split]
    x = nchw if b.input_shape[1] == 3 else np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    return np.concatenate([b.run(x[i : i + 1]) for i in range(len(x))])


cache_file = Path(os.environ.get("FID_OUT", "runs/perf/fidelity.json"))
res = json.loads(cache_file.read_text()) if cache_file.exists() else {}
ref = {s: probs("runs/perf/fp32.onnx", s) for s in X}
shipped = {s: probs("leukedge/models/default/model.onnx", s) for s in X}
for f in sys.argv[1:]:
    r = {}
    for s in X:
        p = probs(f, s)
        r[s] = {
            "vs_fp32": compare(ref[s], p),
            "vs_shipped": compare(shipped[s], p),
            "accuracy": float(np.mean(p.argmax(1) == Y[s])),
            "fp32_accuracy": float(np.mean(ref[s].argmax(1) == Y[s])),
        }
    v = r["val"]
    r["meets_bar"] = (
        v["vs_fp32"]["top1_agreement"] >= 0.995 and v["fp32_accuracy"] - v["accuracy"] <= 0.005
    )
    res[f] = r
    print(
        f,
        "val agree {:.4f} acc {:.4f} (fp32 {:.4f}) maxdiff {:.3f} | test acc {:.4f} "
        "| bar {}".format(
            v["vs_fp32"]["top1_agreement"],
            v["accuracy"],
            v["fp32_accuracy"],
            v["vs_fp32"]["max_abs_prob_diff"],
            r["test"]["accuracy"],
            r["meets_bar"],
        ),
        flush=True,
    )
cache_file.write_text(json.dumps(res, indent=1))
