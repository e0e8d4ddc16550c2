"""Do explanations point at the blasts, and what does one cost? (issue 26)

On synthetic fields (``edge.synth_field``: exact blast masks), for each bundle: the fields
the model classifies right are explained (``edge.explain.occlusion_map``, default grid) and
the map's peak (its largest value) is checked against the mask: on a blast pixel (a hit),
its distance to the nearest blast pixel, and whether the map is flat (no patch lowers the
predicted probability by ``FLAT`` or more: the decision rests on no single region, e.g.
several blasts that each suffice). A model whose decision rests on the blasts by
construction (``BlastCounter``: the probability grows with the blast-coloured pixels it
sees) checks the method apart from any trained model.

With ``--split-csv`` (a ``leukedge data split`` file), the same on the real test fields of
Benign, Early and Pre against the dataset authors' own segmentation (``Segmented/``: the
field with all but the cells black; Pro's is empty, so Pro is left out). Tests marked
shared read these fields; nothing of them is written.

Cost per field: wall and CPU seconds of ``occlusion_map`` with the model on one thread
(CPU time is what an idle core would take; this machine is shared), beside one ordinary
``predict``.

    python benchmarks/explain.py --n 25 --split-csv runs/split4/split.csv \
        --out benchmarks/results/explain-2026-12-01
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from leukedge.edge.classes import CLASSES
from leukedge.edge.explain import GRID, REFINE, occlusion_map, overlay
from leukedge.edge.model import input_specs, load_model
from leukedge.edge.preprocess import Preprocess
from leukedge.edge.synth import synth_field

#: A map whose largest value is below this (a probability drop) is flat.
FLAT = 0.01
#: Seeds of the fields: apart from those the method was developed on (5000-7100).
SEED0 = 100_000


class BlastCounter:
    """A stand-in model that decides on the blasts alone: p(the field's class) grows with
    the share of blast-coloured (blue well above green) pixels of its view."""

    name = "blast-counter"

    def __init__(self):
        self.preprocess = Preprocess(input_mode="field-wb", size=224, layout="NHWC")
        self.input_specs = input_specs(self.preprocess)
        self.classes = ("none", "blast")

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        share = (batch[..., 2] - batch[..., 1] > 0.25).mean(axis=(1, 2))
        p = 1 / (1 + np.exp(-(share * 40 - 1)))
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    def right(self, field: np.ndarray, label: str) -> bool:
        """Whether it finds the field's blasts (the classes mean nothing to it)."""
        batch = np.stack([field.astype(np.float32) / 255])
        return bool(self.probabilities(batch)[0, 1] > 0.5)


def predicts(model):
    """Whether ``model`` classifies a field right: ``right(field, label) -> bool``."""
    return getattr(model, "right", None) or (lambda f, label: model.predict(f).label == label)


def synthetic_fields(n: int):
    """(label, RGB field, bool blast mask) of ``n`` synthetic fields per class."""
    for i in range(n):
        for label in CLASSES:
            yield (label, *synth_field(label, seed=SEED0 + i))


def real_fields(split_csv: Path, split: str = "test"):
    """(label, RGB field, bool cell mask) of a split's Benign, Early and Pre fields; the
    mask is the authors' segmentation (``Segmented/`` beside ``Original/``) cleaned of
    JPEG speckle."""
    import csv

    from leukedge.edge.imageio import read_field

    with open(split_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    for r in rows:
        if r["label"] == "Pro":
            continue
        path = Path(r["path"])
        seg = read_field(path.parents[2] / "Segmented" / path.parent.name / path.name)
        mask = cv2.morphologyEx((seg.max(axis=2) > 40).astype(np.uint8), cv2.MORPH_OPEN,
                                np.ones((3, 3), np.uint8)).astype(bool)  # fmt: skip
        if mask.any():
            yield r["label"], read_field(path), mask


def evaluate(model, fields) -> dict:
    """Per correctly classified field: hit, distance (px), flat, seconds (wall, CPU)."""
    rows, examples, tried, right = [], [], 0, predicts(model)
    for label, field, mask in fields:
        tried += 1
        if not right(field, label):
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        heat = occlusion_map(field, model)  # the model segments as it would; mask: truth only
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)[y, x]
        rows.append((label, bool(mask[y, x]), float(dist), heat.max() < FLAT, wall, cpu))
        if len(examples) < 8:
            shown = overlay(field, heat, mask, alpha=0.45)
            cv2.drawMarker(shown, (int(x), int(y)), (255, 255, 255), cv2.MARKER_CROSS, 12, 2)
            examples.append(shown)
    return {"tried": tried, "rows": rows, "examples": examples}


def predict_seconds(model, repeats: int = 20) -> tuple[float, float]:
    field = synth_field("Pre", seed=1)[0]
    model.predict(field)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        model.predict(field)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def table(results: dict) -> str:
    lines = [
        "| model | right / tried | peak on a blast | within 5 px | flat maps | hit, non-flat "
        "| explain s/field wall (CPU) | predict s (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows = r["rows"]
        hit = np.array([h for _, h, *_ in rows])
        dist = np.array([d for _, _, d, *_ in rows])
        flat = np.array([f for *_, f, _, _ in rows])
        wall = np.median([w for *_, w, _ in rows])
        cpu = np.median([c for *_, c in rows])
        k = len(rows)
        pred = r["predict"]
        pred_s = f"{pred[0]:.3f} ({pred[1]:.3f})" if pred else "-"
        nf = ~flat
        lines.append(
            f"| {name} | {k} / {r['tried']} | **{hit.sum()}/{k} ({100 * hit.mean():.0f}%)** "
            f"| {(dist <= 5).sum()}/{k} | {flat.sum()} | {hit[nf].sum()}/{nf.sum()} "
            f"| {wall:.2f} ({cpu:.2f}) | {pred_s} |"
        )
    per_class = ["", "Hits per class (hits/right):", ""]
    for name, r in results.items():
        parts = []
        for label in CLASSES:
            hs = [h for lab, h, *_ in r["rows"] if lab == label]
            parts.append(f"{label} {sum(hs)}/{len(hs)}")
        per_class.append(f"- {name}: " + ", ".join(parts))
    return "\n".join(lines + per_class)


def _strip(examples: list[np.ndarray], n: int = 8) -> np.ndarray:
    """The first ``n`` explained fields side by side (black where there are fewer)."""
    blank = np.zeros((224, 224, 3), np.uint8)
    return np.hstack((examples + [blank] * n)[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["default", "mobilenetv2"])
    ap.add_argument("--n", type=int, default=25, help="fields per class")
    ap.add_argument("--no-reference", action="store_true", help="skip BlastCounter")
    ap.add_argument("--split-csv", type=Path, help="also the real test fields of this split")
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.png")
    args = ap.parse_args()
    results, real = {}, {}
    models = [] if args.no_reference else [BlastCounter()]
    models += [load_model(m, threads=1) for m in args.models]
    for model in models:
        r = evaluate(model, synthetic_fields(args.n))
        r["predict"] = None if isinstance(model, BlastCounter) else predict_seconds(model)
        results[model.name] = r
        if args.split_csv and not isinstance(model, BlastCounter):
            real[model.name] = evaluate(model, real_fields(args.split_csv))
            real[model.name]["predict"] = r["predict"]
    text = (
        f"Occlusion maps (grid {GRID}x{GRID}, then {REFINE}x{REFINE} half-size patches "
        f"around the peak: {GRID**2 + REFINE**2 + 1} inferences) on synthetic 224 px fields, "
        f"seeds {SEED0}..{SEED0 + args.n - 1} per class.\n\n{table(results)}\n\n"
    )
    if real:
        text += (
            f"Real test fields of {args.split_csv} (Benign, Early, Pre) against the "
            f"authors' segmentation:\n\n{table(real)}\n\n"
        )
    text += (
        "Figure rows (synthetic fields only; the first 8 explained, white cross: the map's "
        f"peak, green: the exact blast outline): {', '.join(results)}.\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        strips = [_strip(r["examples"]) for r in results.values()]
        png = cv2.cvtColor(np.vstack(strips), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(args.out.with_suffix(".png")), png)


if __name__ == "__main__":
    main()
