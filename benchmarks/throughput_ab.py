"""Before/after throughput of two commits on this machine, interleaved so load falls on both.

    python benchmarks/throughput_ab.py --before REV [--after REV] [--rounds 3]
        [--fields 400] [--out benchmarks/results]

Each commit is checked out in a temporary git worktree and measured in fresh processes
(run in it, ``PYTHONPATH`` set to it), alternating before/after in every round:

- ``folder``: the station's folder path at two cores, as ``leukedge bench`` times it
  (``leukedge.benchmarks.end_to_end.folder_throughput`` at the commit's last two-core
  setting: the read-ahead thread, or two worker processes where the commit has them; a
  folder of ``--fields`` 224 px Taleqani JPEGs, file to committed row, the default
  bundle), with the CPU time per field of all its threads and processes;
- ``score``: ``leukedge score --engine local --workers 2`` on the same files (wall rate,
  worker start-up included, so short runs understate the steady rate).

Writes ``throughput-ab-<date>.md`` to ``--out`` with the median and range of each, the
1-minute load average of every run, and the two commits. On 2 shared cores single runs
move by 10-30%: compare medians of interleaved rounds, never one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from leukedge.benchmarks.end_to_end import taleqani_jpegs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "taleqani-all"

FOLDER = """
import json, os, sys
from pathlib import Path
import cv2
from leukedge.benchmarks import end_to_end as e
from leukedge.edge.model import MODELS_DIR
cv2.setNumThreads(1)
m = {"bundle": str(MODELS_DIR / "default"), "backend": "onnxruntime", "name": "default",
     "model": "default"}
e.FOLDER_SETTINGS = tuple(s for s in e.FOLDER_SETTINGS if s[0] == 2)[-1:]
row = e.folder_throughput(m, Path(sys.argv[1]), Path(sys.argv[2]), 1)[0]
print(json.dumps({"fields_per_s": row["fields_per_s"]["median"],
                  "cpu_ms_per_field": row["cpu_ms_per_field"]["median"],
                  "workers": row.get("workers", 0), "load": os.getloadavg()[0]}))
"""


def _worktree(rev: str, where: Path) -> tuple[Path, str]:
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = where / sha[:12]
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha],
        capture_output=True,
        check=True,
    )
    return path, sha


def _folder(tree: Path, folder: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", FOLDER, str(folder), str(work)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,  # the tree first on sys.path (python -c, -m put the cwd there)
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _score(tree: Path, folder: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(dir=work) as out:
        text = subprocess.run(
            [
                sys.executable,
                "-m",
                "leukedge",
                "score",
                str(folder),
                "-o",
                out,
                "--workers",
                "2",
                "--format",
                "csv",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,  # the tree first on sys.path (python -c, -m put the cwd there)
            check=True,
        ).stderr  # the summary line is a diagnostic
    rate = re.search(r"scored .* ([\d.]+) fields/s", text)
    if rate is None:
        raise RuntimeError(f"no rate in leukedge score's output:\n{text}")
    return {"fields_per_s": float(rate.group(1)), "load": os.getloadavg()[0]}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fields", type=int, default=400)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    fields = taleqani_jpegs(DATA, args.fields)
    if not fields:
        sys.exit(f"{DATA}: no Taleqani fields; put the shared data beside the checkout")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "folder"
        folder.mkdir()
        for i, data in enumerate(fields):
            (folder / f"field-{i:04d}.jpg").write_bytes(data)
        trees = {}
        try:
            for side in ("before", "after"):
                trees[side] = _worktree(getattr(args, side), tmp)
            runs: dict[tuple[str, str], list[dict]] = {}
            for r in range(args.rounds):
                for side, (tree, _) in trees.items():
                    for kind, fn in (("folder", _folder), ("score", _score)):
                        res = fn(tree, folder, tmp)
                        runs.setdefault((side, kind), []).append(res)
                        print(f"round {r + 1} {side} {kind}: {res}", file=sys.stderr)
        finally:
            for tree, _ in trees.values():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    capture_output=True,
                )
    date = datetime.date.today().isoformat()
    lines = [
        f"# Throughput before and after, {date}",
        "",
        f"before: `{trees['before'][1][:12]}` ({args.before}); after: `{trees['after'][1][:12]}`"
        f" ({args.after}); {args.fields} Taleqani 224 px JPEG fields, the `default` bundle; "
        f"{args.rounds} interleaved rounds; {os.cpu_count()} cores. "
        "Reproduce: `python benchmarks/throughput_ab.py --before REV`.",
        "",
        "| run | before | after | 1-min load (before / after) |",
        "|---|---|---|---|",
    ]
    for kind, label in (
        ("folder", "station folder path, 2 cores: fields/s"),
        ("score", "`leukedge score --workers 2`: fields/s (wall)"),
    ):
        b, a = runs["before", kind], runs["after", kind]
        loads = " / ".join(", ".join(f"{x['load']:.1f}" for x in side) for side in (b, a))
        lines.append(
            f"| {label} | {_spread([x['fields_per_s'] for x in b])} | "
            f"{_spread([x['fields_per_s'] for x in a])} | {loads} |"
        )
        if kind == "folder":
            lines.append(
                f"| station folder path: CPU ms per field (all threads and workers) | "
                f"{_spread([x['cpu_ms_per_field'] for x in b])} | "
                f"{_spread([x['cpu_ms_per_field'] for x in a])} | |"
            )
            lines.append(
                f"| station folder path: worker processes | {b[0].get('workers', 0)} | "
                f"{a[0].get('workers', 0)} | |"
            )
    lines += ["", "Figures: median (min-max) over the rounds."]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"throughput-ab-{date}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
