"""Segmentation quality and speed: the kmeans reference, the fast path and the robust mode.

    python -m leukedge.benchmarks.segmentation [--data DIR] [--quick] [--out DIR]

Writes ``report.json`` and ``report.md`` (and ``segmentation.png`` when matplotlib is
importable) to ``--out``. Timings use one OpenCV thread and run the modes side by side,
field by field. ``run(data_dir, quick, out_dir)`` is the entry point for other tools.

Figures on the Taleqani fields are for research use; cite Ghaderzadeh et al. (2022) and
Hosseini et al. (2023) wherever they appear (see the data folder's README).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ..edge.classes import CLASSES
from ..edge.imageio import read_field
from ..edge.segment import MODES, clean, otsu_threshold, segment
from ..edge.synth import synth_field

#: The Taleqani fields beside a checkout of the repository (relative to the working folder).
DEFAULT_DATA = Path("../shared/data/taleqani-all")
FRAME = (1520, 2028)  # H, W of a Raspberry Pi HQ camera frame (2x2 binned)
#: The authors' ``Segmented/`` masks are JPEGs: a pixel is "black" up to this channel value.
AUTHORS_BLACK = 32
#: Classes whose ``Segmented/`` masks are usable (Pro's are nearly all black).
AUTHORS_CLASSES = ("Benign", "Early", "Pre")
TARGETS = {
    "agreement": 0.995,  # fast vs kmeans reference, mean pixel agreement, every class
    "speedup": 15.0,  # reference / fast, median ms per 224 px field, one thread
    "robust_empty": 0.01,  # robust empty-mask rate, every class
    "synth_recall": 0.95,  # robust, synthetic fields, every class
    "synth_precision": 0.95,
}


def class_paths(data_dir: Path, quick: bool) -> dict[str, list[Path]]:
    """Field paths per class under ``data_dir/Original``; about 30 per class when quick."""
    paths = {}
    for label in CLASSES:
        files = sorted((data_dir / "Original" / label).glob("*.jpg"))
        paths[label] = files[:: max(1, len(files) // 30)] if quick else files
    return paths


def authors_mask(path: Path) -> np.ndarray:
    """The dataset authors' mask for an ``Original/`` field: bool (H, W), its non-black pixels."""
    seg = cv2.imread(str(path).replace("/Original/", "/Segmented/"), cv2.IMREAD_COLOR)
    return seg.max(axis=2) > AUTHORS_BLACK


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def histogram_otsu_mask(rgb: np.ndarray) -> np.ndarray:
    """The fast pipeline with the vectorized histogram Otsu instead of ``cv2.threshold``."""
    a = cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 1)
    t = otsu_threshold(cv2.calcHist([a], [0], None, [256], [0, 256]).ravel())
    return clean((a > t).view(np.uint8))[0]


def shared_quality(paths: dict[str, list[Path]]) -> dict:
    """Per class: agreement with the reference, empty-mask rates, IoU with the authors' masks."""
    out = {}
    for label, files in paths.items():
        agree, agree_hist, empty, ious, cells = [], [], {m: 0 for m in MODES}, {}, []
        for path in files:
            rgb = read_field(path)
            results = {m: segment(rgb, m) for m in MODES}
            masks = {m: r.mask for m, r in results.items()}
            agree.append(np.mean(masks["fast"] == masks["reference"]))
            agree_hist.append(np.mean(histogram_otsu_mask(rgb) == masks["reference"]))
            for m in MODES:
                empty[m] += not masks[m].any()
            cells.append(len(results["robust"].cells))
            if label in AUTHORS_CLASSES:
                truth = authors_mask(path)
                for m in ("reference", "robust"):
                    ious.setdefault(m, []).append(iou(masks[m], truth))
        out[label] = {
            "fields": len(files),
            "agreement_mean": float(np.mean(agree)),
            "agreement_min": float(np.min(agree)),
            "agreement_hist_otsu_mean": float(np.mean(agree_hist)),
            "empty_rate": {m: empty[m] / len(files) for m in MODES},
            "robust_cells_per_field": float(np.mean(cells)),
            "iou_authors": {m: float(np.mean(v)) for m, v in ious.items()},
        }
    return out


def _stats(ms: list[float]) -> dict:
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}


def time_modes(fields: list[np.ndarray], repeats: int, **kwargs) -> dict:
    """Median and p95 ms per field of each mode, timed side by side field by field."""
    ms = {m: [] for m in MODES}
    for _ in range(repeats):
        for rgb in fields:
            for m in MODES:
                t0 = time.perf_counter()
                segment(rgb, m, **kwargs)
                ms[m].append((time.perf_counter() - t0) * 1e3)
    out = {m: _stats(v) for m, v in ms.items()}
    out["speedup_median"] = out["reference"]["median_ms"] / out["fast"]["median_ms"]
    out["speedup_p95"] = out["reference"]["p95_ms"] / out["fast"]["p95_ms"]
    return out


def recall_precision(masks, truths) -> dict:
    """Pooled pixel recall and precision, and the fraction of true blasts found (>= half)."""
    hit = sum(np.count_nonzero(m & t) for m, t in zip(masks, truths))
    found = total = 0
    for m, t in zip(masks, truths):
        n, labels = cv2.connectedComponents(t.view(np.uint8))
        covered = np.bincount(labels[m], minlength=n) / np.maximum(np.bincount(labels.ravel()), 1)
        found += int(np.count_nonzero(covered[1:] >= 0.5))
        total += n - 1
    return {
        "recall": hit / max(sum(np.count_nonzero(t) for t in truths), 1),
        "precision": hit / max(sum(np.count_nonzero(m) for m in masks), 1),
        "blasts_found": found / max(total, 1),
    }


def synth_quality(n: int) -> dict:
    """Recall and precision of each mode on ``n`` generated 224 px fields per class."""
    out = {}
    for label in CLASSES:
        pairs = [synth_field(label, seed=10_000 + s) for s in range(n)]
        out[label] = {
            m: recall_precision([segment(f, m).mask for f, _ in pairs], [t for _, t in pairs])
            for m in ("reference", "robust")
        }
    return out


def frames(n: int, repeats: int) -> dict:
    """Timings and quality on ``n`` generated 2028x1520 frames (one class each)."""
    fields, truths = zip(*(synth_field(CLASSES[i % 4], size=FRAME, seed=i) for i in range(n)))
    out = time_modes(list(fields), repeats)
    native_ms, agree_native, agree_fast = [], [], []
    for rgb in fields:
        t0 = time.perf_counter()
        native = segment(rgb, "reference", max_pixels=rgb.shape[0] * rgb.shape[1]).mask
        native_ms.append((time.perf_counter() - t0) * 1e3)
        fast = segment(rgb, "fast").mask
        agree_native.append(np.mean(fast == native))
        agree_fast.append(np.mean(fast == segment(rgb, "reference").mask))
    out["reference_native"] = _stats(native_ms)
    out["agreement_fast_vs_reference"] = float(np.mean(agree_fast))
    out["agreement_fast_vs_reference_native"] = float(np.mean(agree_native))
    out["robust_quality"] = recall_precision([segment(f).mask for f in fields], truths)
    out["frames"] = n
    return out


def check_targets(report: dict) -> dict:
    """Which targets of the issue are met (None where the data was absent)."""
    shared = report.get("shared")
    synth = report["synthetic"]
    return {
        "agreement": shared
        and all(c["agreement_mean"] >= TARGETS["agreement"] for c in shared.values()),
        "speedup": report["speed_224"]["speedup_median"] >= TARGETS["speedup"],
        "robust_empty": shared
        and all(c["empty_rate"]["robust"] <= TARGETS["robust_empty"] for c in shared.values()),
        "synth_recall": all(
            c["robust"]["recall"] >= TARGETS["synth_recall"] for c in synth.values()
        ),
        "synth_precision": all(
            c["robust"]["precision"] >= TARGETS["synth_precision"] for c in synth.values()
        ),
    }


def run(data_dir: Path | str = DEFAULT_DATA, quick: bool = False, out_dir=None) -> dict:
    """Measure everything; write ``report.json``/``report.md``/plot to ``out_dir`` if given."""
    data_dir = Path(data_dir)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    try:
        report: dict = {"quick": quick, "data": str(data_dir), "targets": TARGETS}
        have_data = (data_dir / "Original").is_dir()
        if have_data:
            paths = class_paths(data_dir, quick)
            report["shared"] = shared_quality(paths)
            timing = [read_field(p) for ps in paths.values() for p in ps[:: 8 if quick else 4]]
        else:
            timing = [synth_field(c, seed=s)[0] for c in CLASSES for s in range(10)]
        timing = timing[:: max(1, len(timing) // (60 if quick else 400))]
        report["speed_224"] = time_modes(timing, 1 if quick else 2)
        report["speed_224"]["fields"] = len(timing)
        report["synthetic"] = synth_quality(10 if quick else 50)
        report["frame_2028x1520"] = frames(1 if quick else 4, 2 if quick else 5)
        report["met"] = check_targets(report)
    finally:
        cv2.setNumThreads(threads)
    report["seconds"] = time.perf_counter() - t0
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        (out_dir / "report.md").write_text(markdown(report))
        plot(report, out_dir / "segmentation.png")
    return report


def markdown(r: dict) -> str:
    """The report as Markdown tables."""
    s224, frame = r["speed_224"], r["frame_2028x1520"]
    lines = [
        "# Segmentation benchmark",
        "",
        f"{'Quick' if r['quick'] else 'Full'} run, one OpenCV thread, {r['seconds']:.0f} s. "
        "Targets met: "
        + ", ".join(
            f"{k} {'yes' if v else 'NO' if v is False else 'n/a'}" for k, v in r["met"].items()
        ),
        "",
        "## Speed (ms per field, median / p95)",
        "",
        "| input | reference (kmeans) | fast | robust | speed-up (median / p95) |",
        "|---|---|---|---|---|",
    ]
    for name, t in (("224x224 field", s224), ("2028x1520 frame", frame)):
        cells = " | ".join(f"{t[m]['median_ms']:.2f} / {t[m]['p95_ms']:.2f}" for m in MODES)
        lines.append(f"| {name} | {cells} | {t['speedup_median']:.1f}x / {t['speedup_p95']:.1f}x |")
    nat = frame["reference_native"]
    lines += [
        "",
        f"Frames are analysed at 507x380 (see `leukedge.edge.segment`). The reference at full "
        f"2028x1520 resolution takes {nat['median_ms']:.0f} ms "
        f"({nat['median_ms'] / frame['fast']['median_ms']:.0f}x the fast path); fast agrees with "
        f"it on {100 * frame['agreement_fast_vs_reference_native']:.2f}% of pixels and with the "
        f"reference at analysis resolution on {100 * frame['agreement_fast_vs_reference']:.3f}%. "
        f"Robust on frames: recall {frame['robust_quality']['recall']:.3f}, precision "
        f"{frame['robust_quality']['precision']:.3f}.",
    ]
    if "shared" in r:
        lines += [
            "",
            "## Shared Taleqani fields",
            "",
            "| class | fields | agreement fast (cv2 Otsu) mean / min | agreement histogram Otsu "
            "| empty: reference | empty: robust | IoU authors: reference | IoU: robust "
            "| robust cells/field |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, c in r["shared"].items():
            io = c["iou_authors"]
            lines.append(
                f"| {label} | {c['fields']} | {100 * c['agreement_mean']:.3f}% / "
                f"{100 * c['agreement_min']:.2f}% | {100 * c['agreement_hist_otsu_mean']:.3f}% "
                f"| {100 * c['empty_rate']['reference']:.1f}% "
                f"| {100 * c['empty_rate']['robust']:.1f}% "
                f"| {io.get('reference', float('nan')):.3f} | {io.get('robust', float('nan')):.3f} "
                f"| {c['robust_cells_per_field']:.1f} |"
            )
        lines.append(
            f"\nAuthors' masks: `Segmented/` pixels with any channel > {AUTHORS_BLACK} "
            "(Pro's are unusable). Data: Ghaderzadeh et al. 2022; Hosseini et al. 2023."
        )
    lines += [
        "",
        "## Generated fields (ground truth)",
        "",
        "| class | reference recall / precision | robust recall / precision | blasts found "
        "(reference / robust) |",
        "|---|---|---|---|",
    ]
    for label, c in r["synthetic"].items():
        ref, rob = c["reference"], c["robust"]
        lines.append(
            f"| {label} | {ref['recall']:.3f} / {ref['precision']:.3f} | {rob['recall']:.3f} / "
            f"{rob['precision']:.3f} | {ref['blasts_found']:.3f} / {rob['blasts_found']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> bool:
    """Bar plots of the main figures; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = np.arange(len(MODES))
    for i, (name, t) in enumerate(
        (("224 px", r["speed_224"]), ("2028x1520", r["frame_2028x1520"]))
    ):
        axes[0].bar(x + 0.4 * i, [t[m]["median_ms"] for m in MODES], 0.4, label=name)
    axes[0].set(xticks=x + 0.2, xticklabels=MODES, ylabel="ms per field (median)", yscale="log")
    axes[0].legend()
    synth = r["synthetic"]
    x = np.arange(len(synth))
    for i, m in enumerate(("reference", "robust")):
        axes[1].bar(x + 0.4 * i, [c[m]["recall"] for c in synth.values()], 0.4, label=m)
    axes[1].set(xticks=x + 0.2, xticklabels=list(synth), ylabel="blast recall (generated)")
    axes[1].legend()
    if "shared" in r:
        shared = r["shared"]
        x = np.arange(len(shared))
        for i, m in enumerate(("reference", "robust")):
            axes[2].bar(
                x + 0.4 * i, [100 * c["empty_rate"][m] for c in shared.values()], 0.4, label=m
            )
        axes[2].set(xticks=x + 0.2, xticklabels=list(shared), ylabel="empty masks (%)")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Taleqani data folder")
    parser.add_argument("--quick", action="store_true", help="subsample: well under a minute")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/segmentation"), help="report folder"
    )
    args = parser.parse_args(argv)
    report = run(args.data, args.quick, args.out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
