"""Evaluation reports on disk: ``report.json``, ``report.md`` and the plots.

``write_report`` writes an ``evaluate`` result; ``to_markdown`` is its Markdown;
``report_splits`` evaluates a predictor on the val and test splits of a ``split.csv`` and
writes a report for each (the end of every training run). The plots need matplotlib
(``leukedge.evaluation.plots``), which the ``eval`` and ``train`` extras install.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ..data.split import read_split
from ..errors import MissingExtraError
from .evaluate import Predictor, evaluate, worst_shift
from .stats import fraction, paired, pct_interval


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


def right(m: dict) -> str:
    """Fields right with the exact interval of the accuracy: "137/138 (96.0-100.0%)"."""
    if "correct" not in m:  # a report written before exact intervals
        return f"{100 * m['accuracy']:.1f}%"
    return fraction({"k": m["correct"], "n": m["n"], "ci": m["accuracy_ci"]})


def class_figure(m: dict, name: str) -> str:
    """A per-class proportion ("40/40 (91.2-100.0%)"), "–" where it is undefined."""
    if m.get(name) is None or f"{name}_k" not in m:
        return _f(m.get(name))
    return fraction({"k": m[f"{name}_k"], "n": m[f"{name}_n"], "ci": m[f"{name}_ci"]})


def allows(m: dict) -> str:
    """What an exact accuracy interval allows, in words."""
    lo, hi = m["accuracy_ci"]
    return (
        f"With {m['correct']} of {m['n']} fields right, the data are consistent (95%) with an "
        f"accuracy from {100 * lo:.1f}% to {100 * hi:.1f}% on fields like these: up to "
        f"{100 * (1 - lo):.1f}% of them could be misclassified."
    )


def paired_results(a: dict, b: dict, names: tuple[str, str]) -> dict[str, dict]:
    """Two ``evaluate`` results on the same fields, condition by condition (clean, each
    shift, the shortcut audit): ``stats.paired`` of their per-field right/wrong, on the
    fields both results hold (matched by path)."""
    theirs = {q["path"]: q for q in b.get("predictions", [])}
    shared = [(q, theirs[q["path"]]) for q in a.get("predictions", []) if q["path"] in theirs]
    if not shared:
        return {}
    conditions = ["clean", *(c for c in shared[0][0].get("under", {}) if c in
                             shared[0][1].get("under", {}))]  # fmt: skip

    def said(q: dict, condition: str) -> str:
        return q["predicted"] if condition == "clean" else q["under"][condition]

    return {
        c: paired(
            [said(x, c) == x["label"] for x, _ in shared],
            [said(y, c) == y["label"] for _, y in shared],
            names,
        )  # fmt: skip
        for c in conditions
    }


def paired_markdown(comparison: dict[str, dict]) -> list[str]:
    """The Markdown table of ``paired_results``."""
    a, b = next(iter(comparison.values()))["models"]
    rows = [
        [c, str(m["n"]), str(m["both_right"]), str(m["only_a_right"]), str(m["only_b_right"]),
         str(m["both_wrong"]), f"{m['p_value']:.3g}", m["verdict"]]
        for c, m in comparison.items()
    ]  # fmt: skip
    header = ["condition", "fields", "both right", f"only {a}", f"only {b}", "both wrong"]
    return [
        *_table([*header, "McNemar p (exact)", "verdict"], rows),
        "",
        "Only the fields where the two disagree count; p >= 0.05: no measurable difference.",
    ]


def _clean_section(clean: dict, ref) -> list[str]:
    accuracy = f"{clean['correct']}/{clean['n']} = {100 * clean['accuracy']:.1f}%"
    rows = [
        ref(["accuracy", accuracy, f"{pct_interval(clean['accuracy_ci'])} (exact)"], "clean",
            "accuracy"),
        ref(["macro-F1", _f(clean["macro_f1"]), f"{_ci(clean['macro_f1_ci'])} (bootstrap)"],
            "clean", "macro_f1"),
        ref(["ECE (15 bins)", _f(clean["ece"]), f"{_ci(clean.get('ece_ci'))} (bootstrap)"],
            "clean", "ece"),
    ]  # fmt: skip
    return [
        "## Clean fields",
        "",
        *_table(["metric", "value", "95% CI", *ref.header], rows),
        "",
        allows(clean),
    ]


def _class_section(clean: dict, classes: Sequence[str]) -> list[str]:
    rows = [
        [c, str(m["support"]), class_figure(m, "sensitivity"), class_figure(m, "specificity"),
         _f(m["f1"])]
        for c, m in clean["per_class"].items()
    ]  # fmt: skip
    confusion = [[c, *map(str, r)] for c, r in zip(classes, clean["confusion"])]
    return [
        "## Per class",
        "",
        *_table(["class", "support", "sensitivity (95% CI)", "specificity (95% CI)", "F1"], rows),
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        *_table(["", *classes], confusion),
    ]


def _shift_section(result: dict, ref) -> list[str]:
    def shift_row(label: str, m: dict, *ref_keys: str) -> list[str]:
        cells = [label, right(m), _f(m["macro_f1"]), _f(m.get("accuracy_drop"))]
        return ref(cells, *ref_keys, "accuracy")

    worst = result["worst_shift"]
    ref_worst = worst_shift((ref.reference or {}).get("shifts") or {}) or ""
    rows = [shift_row("clean", result["clean"], "clean")]
    rows += [shift_row(k, m, "shifts", k) for k, m in result["shifts"].items()]
    rows.append(
        shift_row(f"**worst shift** ({worst})", result["shifts"][worst], "shifts", ref_worst)
    )
    header = ["condition", "fields right (95% CI)", "macro-F1", "accuracy drop"]
    return [
        "## Colour shifts (raw field, before segmentation and preprocessing)",
        "",
        *_table([*header, *ref.header], rows),
    ]


def _shortcut_section(s: dict, ref) -> list[str]:
    header = ["fields right (95% CI)", "macro-F1", "chance (commonest class)"]
    row = ref([right(s), _f(s["macro_f1"]), _f(s["chance"])], "shortcut", "accuracy")
    return [
        "## Shortcut audit (cells painted with the background colour; lower is better)",
        "",
        *_table([*header, *ref.header], [row]),
    ]


class _Reference:
    """The optional reference column: ``ref(cells, *keys)`` appends the reference's figure
    at ``keys`` (``lookup``) when there is a reference."""

    def __init__(self, reference: dict | None):
        self.reference = reference
        self.name = reference.get("name", "reference") if reference else None
        self.header = [self.name] if reference else []

    def __call__(self, cells: list[str], *keys: str) -> list[str]:
        return cells + ([_f(lookup(self.reference, *keys))] if self.reference else [])


def to_markdown(result: dict, title: str, reference: dict | None = None) -> str:
    """The report as Markdown tables. ``reference``, shaped like ``result`` (any subset,
    e.g. another ``report.json``, plus an optional ``name``), adds a column to compare, and
    a paired comparison (McNemar) when it holds per-field predictions of the same fields."""
    ref = _Reference(reference)
    lines = [
        f"# {title}",
        "",
        f"{result['n']} fields, classes {', '.join(result['classes'])}; "
        f"{len(result['skipped'])} skipped. Intervals: 95%, exact (Clopper-Pearson) for "
        "proportions of fields (accuracy, sensitivity, specificity), percentile bootstrap over "
        "fields for macro-F1 and ECE.",
        "",
        *_clean_section(result["clean"], ref),
        "",
        *_class_section(result["clean"], result["classes"]),
    ]
    if result["shifts"]:
        lines += ["", *_shift_section(result, ref)]
    if "shortcut" in result:
        lines += ["", *_shortcut_section(result["shortcut"], ref)]
    if reference and (comparison := paired_results(result, reference, ("this", ref.name))):
        lines += ["", f"## Paired comparison with {ref.name}", "", *paired_markdown(comparison)]
    if result["skipped"]:
        lines += ["", "## Skipped files", ""]
        lines += [f"- `{s['path']}`: {s['problem']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def check_plots() -> None:
    """Raise ``MissingExtraError`` unless matplotlib (the ``eval`` extra) is installed: call
    it before a long evaluation whose report is wanted."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtraError(
            "the report's plots need matplotlib: pip install 'leukedge[eval]' (or [train])"
        )


def write_report(
    result: dict, out_dir: str | Path, title: str, reference: dict | None = None
) -> Path:
    """Write ``report.json`` (``result`` plus title and reference), ``report.md`` and
    ``confusion.png``, ``reliability.png``, ``shifts.png`` to ``out_dir``; returns it."""
    check_plots()
    from matplotlib.figure import Figure

    from .plots import plot_confusion, plot_reliability, plot_shifts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"title": title, **result, **({"reference": reference} if reference else {})}
    (out_dir / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "report.md").write_text(to_markdown(result, title, reference))
    plots = {
        "confusion.png": plot_confusion,
        "reliability.png": plot_reliability,
        "shifts.png": partial(plot_shifts, reference=reference),
    }
    for name, plot in plots.items():
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        plot(fig, result)
        fig.savefig(out_dir / name, dpi=120)
    return out_dir


def report_splits(
    predictor: Predictor, split_csv: str | Path, out_dir: str | Path, splits=("val", "test")
) -> dict[str, dict]:
    """Evaluate ``predictor`` on each of ``splits`` that ``split_csv`` has and write
    ``out_dir/report-<split>/``; returns {split: result}."""
    results = {}
    for split in splits:
        rows = read_split(split_csv, split)
        if rows:
            results[split] = evaluate(predictor, [(r.path, r.label) for r in rows])
            title = f"{predictor.name} ({split})"
            write_report(results[split], Path(out_dir) / f"report-{split}", title)
    return results
