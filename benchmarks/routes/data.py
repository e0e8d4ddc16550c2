"""Preprocessed val fields (+ labels) and the 300 calibration train fields (seed 0), as the
default bundle's preprocessing gives them (float32 NCHW)."""

import json
from pathlib import Path

import numpy as np

from leukedge.edge.preprocess import Preprocess
from leukedge.export.common import class_indices, export_rows, prepare_rows, sample_rows

man = json.loads(Path("leukedge/models/default/leukedge.json").read_text())
spec = Preprocess.from_dict(man["preprocess"])
val, train = export_rows(Path("runs/split4/split.csv"), "val", True)
calib = sample_rows(train, 300, 0)
np.save("runs/perf/val_x.npy", prepare_rows(val, spec, "val"))
np.save("runs/perf/val_y.npy", class_indices(val, man["classes"]))
np.save("runs/perf/calib_x.npy", prepare_rows(calib, spec, "calib"))
test = [
    r
    for r in __import__("leukedge.data.split", fromlist=["read_split"]).read_split(
        "runs/split4/split.csv"
    )
    if r.split == "test"
]
np.save("runs/perf/test_x.npy", prepare_rows(test, spec, "test"))
np.save("runs/perf/test_y.npy", class_indices(test, man["classes"]))
