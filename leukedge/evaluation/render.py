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
