"""The benchmark report as Markdown, and its compact headline table for the README."""

from __future__ import annotations

from ..evaluation.stats import fraction
from . import segmentation

MB = 1e6
E2E_COLUMNS = ("decode", "gate", "segment", "preprocess", "infer", "trust", "other", "total")


def _f(x, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def segmentation_line(seg: dict) -> str:
    """Speed-up of the fast path over the kmeans reference and their pixel agreement."""
    s224 = seg["speed_224"]
    if seg.get("shared"):
        agree = min(c["agreement_mean"] for c in seg["shared"].values())
        where = "lowest class mean on the data folder"
    else:
        agree = seg["frame_2028x1520"]["agreement_fast_vs_reference"]
        where = "generated frames"
    return (
        f"Segmentation: the fast path is {s224['speedup_median']:.1f}x faster than the kmeans "
        f"reference per 224 px field ({s224['reference']['median_ms']:.2f} vs "
        f"{s224['fast']['median_ms']:.2f} ms median, one thread) and agrees with it on "
        f"{100 * agree:.2f}% of pixels ({where})."
    )


def _spread(stats: dict) -> str:
    """A latency median with the range of its repeated runs' medians, when there are several."""
    runs = stats.get("runs_median_ms") or []
    if len(runs) < 2:
        return _f(stats["median_ms"])
    return f"{stats['median_ms']:.2f} ({min(runs):.2f}-{max(runs):.2f})"


def machine_line(report: dict) -> str:
    """Date, CPU, load and the busy warnings: what every table of the report was measured on."""
    m = report["machine"]
    loads = "/".join(
        f"{la[0]:.1f}" for la in (m.get("load_average"), m.get("load_average_end")) if la
    )
    busy = [n for n in report.get("notes", []) if n.startswith(("BUSY", "noisy"))]
    return (
        f"{report.get('created', '')[:10]}, {m.get('cpu_model')}, {m.get('cores_usable')} cores, "
        f"load {loads or '?'} (start/end); medians of {report['latency'].get('repeats', 1)} "
        "fresh-process runs (range); *: the file this machine picks."
        + ("".join(f"\nWARNING: {n}" for n in busy))
    )


def _fields_right(acc: dict) -> str:
    """A model's test fields right with the exact interval: "138/138 (97.4-100.0%)"."""
    return fraction({"k": acc["correct"], "n": acc["n"], "ci": acc["accuracy_ci"]})


def headline(report: dict) -> str:
    """Model, format, precision, backend, one-thread medians, size, accuracy; and the
    segmentation speed-up: the table the README shows."""
    accuracy = {m["name"]: m for m in report["accuracy"].get("models", [])}
    rows = []
    lowest = min((r["threads"] for r in report["latency"]["rows"]), default=1)
    for r in report["latency"]["rows"]:
        if r["threads"] != lowest:
            continue
        acc = accuracy.get(r["name"])
        rows.append(
            [
                r["model"],
                _file(r),
                r["format"],
                r["precision"],
                r["backend"],
                _spread(r["infer"]),
                _spread(r["predict"]),
                _f(r["size_bytes"] / MB, ".1f"),
                _fields_right(acc) if acc else "untrained" if not r["trained"] else "–",
            ]
        )
    header = [
        "model",
        "file (SHA-256), * run here",
        "format",
        "precision",
        "backend",
        f"inference ms, {lowest} thread{'s' if lowest > 1 else ''}",
        "field to result ms",
        "size MB",
        "test: fields right (95% CI)",
    ]
    table = [machine_line(report), "", *_table(header, rows)]
    return "\n".join([*table, "", segmentation_line(report["segmentation"])]) + "\n"


def machine_section(m: dict) -> list[str]:
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none of interest"
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    env = ", ".join(f"{k}={v}" for k, v in m["thread_env"].items()) or "none set"
    load = " / ".join(
        ", ".join(f"{x:.2f}" for x in m.get(k) or []) or "–"
        for k in ("load_average", "load_average_end")
    )
    return [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']} ({m['arch']}), {m['cores_logical']} logical cores, "
        f"{m['cores_usable']} usable; flags: {flags}",
        f"- memory: {_f(m['memory_gb'], '.1f')} GB; load average (1, 5, 15 min) at start / "
        f"end: {load}",
        f"- {m['os']}, Python {m['python']}",
        f"- libraries: {libs}",
        f"- thread environment variables: {env}",
    ]


def _runs(stats: dict) -> str:
    """The range of repeated runs' medians as ' (runs a-b)', when there are several."""
    runs = stats.get("runs_median_ms") or []
    return f" (runs {min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""


def _file(row: dict) -> str:
    """A bundle row's model file with its SHA-256 prefix, ``*`` when this machine picks it."""
    if "route" not in row:
        return "–"
    return f"{row['route']} ({row['sha256']}){' *' if row['picked'] else ''}"


def latency_section(lat: dict) -> list[str]:
    rows = [
        [
            r["model"],
            _file(r),
            r["format"],
            r["precision"],
            r["backend"],
            str(r["threads"]),
            " / ".join(f"{r['infer'][k]:.2f}" for k in ("median_ms", "p95_ms", "p99_ms"))
            + _runs(r["infer"]),
            f"{r['infer']['throughput_per_s']:.0f}",
            f"{r['predict']['median_ms']:.2f}",
            f"{r['cold_start_ms']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['size_bytes'] / MB:.2f}",
            r["source"],
        ]
        for r in lat["rows"]
    ]
    header = [
        "model",
        "file (SHA-256), * run here",
        "format",
        "precision",
        "backend",
        "threads",
        "inference ms median / p95 / p99",
        "inferences/s",
        "field to result ms (median)",
        "cold start ms",
        "peak RSS MB",
        "size MB",
        "source",
    ]
    budget = lat["budget"]
    lines = [
        "## Classification latency (batch 1)",
        "",
        "Each row is a fresh process. *Inference*: the network alone on a prepared input "
        "(bundle backend, raw torch forward, direct Keras call). *Field to result*: a 224 px "
        "field in, probabilities out through the usual API (`Model.predict` with the bundle's "
        "preprocessing, Ultralytics `predict`, Keras `model.predict` after `prepare`). *Cold "
        "start*: process spawn to the first result for a field file. Timed calls: "
        f"{budget['n_min']}-{budget['n_max']} after {budget['warmup']} warm-up calls.",
        "",
        *_table(header, rows),
    ]
    if lat["ratios"]:
        lines += [
            "",
            "### Ratios (same run, same thread count; above 1: the candidate is faster or smaller)",
            "",
        ]
        lines += _table(
            [
                "threads",
                "measure",
                "candidate",
                "baseline",
                "candidate ms/MB",
                "baseline ms/MB",
                "ratio",
            ],
            [
                [
                    str(q["threads"]),
                    q["measure"],
                    q["candidate"],
                    q["baseline"],
                    _f(q["candidate_value"] / (MB if q["measure"] == "size_bytes" else 1)),
                    _f(q["baseline_value"] / (MB if q["measure"] == "size_bytes" else 1)),
                    f"{q['ratio']:.2f}x",
                ]
                for q in lat["ratios"]
            ],
        )
    if lat["failures"]:
        lines += ["", "Failed configurations:", ""]
        lines += [f"- {f['config']}: {f['error']}" for f in lat["failures"]]
    return lines


def end_to_end_section(e2e: dict) -> list[str]:
    if not e2e["rows"]:
        return ["## End to end", "", "No bundle to run."]
    rows = [
        [r["model"], r["format"], r["precision"], r["backend"], r["input"], str(r["n"])]
        + [f"{r[f'{k}_median_ms']:.2f}" for k in E2E_COLUMNS]
        for r in e2e["rows"]
    ]
    header = ["model", "format", "precision", "backend", "input", "n", *E2E_COLUMNS]
    return [
        "## End to end (median ms per field, one thread)",
        "",
        "The station's `FieldPipeline` (robust segmentation) on encoded fields and frames. "
        "*gate*: scale, quality, tiles and perceptual hash; *trust*: calibration and feature "
        "distance; *other*: the rest of the call (colour check, bookkeeping); "
        "*total*: the whole call, decode included.",
        "",
        *_table(header, rows),
    ]


def folder_section(folder: dict) -> list[str]:
    if not folder["rows"]:
        return ["## Folder throughput", "", "No bundle to run."]

    def spread(stats: dict, fmt: str) -> str:
        return f"{stats['median']:{fmt}} ({stats['min']:{fmt}}-{stats['max']:{fmt}})"

    rows = [
        [
            r["model"],
            f"{r['route']} ({r['sha256']})",
            r["backend"],
            str(r["threads"]),
            str(r["batch"]),
            str(r.get("workers", 0)),
            str(r["fields"]),
            spread(r["fields_per_s"], ".1f"),
            spread(r["cpu_ms_per_field"], ".2f"),
            "/".join(f"{la:.1f}" for la in r["load"]) or "?",
        ]
        for r in folder["rows"]
    ]
    header = ["model", "file (SHA-256)", "backend", "threads", "batch", "workers", "fields"]
    header += ["fields/s", "CPU ms per field", "load (1 min)"]
    return [
        "## Folder throughput (224 px JPEG fields, file to logged result)",
        "",
        "`leukedge run --source folder:DIR --once` on a folder of fields, each round a new "
        "slide of a warmed station: one thread; two (decode, gate and segmentation read ahead "
        "on one while the model, one inference thread, classifies *batch* fields per call and "
        "per commit); or two *workers* (processes that gate, segment and classify each group; "
        "the station reads, decodes and logs), started before timing as in a station that "
        "runs on. Median (range) over the rounds; CPU of every thread and worker.",
        "",
        *_table(header, rows),
    ]


def accuracy_section(acc: dict) -> list[str]:
    lines = ["## Accuracy and robustness", ""]
    if acc.get("skipped"):
        return lines + [acc["skipped"]]
    models = acc["models"]
    ref = acc.get("reference")
    rows = [
        [
            m["name"],
            m["precision"],
            f"{m['size_bytes'] / MB:.2f}",
            str(m["n"]),
            _fields_right(m),
            _f(m["macro_f1"], ".3f"),
            _f(m["ece"], ".3f"),
            f"{m['worst_shift']} ({m['shifts'][m['worst_shift']]['accuracy']:.3f})"
            if m["worst_shift"]
            else "–",
            f"{m['shortcut_accuracy']:.3f} ({m['chance']:.3f})",
        ]
        for m in models
    ]
    if ref:
        rows.append(
            [
                f"{ref['name']} (reference)",
                "–",
                "–",
                "–",
                _f(ref["accuracy"], ".3f"),
                _f(ref["macro_f1"], ".3f"),
                _f(ref["ece"], ".3f"),
                "–",
                _f(ref["shortcut_accuracy"], ".3f"),
            ]
        )
    lines += [
        f"{acc['n_test']} test fields ({acc['source']}); 95% bootstrap intervals. Full reports "
        "(per class, confusion matrix, reliability and shift plots) in each model's folder.",
        "",
        *_table(
            [
                "model",
                "precision",
                "size MB",
                "n",
                "fields right (95% CI, exact)",
                "macro-F1",
                "ECE",
                "worst shift (accuracy)",
                "shortcut accuracy (chance)",
            ],
            rows,
        ),
    ]
    shifts = list(models[0]["shifts"]) if models else []
    if shifts:
        shift_rows = [
            [m["name"], *(f"{m['shifts'][s]['accuracy']:.3f}" for s in shifts)] for m in models
        ]
        if ref:
            shift_rows.append(
                [
                    f"{ref['name']} (reference)",
                    *(_f((ref["shifts"].get(s) or {}).get("accuracy"), ".3f") for s in shifts),
                ]
            )
        lines += [
            "",
            "Accuracy under each colour shift:",
            "",
            *_table(["model", *shifts], shift_rows),
        ]
    return lines


def markdown(report: dict) -> str:
    """The whole report."""
    seg_md = segmentation.markdown(report["segmentation"]).splitlines()
    seg_md = ["#" + line if line.startswith("#") else line for line in seg_md]
    kind = "quick (smoke test; figures not representative)" if report["quick"] else "full"
    device = ", on-device (edge packages only)" if report["on_device"] else ""
    lines = [
        "# leukedge benchmarks",
        "",
        f"{report['created']}: {kind} run{device}, {report['seconds']:.0f} s. Thread counts: "
        f"{', '.join(map(str, report['settings']['threads']))}.",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
        "## Headline",
        "",
        headline(report),
        *machine_section(report["machine"]),
        "",
        *seg_md,
        "",
        *latency_section(report["latency"]),
        "",
        *end_to_end_section(report["end_to_end"]),
        "",
        *folder_section(report["folder"]),
        "",
        *accuracy_section(report["accuracy"]),
    ]
    return "\n".join(lines) + "\n"
