"""CPU time of a bundle's input path and inference at one thread, on real 224 px fields.

Per field, the median over the fields of this process's CPU time (``time.process_time``,
which waiting for a busy core does not inflate) of:

- ``prepare``: ``Model.prepare_batch([field])`` (white balance, resize, the model's input);
- ``infer``: ``Model.outputs`` on that prepared input (the backend call, what
  ``leukedge bench`` reports as inference);
- ``predict``: ``Model.predict(field)`` (field to result: prepare, infer, trust).

Run it under two source trees, alternating, to compare them in one run::

    python benchmarks/routes/time_predict.py default 5 SRC_A SRC_B

prints per tree the median and range over the rounds of each figure.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_FIELDS, CALLS = 40, 5


def measure(bundle: str) -> dict:
    import cv2

    from leukedge.data.split import read_split
    from leukedge.edge.imageio import read_field
    from leukedge.edge.model import load_model

    cv2.setNumThreads(1)
    rows = [r for r in read_split("runs/split4/split.csv") if r.split == "val"][:N_FIELDS]
    fields = [read_field(r.path) for r in rows]
    model = load_model(bundle, threads=1)
    batches = [model.prepare_batch([f]) for f in fields]
    calls = {
        "prepare": [lambda f=f: model.prepare_batch([f]) for f in fields],
        "infer": [lambda x=x: model.outputs(x) for x in batches],
        "predict": [lambda f=f: model.predict(f) for f in fields],
    }
    out = {"route": model.route.file}
    for name, fns in calls.items():
        for fn in fns[:3]:
            fn()
        per = []
        for fn in fns:
            t0 = time.process_time()
            for _ in range(CALLS):
                fn()
            per.append((time.process_time() - t0) * 1e3 / CALLS)
        out[name] = float(np.median(per))
    return out


def main(bundle: str, rounds: int, trees: list[str]) -> None:
    results = {t: [] for t in trees}
    for r in range(rounds):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            text = subprocess.run(
                [sys.executable, __file__, "--child", bundle],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[tree].append(json.loads(text.strip().splitlines()[-1]))
            print(f"round {r} {tree}: {results[tree][-1]} load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)  # fmt: skip
    for tree, rs in results.items():
        figures = []
        for k in ("prepare", "infer", "predict"):
            v = [x[k] for x in rs]
            figures.append(f"{k} {np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"{tree} [{rs[0]['route']}]: " + ", ".join(figures) + " ms CPU per field")


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2])))
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
