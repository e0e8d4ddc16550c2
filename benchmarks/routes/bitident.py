"""Bit-identity of the shipped bundles' outputs across a change of the input path.

Records (``record``) or checks (``check``) the raw model outputs ("probabilities" before
temperature, "features") of every validation and test field of runs/split4/split.csv, clean
and under each shift of ``leukedge.evaluation.shifts.SHIFTS``, one field per inference as the
station runs them (``Model.prepare_batch`` -> ``Model.outputs``), for each model file of each
shipped bundle (``model.file`` and its routes). ``check`` passes only when every array is
bit-identical (``np.array_equal``) to the recorded one (a file added since the record,
``SAME_AS``, to the one of the file it must equal).

    python benchmarks/routes/bitident.py record runs/perf/bitident-before.npz
    python benchmarks/routes/bitident.py check runs/perf/bitident-before.npz
"""

import sys
import time

import numpy as np

from leukedge.data.split import read_split
from leukedge.edge.imageio import read_field
from leukedge.edge.model import load_model
from leukedge.evaluation.shifts import SHIFTS

SPLIT = "runs/split4/split.csv"
FILES = {
    "default": ("model.onnx", "model-u8s8.onnx", "model-u8u8.onnx"),
    "mobilenetv2": ("model.tflite",),
}
#: A file added since the record was made, checked against the file it must equal.
SAME_AS = {"model-u8u8.onnx": "model-u8s8.onnx"}


def outputs() -> dict[str, np.ndarray]:
    rows = [r for r in read_split(SPLIT) if r.split in ("val", "test")]
    fields = [read_field(r.path) for r in rows]
    conditions = {"clean": fields} | {
        name: [shift(f) for f in fields] for name, shift in SHIFTS.items()
    }
    found = {}
    for bundle, files in FILES.items():
        for file in files:
            model = load_model(bundle, threads=1, route=file)
            t0 = time.process_time()
            for cond, fs in conditions.items():
                rows_out = [model.outputs(model.prepare_batch([f])) for f in fs]
                for key in rows_out[0]:
                    found[f"{bundle}/{file}/{cond}/{key}"] = np.concatenate(
                        [r[key] for r in rows_out]
                    )
            n = len(fields) * len(conditions)
            ms = (time.process_time() - t0) * 1e3 / n
            print(f"{bundle}/{file}: {n} fields, {ms:.2f} ms CPU per field", file=sys.stderr)
    return found


def main(mode: str, path: str) -> int:
    found = outputs()
    if mode == "record":
        np.savez_compressed(path, **found)
        print(f"recorded {len(found)} arrays to {path}")
        return 0
    with np.load(path) as record:
        ref = {k: record[k] for k in record.files}
    for key in found:
        bundle, file, rest = key.split("/", 2)
        if key not in ref and file in SAME_AS:
            ref[key] = ref.get(f"{bundle}/{SAME_AS[file]}/{rest}")
    keys = sorted(set(ref) | set(found))
    bad = [k for k in keys if ref.get(k) is None or k not in found]
    bad += [k for k in keys if k not in bad and not np.array_equal(ref[k], found[k])]
    for k in bad:
        missing = ref.get(k) is None or k not in found
        print(f"DIFFERS {k}: {'missing' if missing else float(np.abs(ref[k] - found[k]).max())}")
    n = sum(len(v) for k, v in found.items() if k.endswith("/probabilities"))
    print(f"{len(keys) - len(bad)}/{len(keys)} arrays bit-identical ({n} field outputs)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
