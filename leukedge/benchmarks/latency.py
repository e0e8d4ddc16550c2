"""Classification latency: every model x format x precision x backend x thread count, and
the PyTorch and Keras baselines, each configuration in a fresh process
(``leukedge.benchmarks.worker``), batch 1, one 224 px field.

Ratios compare configurations measured in the same run, at the same thread count:
INT8 against fp32 (latency and file size) and every bundle against the baseline of
its architecture and input size (``ratio`` = baseline / candidate: above 1, the
candidate is faster or smaller). Each configuration runs ``REPEATS`` times, interleaved, and
reports the median over runs and their spread. A bundle is measured on each of its model
files (``model.file`` and ``model.routes``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from .spawn import SpawnError, run_module
from .timing import QUICK, Budget

#: Baseline framework -> (worker kind, format, backend).
BASELINES = {"pytorch": ("ultralytics", "pt", "pytorch"), "keras": ("keras", "keras", "keras")}
#: Row keys copied from model records.
KEEP = ("name", "arch", "model", "format", "precision", "backend", "size_bytes", "input_size")
#: Row keys copied from bundle records only (which model file, whether this machine picks it).
ROUTE_KEYS = ("route", "picked", "sha256")


def label(row: dict) -> str:
    """Model, format, precision and backend; and the bundle name of a trained bundle."""
    text = f"{row['model']} {row['format']} {row['precision']} {row['backend']}"
    if row["source"] not in ("shipped", "given"):
        return text
    return (
        f"{text} [{row['name']}: {row['route']}]" if "route" in row else f"{text} [{row['name']}]"
    )


def configs(zoo: dict, threads: list[int], field: str, budget: Budget) -> list[tuple[dict, dict]]:
    """(row description, worker payload) of every configuration to measure."""
    base = {"field": field, "budget": asdict(budget)}
    out = []
    for t in threads:
        for m in zoo["models"]:
            row = {**{k: m[k] for k in KEEP}, "source": m["source"], "trained": m["trained"]}
            row |= {k: m[k] for k in ROUTE_KEYS if k in m}
            payload = {
                "kind": "bundle",
                "path": m["bundle"],
                "backend": m["backend"],
                "route": m.get("route"),
            }
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


#: Fresh-process runs of each configuration (interleaved: every configuration once, then
#: again), and the relative spread of their medians above which a row is flagged as noisy.
REPEATS, NOISY_SPREAD = 3, 0.2


def _merge(runs: list[dict]) -> dict:
    """One row from repeated worker runs of a configuration: each statistic the median over
    runs, ``runs_median_ms`` the runs' medians and ``spread`` (max - min) / median of them."""
    out = dict(runs[0])
    out["cold_start_ms"] = float(np.median([r["cold_start_ms"] for r in runs]))
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    for measure in ("infer", "predict"):
        stats = {k: float(np.median([r[measure][k] for r in runs])) for k in runs[0][measure]}
        medians = [r[measure]["median_ms"] for r in runs]
        stats["n"] = int(sum(r[measure]["n"] for r in runs))
        stats["runs_median_ms"] = medians
        stats["spread"] = (max(medians) - min(medians)) / stats["median_ms"]
        out[measure] = stats
    return out


def run(zoo: dict, threads: list[int], field: str, quick: bool) -> dict:
    """Measure every configuration ``REPEATS`` times, interleaved (once with ``quick``):
    ``{"rows", "ratios", "failures", "budget", "repeats", "noisy"}``; ``noisy`` labels
    the rows whose runs' medians spread by more than ``NOISY_SPREAD``."""
    budget = QUICK if quick else Budget()
    repeats = 1 if quick else REPEATS
    todo = configs(zoo, threads, field, budget)
    runs: list[list[dict]] = [[] for _ in todo]
    failures = []
    for _ in range(repeats):
        for i, (row, payload) in enumerate(todo):
            try:
                runs[i].append(run_module("worker", payload, 120 if quick else 600))
            except SpawnError as exc:
                where = f"{label(row)} threads={row['threads']}"
                failures.append({"config": where, "error": str(exc)})
    rows = [{**row, **_merge(r)} for (row, _), r in zip(todo, runs) if r]
    noisy = [
        f"{label(r)} threads={r['threads']}"
        for r in rows
        if max(r["infer"]["spread"], r["predict"]["spread"]) > NOISY_SPREAD
    ]
    return {
        "budget": asdict(budget),
        "repeats": repeats,
        "rows": rows,
        "ratios": ratios(rows),
        "failures": failures,
        "noisy": noisy,
    }
