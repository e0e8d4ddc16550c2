"""Timing loops and latency statistics shared by the benchmark workers (numpy only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Budget:
    """How long to time a call: ``warmup`` untimed calls, then at least ``n_min`` timed
    calls, more (up to ``n_max``) while the timed calls total under ``seconds``. A call
    of a few ms gets hundreds of samples; a slow one (Keras ``predict``, an oversubscribed
    thread pool) ``n_min``, whose p99 is then close to the maximum."""

    warmup: int = 3
    n_min: int = 20
    n_max: int = 300
    seconds: float = 1.5


QUICK = Budget(warmup=1, n_min=5, n_max=20, seconds=0.2)


def latency_stats(ms: list[float]) -> dict:
    """Median, p95, p99 and mean ms of the calls, their count and throughput (calls/s)."""
    a = np.asarray(ms, np.float64)
    return {
        "n": int(a.size),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "throughput_per_s": float(1e3 / a.mean()),
    }


def time_calls(fn: Callable[[], object], budget: Budget) -> dict:
    """``latency_stats`` of ``fn()`` called as ``budget`` says, one call at a time."""
    for _ in range(budget.warmup):
        fn()
    ms: list[float] = []
    while len(ms) < budget.n_max and (len(ms) < budget.n_min or sum(ms) < budget.seconds * 1e3):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return latency_stats(ms)
