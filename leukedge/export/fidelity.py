"""How closely an exported (e.g. INT8) model follows its reference (fp32): numpy only.

Models are model files (.onnx, .tflite, run on ``leukedge.edge.backends``) or
callables ``probs(batch float32 (N, ...)) -> float32 (N, C)`` probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from leukedge.edge.backends import open_backend

from ..evaluation.metrics import accuracy

ProbsFn = Callable[[np.ndarray], np.ndarray]


def model_probs(path: str | Path, threads: int | None = None) -> ProbsFn:
    """``probs(batch)`` for a model file (.onnx or .tflite)."""
    return open_backend(path, "auto", threads).run


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement and max/mean absolute difference of two (N, C) probability arrays."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate)
    return {
        "n": int(len(reference)),
        "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "max_abs_prob_diff": float(diff.max(initial=0.0)),
        "mean_abs_prob_diff": float(diff.mean()) if diff.size else 0.0,
    }


def _side(model: str | Path | ProbsFn, threads: int | None) -> tuple[ProbsFn, dict]:
    if callable(model):
        return model, {}
    path = Path(model)
    return model_probs(path, threads), {"file": path.name, "bytes": path.stat().st_size}


def fidelity(
    reference: str | Path | ProbsFn,
    candidate: str | Path | ProbsFn,
    batch: np.ndarray,
    labels: np.ndarray | None = None,
    threads: int | None = None,
) -> dict:
    """Compare ``candidate`` with ``reference`` on float32 (N, ...) preprocessed inputs.

    Returns ``compare``'s figures plus ``reference`` and ``candidate`` entries
    with ``file`` and ``bytes`` (model files) and ``accuracy`` (when int (N,)
    ``labels`` are given), and ``size_ratio`` = reference / candidate bytes.
    """
    ref_fn, ref = _side(reference, threads)
    cand_fn, cand = _side(candidate, threads)
    ref_p, cand_p = ref_fn(batch), cand_fn(batch)
    if labels is not None:
        ref["accuracy"], cand["accuracy"] = accuracy(labels, ref_p), accuracy(labels, cand_p)
    report = {**compare(ref_p, cand_p), "reference": ref, "candidate": cand}
    if "bytes" in ref and "bytes" in cand:
        report["size_ratio"] = ref["bytes"] / cand["bytes"]
    return report


#: The bar an INT8 model must clear against its fp32 original on the validation split.
MIN_AGREEMENT, MAX_ACCURACY_DROP = 0.995, 0.005


def shortfalls(report: dict) -> list[str]:
    """What keeps an INT8 model from the fidelity bar (empty: it clears it)."""
    problems = []
    if report["top1_agreement"] < MIN_AGREEMENT:
        problems.append(f"top-1 agreement {report['top1_agreement']:.4f} < {MIN_AGREEMENT}")
    ref, cand = report.get("reference", {}), report.get("candidate", {})
    if "accuracy" in ref and "accuracy" in cand:
        drop = ref["accuracy"] - cand["accuracy"]
        if drop > MAX_ACCURACY_DROP:
            problems.append(f"accuracy drop {drop:.4f} > {MAX_ACCURACY_DROP}")
    return problems


def to_markdown(report: dict, reference: str = "fp32", candidate: str = "int8") -> str:
    """A ``fidelity`` report as a short Markdown page."""
    ref, cand = report["reference"], report["candidate"]
    lines = [
        f"# Fidelity: {candidate} vs {reference}",
        "",
        f"{report['n']} fields" + (f" of the {report['split']} split" if "split" in report else ""),
        "",
        f"| | {reference} | {candidate} |",
        "|---|---|---|",
    ]
    if "bytes" in ref and "bytes" in cand:
        lines.append(f"| size (bytes) | {ref['bytes']:,} | {cand['bytes']:,} |")
    if "accuracy" in ref and "accuracy" in cand:
        lines.append(f"| top-1 accuracy | {ref['accuracy']:.4f} | {cand['accuracy']:.4f} |")
    lines += [
        "",
        f"- top-1 agreement: {report['top1_agreement']:.4f}",
        f"- max |probability difference|: {report['max_abs_prob_diff']:.2e}",
        f"- mean |probability difference|: {report['mean_abs_prob_diff']:.2e}",
    ]
    if "size_ratio" in report:
        lines.append(f"- size ratio {reference}/{candidate}: {report['size_ratio']:.2f}x")
    if "quantization" in report:
        settings = ", ".join(f"{k}={v}" for k, v in report["quantization"].items())
        lines.append(f"- quantization: {settings}")
    problems = shortfalls(report)
    lines += ["", f"**Fails the fidelity bar: {'; '.join(problems)}.**" if problems else
              f"Clears the fidelity bar (agreement >= {MIN_AGREEMENT}, accuracy drop <= "
              f"{MAX_ACCURACY_DROP})."]  # fmt: skip
    return "\n".join(lines) + "\n"
