"""Latency of route files: rounds x (files x threads x batches), interleaved; each cell a median
of calls over ~0.6 s: wall ms and the calling thread's CPU ms per image.
Usage: time_routes.py OUT.json ROUNDS THREADS BATCHES FILE..."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from leukedge.edge.backends import open_backend

out, rounds = sys.argv[1], int(sys.argv[2])
threads = [int(t) for t in sys.argv[3].split(",")]
batches = [int(b) for b in sys.argv[4].split(",")]
files = sys.argv[5:]
x = np.load("runs/perf/val_x.npy", mmap_mode="r")[:32].copy()
sessions = {}
for f in files:
    for t in threads:
        b = open_backend(f, "auto", t)
        sessions[f, t] = b
res = []
for r in range(rounds):
    for f in files:
        for t in threads:
            be = sessions[f, t]
            xx = x if be.input_shape[1] == 3 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            for n in batches:
                if be.name == "onnxruntime" and be.input_shape[0] == 1 and n > 1:  # fixed batch 1
                    continue
                inp = xx[:n]
                for _ in range(2):
                    be.run(inp)
                ms, cpu = [], []
                t_end = time.perf_counter() + 0.6
                while len(ms) < 5 or (time.perf_counter() < t_end and len(ms) < 200):
                    c0 = time.thread_time()
                    t0 = time.perf_counter()
                    be.run(inp)
                    ms.append((time.perf_counter() - t0) * 1e3 / n)
                    cpu.append((time.thread_time() - c0) * 1e3 / n)
                res.append(
                    {
                        "file": f,
                        "threads": t,
                        "batch": n,
                        "round": r,
                        "median_ms": float(np.median(ms)),
                        "min_ms": float(np.min(ms)),
                        "cpu_median_ms": float(np.median(cpu)),
                        "load1": os.getloadavg()[0],
                        "n": len(ms),
                    }
                )
                print(
                    f"{r} {f:40s} t={t} b={n:2d} {np.median(ms):7.2f} ms/img "
                    f"min {np.min(ms):6.2f} cpu {np.median(cpu):6.2f} "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                Path(out).write_text(json.dumps(res, indent=1))
