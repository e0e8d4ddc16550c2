"""Classification latency: every model x format x precision x backend x thread count, and
the PyTorch and Keras baselines, each configuration in a fresh process
(``leukedge.benchmarks.worker``), batch 1, one 224 px field.

Ratios compare configurations measured in the same run, at the same thread count:
INT8 against fp32 (latency and file size) and every bundle against the baseline of
its architecture and input size (``ratio`` = baseline / candidate: above 1, the
candidate is faster or smaller).
"""

from __future__ import annotations

from dataclasses import asdict

from .spawn import SpawnError, run_module
from .timing import QUICK, Budget

#: Baseline framework -> (worker kind, format, backend).
BASELINES = {"pytorch": ("ultralytics", "pt", "pytorch"), "keras": ("keras", "keras", "keras")}
#: Row keys copied from model records.
KEEP = ("name", "arch", "model", "format", "precision", "backend", "size_bytes", "input_size")


def label(row: dict) -> str:
    """Model, format, precision and backend; and the bundle name of a trained bundle."""
    text = f"{row['model']} {row['format']} {row['precision']} {row['backend']}"
    return f"{text} [{row['name']}]" if row["source"] in ("shipped", "given") else text


def configs(zoo: dict, threads: list[int], field: str, budget: Budget) -> list[tuple[dict, dict]]:
    """(row description, worker payload) of every configuration to measure."""
    base = {"field": field, "budget": asdict(budget)}
    out = []
    for t in threads:
        for m in zoo["models"]:
            row = {**{k: m[k] for k in KEEP}, "source": m["source"], "trained": m["trained"]}
            payload = {"kind": "bundle", "path": m["bundle"], "backend": m["backend"]}
            out.append(({**row, "threads": t}, {**base, **payload, "threads": t}))
        for b in zoo["baselines"]:
            kind, fmt, backend = BASELINES[b["framework"]]
            row = {
                "name": f"{b['model']} {b['framework']}",
                **{k: b[k] for k in ("arch", "model", "size_bytes", "input_size")},
                "format": fmt,
                "precision": "fp32",
                "backend": backend,
                "source": "baseline",
                "trained": False,
            }
            payload = {
                "kind": kind,
                "path": b["file"],
                "size": b["input_size"],
                "preprocess": b["preprocess"],
            }
            out.append(({**row, "threads": t}, {**base, **payload, "threads": t}))
    return out


def _ratio(kind: str, measure: str, candidate: dict, baseline: dict) -> dict:
    def value(row: dict) -> float:
        return row["size_bytes"] if measure == "size_bytes" else row[measure]["median_ms"]

    b, c = value(baseline), value(candidate)
    return {
        "kind": kind,
        "measure": measure,
        "arch": candidate["arch"],
        "threads": candidate["threads"],
        "candidate": label(candidate),
        "baseline": label(baseline),
        "candidate_value": c,
        "baseline_value": b,
        "ratio": b / c,
    }


def ratios(rows: list[dict]) -> list[dict]:
    """INT8 vs fp32 and bundle vs baseline ratios of rows measured at equal thread counts."""
    ours = [r for r in rows if r["source"] != "baseline"]
    baselines = [r for r in rows if r["source"] == "baseline"]
    key = ("arch", "input_size", "format", "backend", "threads", "source")
    fp32 = {tuple(r[k] for k in key): r for r in ours if r["precision"] == "fp32"}
    first_threads = min((r["threads"] for r in rows), default=None)
    out = []
    for r in ours:
        ref = fp32.get(tuple(r[k] for k in key))
        if r["precision"] == "int8" and ref is not None:
            out += [_ratio("int8_vs_fp32", m, r, ref) for m in ("infer", "predict")]
            if r["threads"] == first_threads:
                out.append(_ratio("int8_vs_fp32", "size_bytes", r, ref))
        for b in baselines:
            if all(b[k] == r[k] for k in ("arch", "input_size", "threads")):
                out += [_ratio(f"vs_{b['backend']}", m, r, b) for m in ("infer", "predict")]
    return out


def run(zoo: dict, threads: list[int], field: str, quick: bool) -> dict:
    """Measure every configuration: ``{"rows", "ratios", "failures", "budget"}``."""
    budget = QUICK if quick else Budget()
    rows, failures = [], []
    for row, payload in configs(zoo, threads, field, budget):
        try:
            rows.append({**row, **run_module("worker", payload, 120 if quick else 600)})
        except SpawnError as exc:
            failures.append({"config": f"{label(row)} threads={row['threads']}", "error": str(exc)})
    return {"budget": asdict(budget), "rows": rows, "ratios": ratios(rows), "failures": failures}
