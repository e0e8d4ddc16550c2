"""The evaluation report's plots, drawn on a matplotlib ``Figure`` the caller saves.

Each ``plot_*(fig, result)`` takes an ``evaluate`` result (as in ``report.json``).
matplotlib itself is imported by ``render.write_report``, which makes the figures.
"""

from __future__ import annotations

import numpy as np

from .render import lookup


def plot_confusion(fig, result: dict) -> None:
    cm = np.asarray(result["clean"]["confusion"], float)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax = fig.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    classes = result["classes"]
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            f"{int(v)}",
            ha="center",
            va="center",
            color="white" if rates[i, j] > 0.5 else "black",
        )
    ax.set_title(f"Confusion (accuracy {result['clean']['accuracy']:.3f})")


def plot_reliability(fig, result: dict) -> None:
    rel = result["clean"]["reliability"]
    edges = np.asarray(rel["edges"])
    acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
    ax = fig.subplots()
    ax.bar(
        edges[:-1],
        np.nan_to_num(acc),
        width=np.diff(edges),
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {result['clean']['ece']:.3f})")
    ax.legend(loc="upper left")


def plot_shifts(fig, result: dict, reference: dict | None) -> None:
    names = ["clean", *result["shifts"]] + (["shortcut"] if "shortcut" in result else [])
    entries = [result["clean"], *result["shifts"].values()]
    entries += [result["shortcut"]] if "shortcut" in result else []
    acc = np.array([e["accuracy"] for e in entries])
    ci = np.array([e["accuracy_ci"] for e in entries])
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(
        x,
        acc,
        yerr=[acc - ci[:, 0], ci[:, 1] - acc],
        capsize=3,
        color="tab:blue",
        label="this model",
    )
    if reference:
        keys = [("clean",), *(("shifts", n) for n in result["shifts"]), ("shortcut",)]
        ref = [lookup(reference, *k, "accuracy") for k in keys[: len(names)]]
        shown = [i for i, r in enumerate(ref) if r is not None]
        ax.scatter(
            shown,
            [ref[i] for i in shown],
            color="tab:red",
            marker="D",
            zorder=3,
            label=reference.get("name", "reference"),
        )
    if "shortcut" in result:
        ax.axhline(result["shortcut"]["chance"], color="grey", ls="--", label="chance")
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("Colour shifts and shortcut audit")
    ax.legend(loc="lower left")
