"""Acceptance table of the trust gate (issue 25): flagged, correct or flagged, and its cost.

    python benchmarks/trust_gate.py [--split-csv runs/split4/split.csv] [--split test]
        [--pbc ../shared/data/ood-pbc-lymphocytes] [--bundles default mobilenetv2]
        [--repeats 5] [--out benchmarks/results] [--refit-gate]

``--split val`` measures the same table on the validation fields: develop the gate there
(and on the training fields), and judge it once on the test split.

For each bundle, through the station's own ``FieldPipeline`` (a frame is *flagged* when its
result is uncertain, *confidently malignant* when unflagged and not Benign):

- other-lab lymphocytes (PBC): % flagged, % confidently malignant;
- the TEST split of ``leukedge data split ../shared/data/taleqani-all`` (4 classes; written to
  the folder of ``--split-csv`` when absent, seed 0, so the same split every time): clean
  fields, % flagged and accuracy on the unflagged; and "correct or flagged" under each
  condition: 2x magnification (the centre half upscaled to the original size), 0.5x (the
  field tiled 2 x 2 and downscaled), defocus (Gaussian sigma 2.5 px), exposure x0.5 and x1.6,
  16 x 16 and 32 x 32 px thumbnails, and the five colour shifts of the shift suite;
- the gate's cost (``FieldPipeline.gate``) in ms per 224 px field: median over the test fields
  of the best of ``--repeats`` runs each, one OpenCV thread, wall and CPU time, beside the
  robust segmentation's measured the same way (on a shared machine, compare the two).

Targets: PBC >= 95% flagged and <= 1% confidently malignant; clean <= 2% flagged and >= 99.5%
accurate on the unflagged; >= 98% correct or flagged under every condition; <= 1 ms.
Writes ``trust-gate-<date>.md`` and ``.json`` (``-refit`` added with ``--refit-gate``) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from leukedge.data.split import read_split
from leukedge.edge.imageio import read_field
from leukedge.edge.model import load_model
from leukedge.edge.pipeline import FieldPipeline
from leukedge.edge.quality import quality_reference
from leukedge.edge.scale import parse_scale_reference
from leukedge.edge.segment import segment
from leukedge.edge.sources import Frame
from leukedge.evaluation.shifts import SHIFTS
from leukedge.export.magnification import scale_figures
from leukedge.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def two_x(rgb: np.ndarray) -> np.ndarray:
    """The centre half of a field upscaled to its size: a 2x objective."""
    h, w = rgb.shape[:2]
    centre = rgb[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    return cv2.resize(centre, (w, h), interpolation=cv2.INTER_LINEAR)


def half_x(rgb: np.ndarray) -> np.ndarray:
    """The field tiled 2 x 2 and downscaled to its size: a 0.5x objective."""
    h, w = rgb.shape[:2]
    return cv2.resize(np.tile(rgb, (2, 2, 1)), (w, h), interpolation=cv2.INTER_AREA)


def exposure(k: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rgb: np.clip(rgb * np.float32(k) + 0.5, 0, 255).astype(np.uint8)


def thumbnail(side: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rgb: cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


#: The generated conditions: name -> function(RGB uint8 field) -> RGB uint8 frame.
CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "2x magnification": two_x,
    "0.5x magnification": half_x,
    "defocus sigma 2.5": lambda rgb: cv2.GaussianBlur(rgb, (0, 0), 2.5),
    "exposure x0.5": exposure(0.5),
    "exposure x1.6": exposure(1.6),
    "thumbnail 16 px": thumbnail(16),
    "thumbnail 32 px": thumbnail(32),
    **{f"shift {name}": f for name, f in SHIFTS.items()},
}


def ensure_split(split_csv: Path) -> Path:
    """``split_csv``, written with ``leukedge data split`` (4 classes, seed 0) when absent."""
    if not split_csv.is_file():
        cmd = [sys.executable, "-m", "leukedge.cli", "data", "split"]
        cmd += [str(SHARED / "taleqani-all"), "--out", str(split_csv.parent), "--classes", "4"]
        subprocess.run(cmd, check=True)
    return split_csv


def run_frames(pipeline: FieldPipeline, frames: list[tuple[str, np.ndarray]], what: str):
    """The pipeline's results (``FieldResult``) on named RGB frames, with a progress bar."""
    return [pipeline(Frame(name, rgb=rgb)) for name, rgb in progress_bar(frames, what)]


def reasons_of(results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        for reason in r.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def cost_ms(fn: Callable[[np.ndarray], object], fields: list[np.ndarray], repeats: int):
    """(wall, CPU) ms of ``fn`` per field: medians over ``fields`` of the best of ``repeats``
    runs each, on one OpenCV thread. CPU time is what other users of the machine leave."""
    cv2.setNumThreads(1)
    wall, cpu = [], []
    for rgb in progress_bar(fields, "cost"):
        w, c = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(rgb)
            w.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        wall.append(min(w))
        cpu.append(min(c))
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def bench_bundle(name: str, pbc: list[Path], test, repeats: int, refs: dict | None) -> dict:
    model = load_model(name, threads=1)
    pipeline = FieldPipeline(model)
    out: dict = {"bundle": name, "model": model.name, "notes": list(pipeline.notes)}
    if refs is not None:
        pipeline.quality_ref, pipeline.scale_ref = refs["quality"], refs["scale"]
        out["notes"].append("gate figures refitted on the training split (--refit-gate)")
    if pbc:
        res = run_frames(pipeline, [(str(p), read_field(p)) for p in pbc], f"{name}: PBC")
        flagged = [r.uncertain for r in res]
        malignant = [not r.uncertain and r.label != "Benign" for r in res]
        out["pbc"] = {
            "n": len(res),
            "flagged_pct": 100 * float(np.mean(flagged)),
            "confidently_malignant_pct": 100 * float(np.mean(malignant)),
            "reasons": reasons_of(res),
        }
    fields = [(r.path, read_field(r.path)) for r in test]
    truth = [r.label for r in test]
    res = run_frames(pipeline, fields, f"{name}: clean")
    unflagged = [r.label == t for r, t in zip(res, truth) if not r.uncertain]
    out["clean"] = {
        "n": len(res),
        "flagged_pct": 100 * float(np.mean([r.uncertain for r in res])),
        "accuracy_unflagged_pct": 100 * float(np.mean(unflagged)) if unflagged else None,
        "errors_unflagged": int(len(unflagged) - sum(unflagged)),
        "reasons": reasons_of(res),
    }
    out["conditions"] = {}
    for cond, f in CONDITIONS.items():
        res = run_frames(pipeline, [(p, f(rgb)) for p, rgb in fields], f"{name}: {cond}")
        ok = [r.uncertain or r.label == t for r, t in zip(res, truth)]
        out["conditions"][cond] = {
            "correct_or_flagged_pct": 100 * float(np.mean(ok)),
            "flagged_pct": 100 * float(np.mean([r.uncertain for r in res])),
            "reasons": reasons_of(res),
        }
    rgbs = [rgb for _, rgb in fields]
    out["gate_ms_per_field_224"], out["gate_cpu_ms_per_field_224"] = cost_ms(
        pipeline.gate, rgbs, repeats
    )
    out["segment_ms_per_field_224"], out["segment_cpu_ms_per_field_224"] = cost_ms(
        segment, rgbs, repeats
    )
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(report: dict) -> str:
    bundles = report["bundles"]
    lines = [
        f"# Trust gate acceptance ({report['date']})",
        "",
        f"`{report['command']}`",
        "",
        f"{report.get('split', 'test').capitalize()} split: {report['test_fields']} fields of "
        f"`{report['split_csv']}` (4 classes); "
        f"PBC: {report['pbc_fields']} other-lab lymphocytes.",
        "Gate figures (trust.quality/scale): "
        + ("each bundle's own" if isinstance(report["gate_figures"], str) else "refitted")
        + ". Flagged: the result is uncertain. Targets in brackets. Load average "
        f"{report['load_before']:.1f} before, {report['load_after']:.1f} after.",
        "",
        "| measure | " + " | ".join(b["bundle"] for b in bundles) + " |",
        "|---|" + "---:|" * len(bundles),
    ]

    def row(label: str, get) -> None:
        lines.append(f"| {label} | " + " | ".join(get(b) for b in bundles) + " |")

    if report["pbc_fields"]:
        row("PBC flagged % (>= 95)", lambda b: _pct(b["pbc"]["flagged_pct"]))
        row(
            "PBC confidently malignant % (<= 1)",
            lambda b: _pct(b["pbc"]["confidently_malignant_pct"]),
        )
    row("clean flagged % (<= 2)", lambda b: _pct(b["clean"]["flagged_pct"]))
    row(
        "clean accuracy on unflagged % (>= 99.5)",
        lambda b: _pct(b["clean"]["accuracy_unflagged_pct"]),
    )
    for cond in CONDITIONS:
        row(
            f"{cond}: correct or flagged % (>= 98)",
            lambda b, c=cond: _pct(b["conditions"][c]["correct_or_flagged_pct"]),
        )
    row(
        "gate ms per 224 px field, wall / CPU (<= 1)",
        lambda b: f"{b['gate_ms_per_field_224']:.2f} / {b['gate_cpu_ms_per_field_224']:.2f}",
    )
    row(
        "for scale: robust segmentation, wall / CPU",
        lambda b: f"{b['segment_ms_per_field_224']:.2f} / {b['segment_cpu_ms_per_field_224']:.2f}",
    )
    lines += ["", "## Reasons (fields per reason)", ""]
    for b in bundles:
        lines.append(f"**{b['bundle']}** ({b['model']})")
        lines.append("")
        if "pbc" in b:
            lines.append(f"- PBC: {b['pbc']['reasons']}")
        lines.append(f"- clean: {b['clean']['reasons']}")
        for cond, c in b["conditions"].items():
            lines.append(f"- {cond}: flagged {c['flagged_pct']:.1f}%: {c['reasons']}")
        lines.append("")
        if b["notes"]:
            lines += ["Notes:", "", *(f"- {n}" for n in b["notes"]), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split-csv", type=Path, default=ROOT / "runs" / "split4" / "split.csv")
    ap.add_argument("--split", default="test", help="split of --split-csv (test; val to develop)")
    ap.add_argument("--pbc", type=Path, default=SHARED / "ood-pbc-lymphocytes")
    ap.add_argument("--bundles", nargs="+", default=["default", "mobilenetv2"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument(
        "--refit-gate",
        action="store_true",
        help="judge with trust.quality/scale recomputed from the split's training fields by "
        "this code (what 'leukedge bundle add-trust' would store) instead of the bundles' own",
    )
    args = ap.parse_args(argv)
    split = ensure_split(args.split_csv)
    test = read_split(split, args.split)
    refs = None
    if args.refit_gate:
        rows = read_split(split, "train")
        train = [read_field(r.path) for r in progress_bar(rows, "train")]
        scale = scale_figures(train, [r.label for r in rows], [r.group for r in rows])
        scale = parse_scale_reference({"trust": {"scale": scale}})[0]
        refs = {"quality": quality_reference(train), "scale": scale}
    pbc = sorted((args.pbc / "images").glob("*.jpg")) if args.pbc.is_dir() else []
    if not pbc:
        print(f"{args.pbc}: no PBC images; the PBC rows are left out", file=sys.stderr)
    date = datetime.date.today().isoformat()
    report = {
        "date": date,
        "command": " ".join(["python benchmarks/trust_gate.py", *(argv or sys.argv[1:])]),
        "split_csv": str(args.split_csv),
        "split": args.split,
        "test_fields": len(test),
        "pbc_fields": len(pbc),
        "load_before": os.getloadavg()[0],
        "gate_figures": refs or "each bundle's own",
        "bundles": [bench_bundle(b, pbc, test, args.repeats, refs) for b in args.bundles],
        "load_after": os.getloadavg()[0],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.split == "test" else f"-{args.split}"
    suffix += "-refit" if args.refit_gate else ""
    stem = args.out / f"trust-gate-{date}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(report))
    print(render(report))
    print(f"wrote {stem}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
