"""Markdown tables from fidelity*.json and a time_routes JSON. Usage: report.py TIMES.json"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

fid = {}
for f in sorted(Path("runs/perf").glob("fidelity*.json")):
    fid.update(json.loads(f.read_text()))
times = json.loads(Path(sys.argv[1]).read_text())
cells = defaultdict(list)
for r in times:
    cells[r["file"], r["threads"], r["batch"]].append(r)
files = list(dict.fromkeys(r["file"] for r in times))
loads = [r["load1"] for r in times]
print(f"load average (1 min) during timing: {min(loads):.1f}-{max(loads):.1f} on 2 cores\n")
print(
    "| file | val agree fp32* | val agree shipped | val acc | test acc "
    "| max dp vs shipped (val) | meets bar |"
)
print("|---|---|---|---|---|---|---|")
for f in files:
    v = fid.get(f)
    if not v:
        continue
    val, test = v["val"], v["test"]
    cells_ = [
        Path(f).name,
        f"{val['vs_fp32']['top1_agreement']:.4f}",
        f"{val['vs_shipped']['top1_agreement']:.4f}",
        f"{val['accuracy']:.4f}",
        f"{test['accuracy']:.4f}",
        f"{val['vs_shipped']['max_abs_prob_diff']:.3f}",
        "yes" if v["meets_bar"] else "no",
    ]
    print("| " + " | ".join(cells_) + " |")
print()
print(
    "| file | threads | batch | CPU ms/field median (range over rounds) "
    "| wall ms median | wall ms min |"
)
print("|---|---|---|---|---|---|")
for f in files:
    for (ff, t, b), rs in cells.items():
        if ff != f:
            continue
        cpu = [r["cpu_median_ms"] for r in rs]
        wall = [r["median_ms"] for r in rs]
        mn = min(r["min_ms"] for r in rs)
        print(
            f"| {Path(f).name} | {t} | {b} | {np.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) "
            f"| {np.median(wall):.2f} | {mn:.2f} |"
        )
