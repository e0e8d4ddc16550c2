"""Benchmark plots: latency per configuration and thread count, accuracy against size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .latency import label


def latency_plot(rows: list[dict], path: Path) -> Path:
    """Horizontal bars of median inference and field-to-result ms, one bar per thread count."""
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(label(r) for r in rows))
    threads = sorted({r["threads"] for r in rows})
    by = {(label(r), r["threads"]): r for r in rows}
    fig = Figure(
        figsize=(13, 1.2 + 0.45 * len(labels) * max(1, len(threads) / 2)), layout="constrained"
    )
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(labels))
    h = 0.8 / len(threads)
    for ax, measure, title in zip(axes, ("infer", "predict"), ("inference", "field to result")):
        for i, t in enumerate(threads):
            ms = [by[(lb, t)][measure]["median_ms"] if (lb, t) in by else np.nan for lb in labels]
            ax.barh(y + i * h, ms, h, label=f"{t} thread{'s' if t > 1 else ''}")
        ax.set(xscale="log", xlabel="median ms (log)", title=title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y + h * (len(threads) - 1) / 2, labels)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(threads))
    fig.savefig(path, dpi=110)
    return path


def accuracy_size_plot(models: list[dict], reference: dict | None, path: Path) -> Path:
    """Clean accuracy (95% CI) against model file size, one point per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for m in models:
        size, acc = m["size_bytes"] / 1e6, m["accuracy"]
        lo, hi = m["accuracy_ci"]
        ax.errorbar(size, acc, yerr=[[acc - lo], [hi - acc]], fmt="o", capsize=3)
        ax.annotate(m["name"], (size, acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if reference and reference.get("accuracy") is not None:
        ax.axhline(
            reference["accuracy"],
            color="tab:red",
            ls="--",
            label=f"{reference['name']} (reference)",
        )
        ax.legend(loc="lower right")
    ax.set(
        xscale="log", xlabel="model file size (MB, log)", ylabel="accuracy (95% CI)", ylim=(0, 1)
    )
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path
