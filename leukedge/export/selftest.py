"""Write a bundle's known-answer set and its manifest section (``leukedge.edge.selftest``).

The inputs: four edge cases (``edge_cases``) and the synthetic fields (``synth_field``,
fixed seeds, through the bundle's own preprocessing) whose outputs are least saturated,
fields the model calls different classes first. Saturated probabilities hide arithmetic
errors, and a runtime stuck on one class would still match fields the model calls that
class anyway (issue 32's broken LiteRT called every field "Benign").

Writing again (after the model file changed) replaces the set; on the same machine and
runtime it writes the same bytes, so the manifest's SHA-256s stay as they were.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from leukedge.edge.bundle import read_manifest, write_manifest
from leukedge.edge.classes import CLASSES
from leukedge.edge.model import load_model
from leukedge.edge.preprocess import view
from leukedge.edge.selftest import (
    SELF_TEST_FILE,
    input_names,
    model_outputs,
    reference_machine,
)
from leukedge.edge.synth import synth_field
from leukedge.errors import UsageError

#: Largest absolute difference allowed per output, about twice what correct runtimes
#: differ by on the shipped INT8 bundles' known answers (``benchmarks/selftest_tolerance.py``):
#: probabilities up to 0.074 (LiteRT's XNNPACK vs its built-in and reference kernels, ONNX
#: Runtime on the same .tflite; threads and ONNX Runtime optimisation levels change none),
#: where a model computed wrongly is off by 0.3 to 1. Features: relative to the largest
#: reference feature, since their scale depends on the model; correct runtimes differ by up
#: to 0.014 of it on the known answers, 0.035 on 100 real fields (LiteRT's kernels again).
PROBABILITY_TOLERANCE = 0.15
FEATURES_RELATIVE = 0.05
#: Synthetic candidates: these seeds of every class; ``N_FIELDS`` of them are kept.
SEEDS = range(4)
N_FIELDS = 2
NOISE_SEED = 32


def edge_cases(size: int) -> dict[str, np.ndarray]:
    """Case name -> uint8 (size, size, 3) model view: all black, all white, a colour
    gradient (red across, green down, blue diagonal) and per-pixel noise of a fixed seed
    over 16 levels from 0 to 255 (half the bytes of 256 levels, stored compressed)."""
    ramp = np.arange(size, dtype=np.int64) * 255 // max(size - 1, 1)
    gradient = np.stack(
        np.broadcast_arrays(ramp[None, :], ramp[:, None], (ramp[None, :] + ramp[:, None]) // 2),
        axis=-1,
    )
    rng = np.random.default_rng(NOISE_SEED)
    return {
        "zeros": np.zeros((size, size, 3), np.uint8),
        "max": np.full((size, size, 3), 255, np.uint8),
        "gradient": gradient.astype(np.uint8),
        f"noise-seed{NOISE_SEED}": (rng.integers(0, 16, (size, size, 3)) * 17).astype(np.uint8),
    }


def _least_saturated(probs: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` rows of float32 (N, C) ``probs`` with the lowest top probability,
    taking rows whose top class is not yet among those taken first."""
    order = [int(i) for i in np.argsort(probs.max(1), kind="stable")]
    chosen: list[int] = []
    for i in order:
        if len(chosen) < k and probs[i].argmax() not in {probs[j].argmax() for j in chosen}:
            chosen.append(i)
    chosen += [i for i in order if i not in chosen][: k - len(chosen)]
    return chosen


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` with fixed zip timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def known_answer_set(model, n_fields: int = N_FIELDS) -> tuple[list[str], dict[str, np.ndarray]]:
    """(case names, the arrays of ``selftest.npz``) for a loaded model (see
    ``leukedge.edge.selftest``)."""
    names = input_names(model)
    cases: dict[str, list[np.ndarray]] = {}
    for label in CLASSES:
        for seed in SEEDS:
            rgb, _ = synth_field(label, seed=seed)
            cases[f"synth-{label}-seed{seed}"] = [view(rgb, spec) for spec in model.input_specs]
    candidates = list(cases)
    probs = model_outputs(model, [np.stack(v) for v in zip(*cases.values())])["probabilities"]
    keep = [candidates[i] for i in _least_saturated(probs, n_fields)]
    cases = {k: cases[k] for k in keep}
    cases |= {k: [v] * len(names) for k, v in edge_cases(model.preprocess.size).items()}
    views = [np.stack(v) for v in zip(*cases.values())]
    arrays = {f"view_{name}": v for name, v in zip(names, views)}
    return list(cases), arrays | model_outputs(model, views)


def add_self_test(
    bundle: str | Path,
    tolerance: float | None = None,
    n_fields: int = N_FIELDS,
    backend: str = "auto",
) -> dict:
    """Write ``selftest.npz`` into a bundle folder (replacing one there), add its ``self_test``
    section to the manifest and rewrite the SHA-256s; returns the section.

    ``tolerance`` bounds the probabilities (default ``PROBABILITY_TOLERANCE``); the
    features' bound is ``FEATURES_RELATIVE`` times their largest absolute reference value.
    """
    tolerance = PROBABILITY_TOLERANCE if tolerance is None else tolerance
    if not 0 < tolerance < 1:
        raise UsageError(f"tolerance {tolerance}: a difference of probabilities, in (0, 1)")
    model = load_model(bundle, backend=backend, self_test=False)
    cases, arrays = known_answer_set(model, n_fields)
    (model.bundle / SELF_TEST_FILE).write_bytes(_npz_bytes(arrays))
    tolerances = {"probabilities": float(tolerance)}
    if "features" in arrays:
        scale = float(np.max(np.abs(arrays["features"])))
        tolerances["features"] = float(f"{FEATURES_RELATIVE * max(scale, 1e-6):.3g}")
    section = {
        "file": SELF_TEST_FILE,
        "n": len(cases),
        "cases": cases,
        "tolerance": tolerances,
        "reference": reference_machine(model.backend.name),
    }
    manifest = read_manifest(model.bundle)
    write_manifest(model.bundle, {**manifest, "self_test": section})
    return section
