"""Evaluation reports: clean metrics, the colour-shift suite and the shortcut audit.

``evaluate`` runs any classifier, given as ``predict(fields) -> probabilities``, on
labelled fields: clean, under every shift of ``leukedge.evaluation.shifts.SHIFTS`` and with
the cells painted out (``paint_out_cells``). ``write_report`` writes ``report.json``,
``report.md`` and the ``confusion.png``, ``reliability.png`` and ``shifts.png`` plots.
Training reports, ``leukedge eval`` and the benchmarks all use these two functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..data.split import read_split
from ..edge.imageio import FieldError, read_field
from ..evaluation.shifts import SHIFTS, paint_out_cells
from ..progress import progress_bar
from .metrics import N_BOOTSTRAP, summarize

#: predict(list of RGB uint8 (H, W, 3) fields) -> float (N, C) probabilities.
Predict = Callable[[list[np.ndarray]], np.ndarray]

#: Figures kept for each shift and for the shortcut audit.
BRIEF = ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece")


def _conditions(shifts: bool, shortcut: bool, seg_mode: str) -> dict:
    """Condition name -> field transform (None: the field as read)."""
    conditions: dict[str, Callable | None] = {"clean": None}
    if shifts:
        conditions.update(SHIFTS)
    if shortcut:
        conditions["shortcut"] = partial(paint_out_cells, seg=seg_mode)
    return conditions


def _probabilities(predict: Predict, fields: list[np.ndarray], n_classes: int) -> np.ndarray:
    probs = np.asarray(predict(fields), np.float64)
    if probs.shape != (len(fields), n_classes):
        raise ValueError(
            f"predict returned shape {probs.shape} for {len(fields)} fields, {n_classes} classes"
        )
    return probs


def worst_shift(shifts: dict[str, dict]) -> str | None:
    """The shift with the lowest accuracy (then macro-F1), or None for no shifts."""
    scored = {k: v for k, v in shifts.items() if v.get("accuracy") is not None}
    if not scored:
        return None
    return min(scored, key=lambda k: (scored[k]["accuracy"], scored[k].get("macro_f1") or 0))


def evaluate(
    predict: Predict,
    items: Sequence[tuple[str | Path, str]],
    classes: Sequence[str],
    *,
    shifts: bool = True,
    shortcut: bool = True,
    seg_mode: str = "robust",
    batch: int = 32,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict:
    """Evaluate ``predict`` on ``(path, label)`` items; labels are names in ``classes``,
    the order of ``predict``'s probability columns.

    Each file is read once; unreadable ones are listed under ``skipped``. Returns a
    JSON-ready dict: classes, n, skipped, seg_mode, ``clean`` (``metrics.summarize``),
    ``shifts`` (shift -> accuracy, macro-F1 and ECE with bootstrap intervals, and
    ``accuracy_drop`` from clean), ``worst_shift``, ``shortcut`` (the same figures on
    painted-out fields, with ``chance``: the share of the commonest class) and
    ``predictions`` (path, label, predicted, probabilities of each clean field).
    """
    classes = list(classes)
    if unknown := sorted({label for _, label in items} - set(classes)):
        raise ValueError(f"label(s) {unknown} are not model classes {classes}")
    conditions = _conditions(shifts, shortcut, seg_mode)
    probs: dict[str, list[np.ndarray]] = {name: [] for name in conditions}
    kept, skipped = [], []
    for start in progress_bar(range(0, len(items), batch), "Evaluating"):
        fields = []
        for path, label in items[start : start + batch]:
            try:
                fields.append(read_field(path))
            except FieldError as exc:
                skipped.append({"path": str(path), "problem": exc.problem})
                continue
            kept.append((str(path), label))
        if not fields:
            continue
        for name, transform in conditions.items():
            view = fields if transform is None else [transform(f) for f in fields]
            probs[name].append(_probabilities(predict, view, len(classes)))
    if not kept:
        raise ValueError(f"no usable field among {len(items)} file(s)")

    y = np.array([classes.index(label) for _, label in kept])
    p = {name: np.concatenate(chunks) for name, chunks in probs.items()}
    clean = summarize(y, p["clean"], classes, n_bootstrap, seed)

    def brief(name: str) -> dict:
        full = summarize(y, p[name], classes, n_bootstrap, seed)
        return {k: full[k] for k in BRIEF}

    shift_metrics = {}
    for name in SHIFTS if shifts else ():
        m = brief(name)
        shift_metrics[name] = {**m, "accuracy_drop": clean["accuracy"] - m["accuracy"]}
    result = {
        "classes": classes,
        "n": len(kept),
        "skipped": skipped,
        "seg_mode": seg_mode,
        "clean": clean,
        "shifts": shift_metrics,
        "worst_shift": worst_shift(shift_metrics),
    }
    if shortcut:
        chance = float(np.bincount(y, minlength=len(classes)).max() / len(y))
        result["shortcut"] = {**brief("shortcut"), "chance": chance}
    result["predictions"] = [
        {"path": path, "label": label, "predicted": classes[int(np.argmax(q))], "probabilities": q}
        for (path, label), q in zip(kept, p["clean"].tolist())
    ]
    return result


def headline(result: dict, split: str) -> dict:
    """The figures of an ``evaluate`` result that a bundle manifest keeps
    (``evaluation.<split>``): n, accuracy with its interval, macro-F1, ECE, each
    shift's accuracy with its interval, the worst shift and the shortcut audit."""
    clean = result["clean"]
    out = {"split": split, "n": result["n"]}
    out |= {k: clean[k] for k in ("accuracy", "accuracy_ci", "macro_f1", "ece")}
    out["shifts"] = {
        name: {k: m[k] for k in ("accuracy", "accuracy_ci")} for name, m in result["shifts"].items()
    }
    out["worst_shift"] = result["worst_shift"]
    if "shortcut" in result:
        out["shortcut"] = {k: result["shortcut"][k] for k in ("accuracy", "accuracy_ci", "chance")}
    return out


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "–" if not ci else f"{ci[0]:.3f}–{ci[1]:.3f}"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def lookup(reference: dict | None, *keys: str) -> float | None:
    """``reference[k1][k2]...`` when it is a number, else None."""
    value = reference
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def to_markdown(result: dict, title: str, reference: dict | None = None) -> str:
    """The report as Markdown tables. ``reference``, shaped like ``result`` (any subset,
    e.g. another ``report.json``, plus an optional ``name``), adds a column to compare."""
    ref_header = [reference.get("name", "reference")] if reference else []

    def row(cells: list[str], *ref_keys: str) -> list[str]:
        return cells + ([_f(lookup(reference, *ref_keys))] if reference else [])

    clean, classes = result["clean"], result["classes"]
    lines = [
        f"# {title}",
        "",
        f"{result['n']} fields, classes {', '.join(classes)}; {len(result['skipped'])} "
        "skipped. Intervals: 95% bootstrap over fields.",
        "",
        "## Clean fields",
        "",
        *_table(
            ["metric", "value", "95% CI", *ref_header],
            [
                row(
                    ["accuracy", _f(clean["accuracy"]), _ci(clean["accuracy_ci"])],
                    "clean",
                    "accuracy",
                ),
                row(
                    ["macro-F1", _f(clean["macro_f1"]), _ci(clean["macro_f1_ci"])],
                    "clean",
                    "macro_f1",
                ),
                row(["ECE (15 bins)", _f(clean["ece"]), "–"], "clean", "ece"),
            ],
        ),
        "",
        "## Per class",
        "",
        *_table(
            ["class", "support", "sensitivity", "specificity", "F1"],
            [
                [c, str(m["support"]), _f(m["sensitivity"]), _f(m["specificity"]), _f(m["f1"])]
                for c, m in clean["per_class"].items()
            ],
        ),
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        *_table(["", *classes], [[c, *map(str, r)] for c, r in zip(classes, clean["confusion"])]),
    ]
    if result["shifts"]:

        def shift_row(label: str, m: dict, *ref_keys: str) -> list[str]:
            drop = _f(m.get("accuracy_drop"))
            cells = [label, _f(m["accuracy"]), _ci(m["accuracy_ci"]), _f(m["macro_f1"]), drop]
            return row(cells, *ref_keys, "accuracy")

        worst = result["worst_shift"]
        ref_worst = worst_shift((reference or {}).get("shifts") or {}) or ""
        rows = [shift_row("clean", clean, "clean")]
        rows += [shift_row(k, m, "shifts", k) for k, m in result["shifts"].items()]
        rows.append(
            shift_row(f"**worst shift** ({worst})", result["shifts"][worst], "shifts", ref_worst)
        )
        lines += [
            "",
            "## Colour shifts (raw field, before segmentation and preprocessing)",
            "",
            *_table(
                ["condition", "accuracy", "95% CI", "macro-F1", "accuracy drop", *ref_header], rows
            ),
        ]
    if "shortcut" in result:
        s = result["shortcut"]
        lines += [
            "",
            "## Shortcut audit (cells painted with the background colour; lower is better)",
            "",
            *_table(
                ["accuracy", "95% CI", "macro-F1", "chance (commonest class)", *ref_header],
                [
                    row(
                        [
                            _f(s["accuracy"]),
                            _ci(s["accuracy_ci"]),
                            _f(s["macro_f1"]),
                            _f(s["chance"]),
                        ],
                        "shortcut",
                        "accuracy",
                    )
                ],
            ),
        ]
    if result["skipped"]:
        lines += ["", "## Skipped files", ""]
        lines += [f"- `{s['path']}`: {s['problem']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def _plot_confusion(fig, result: dict) -> None:
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


def _plot_reliability(fig, result: dict) -> None:
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


def _plot_shifts(fig, result: dict, reference: dict | None) -> None:
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


def write_report(
    result: dict, out_dir: str | Path, title: str, reference: dict | None = None
) -> Path:
    """Write ``report.json`` (``result`` plus title and reference), ``report.md`` and
    ``confusion.png``, ``reliability.png``, ``shifts.png`` to ``out_dir``; returns it."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"title": title, **result, **({"reference": reference} if reference else {})}
    (out_dir / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "report.md").write_text(to_markdown(result, title, reference))
    plots = {
        "confusion.png": _plot_confusion,
        "reliability.png": _plot_reliability,
        "shifts.png": partial(_plot_shifts, reference=reference),
    }
    for name, plot in plots.items():
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        plot(fig, result)
        fig.savefig(out_dir / name, dpi=120)
    return out_dir


def report_splits(predict, classes, split_csv, out_dir, title: str, splits=("val", "test")) -> dict:
    """Evaluate ``predict`` on each split of ``split_csv`` present and write
    ``out_dir/report-<split>/``; returns {split: result}."""
    results = {}
    for split in splits:
        rows = read_split(split_csv, split)
        if rows:
            results[split] = evaluate(predict, [(r.path, r.label) for r in rows], classes)
            write_report(results[split], Path(out_dir) / f"report-{split}", f"{title} ({split})")
    return results
