"""CPU time per field of each shipped bundle's model file at batch 1, 4, 16 and 32.

    python benchmarks/model_batch.py [--fields 256] [--rounds 3] [--threads 1]

The model call alone (``Model.outputs`` on prepared inputs of 224 px fields of
``../shared/data/taleqani-all``, else generated ones), one inference thread, batch sizes
interleaved in each round; median (range over rounds) of CPU ms per field. The station
classifies up to ``station.BATCH`` fields per call when it reads files ahead; this says what
each backend gains from it (an ONNX file whose input's batch is fixed at 1 runs one field per
call, ``FieldPipeline.model_batch``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.edge.model import MODELS_DIR, load_model
from leukedge.edge.synth import synth_field

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "taleqani-all"
BATCHES = (1, 4, 16, 32)


def fields(n: int) -> list[np.ndarray]:
    files = sorted((SHARED / "Original").glob("*/*.jpg"))
    if files:
        return [read_field(p) for p in files[:: max(1, len(files) // n)][:n]]
    return [synth_field(CLASSES[i % 4], seed=i)[0] for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    rgbs = fields(args.fields)
    print("| bundle | file | backend | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|---|---|" + "---|" * len(BATCHES))
    for bundle in sorted(p.parent for p in MODELS_DIR.glob("*/leukedge.json")):
        model = load_model(bundle, threads=args.threads)
        prepared = [model.prepare_batch([f]) for f in rgbs]
        ms: dict[int, list[float]] = {b: [] for b in BATCHES}
        for _ in range(args.rounds):
            for b in BATCHES:
                batches = [np.concatenate(prepared[i : i + b]) for i in range(0, len(rgbs), b)]
                t0 = time.process_time()
                for x in batches:
                    model.outputs(x)
                ms[b].append((time.process_time() - t0) * 1e3 / len(rgbs))
        cells = [f"{np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in ms.values()]
        row = [bundle.name, model.route.file, model.backend.name, *cells]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
