"""The reference notebook's seven-model comparison, rerun on one leak-safe split.

Every model is trained by the ``leukedge train`` command a user would type (one
subprocess each, so TensorFlow and PyTorch never share a process) and judged by
the same test-split report: clean accuracy, the shift suite and the shortcut
audit. A run folder that already holds trained weights is reused, so a study can
be resumed, or finished on a machine other than the one that trained it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..console import err_console
from ..errors import StepFailed, UsageError
from ..evaluation.evaluate import headline
from ..evaluation.render import lookup, paired_results, right
from ..evaluation.shifts import SHIFTS
from ..progress import progress_bar
from .crossval import CV_JSON
from .families import best_model, family_of

#: The figures of each model's ``cv.json`` that the cross-validated study table shows.
CV_FIGURES = ("accuracy", "worst_shift_accuracy", "shortcut_accuracy")


@dataclass(frozen=True)
class StudyModel:
    """One row of the study: a run folder name and its ``leukedge train`` options."""

    name: str
    label: str
    family: str  # a key of leukedge.training.families.FAMILIES
    options: tuple[str, ...]
    published: float | None  # the reference notebook's reported accuracy, %


#: The notebook's seven models with its published accuracies, then its own recipe
#: (mask-only input, reference segmentation, no jitter) for MobileNetV2.
STUDY_MODELS = (
    StudyModel("efficientnetb0", "EfficientNet-B0", "keras", ("--arch", "efficientnetb0"), 100.0),
    StudyModel("mobilenetv2", "MobileNetV2", "keras", ("--arch", "mobilenetv2"), 100.0),
    StudyModel("nasnetmobile", "NASNet-Mobile", "keras", ("--arch", "nasnetmobile"), 100.0),
    StudyModel(
        "mobilenetv2-dual", "dual MobileNetV2", "keras", ("--arch", "mobilenetv2", "--dual"), 99.1
    ),
    StudyModel("yolov8n", "YOLOv8n-cls", "yolo", ("--arch", "yolov8n-cls"), 99.1),
    StudyModel("yolo11n", "YOLO11n-cls", "yolo", ("--arch", "yolo11n-cls"), 96.4),
    StudyModel("yolo12n", "YOLO12n-cls", "yolo", ("--arch", "yolo12n-cls"), 35.1),
    StudyModel(
        "mobilenetv2-mask",
        "MobileNetV2 (reference recipe: mask only, no jitter)",
        "keras",
        ("--arch", "mobilenetv2", "--input", "mask", "--seg", "reference", "--no-jitter"),
        None,
    ),
)


def choose_models(names: str | None) -> tuple[StudyModel, ...]:
    """The study rows named in a comma-separated list (all when None)."""
    if not names:
        return STUDY_MODELS
    chosen = [n.strip() for n in names.split(",")]
    known = {m.name for m in STUDY_MODELS}
    if unknown := [n for n in chosen if n not in known]:
        raise UsageError(f"unknown model(s) {unknown}; choose from {sorted(known)}")
    return tuple(m for m in STUDY_MODELS if m.name in chosen)


def train_options(
    seed: int, threads: int | None, workers: int, quick: bool
) -> dict[str, list[str]]:
    """The further ``leukedge train <family>`` options of every study run: the study's
    recipe, or the CI-sized one when ``quick``."""
    common = ["--seed", str(seed), *(["--threads", str(threads)] if threads else [])]
    if quick:
        return {
            "yolo": [*common, "--copies", "0", "--batch", "8"],
            "keras": [*common, "--bn-momentum", "0.9", "--batch", "8"],
        }
    return {
        "yolo": [*common, "--copies", "3", "--batch", "64", "--workers", str(workers)],
        "keras": [*common, "--bn-momentum", "0.99"],
    }


def quick_data(out: Path, seed: int) -> tuple[Path, tuple[float, float, float]]:
    """Generated 64 px fields for a quick study, and split ratios giving 2 test fields a
    class."""
    from ..edge.synth import write_synth_dataset

    write_synth_dataset(out / "data", 10, seed=seed, size=(64, 64))
    return out / "data", (0.6, 0.2, 0.2)


def _leukedge(*args: str) -> list[str]:
    return [sys.executable, "-m", "leukedge", *args]


def train_command(
    model: StudyModel, split_csv: Path, run: Path, epochs: int, imgsz: int, extra: Sequence[str]
) -> list[str]:
    """The ``leukedge train`` command line that trains ``model`` into ``run``."""
    return _leukedge(
        "train", model.family, *model.options, "--split-csv", str(split_csv), "--out", str(run),
        "--epochs", str(epochs), "--imgsz", str(imgsz), *extra,
    )  # fmt: skip


def _call(command: list[str], log: Path) -> None:
    err_console.print(f"[bold]$[/bold] {' '.join(command[2:])}  (log: {log})")
    with open(log, "a") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise StepFailed(f"exit {code}: {' '.join(command[2:])}; see {log}")


def run_study(
    split_csv: str | Path,
    out: str | Path,
    *,
    models: Sequence[StudyModel] = STUDY_MODELS,
    epochs: dict[str, int],
    imgsz: int = 224,
    extra: dict[str, Sequence[str]] | None = None,
) -> dict:
    """Train what is missing, evaluate every model on the test split of ``split_csv``,
    and write ``out/study.json``, ``out/study.md`` and ``out/study.png``.

    epochs : per family, e.g. ``{"yolo": 40, "keras": 30}``.
    extra : further ``leukedge train <family>`` options per family.
    Returns the study record (one row per model).
    """
    split_csv, out = Path(split_csv).resolve(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, reports = [], {}
    for model in progress_bar(models, "Study"):
        run = out / model.name
        command = train_command(
            model, split_csv, run, epochs[model.family], imgsz, (extra or {}).get(model.family, ())
        )
        if best_model(run) is None:
            run.mkdir(parents=True, exist_ok=True)
            _call(command, run / "study.log")
        weights = best_model(run)
        if weights is None:
            raise StepFailed(f"{run}: training left no weights; see {run / 'study.log'}")
        report = run / "report-test" / "report.json"
        if not report.is_file():
            _call(
                _leukedge("eval", "--model", str(weights), "--split-csv", str(split_csv),
                          "--split", "test", "--out", str(report.parent)),
                run / "study.log",
            )  # fmt: skip
        reports[model.name] = json.loads(report.read_text())
        rows.append(_row(model, command, weights, reports[model.name]))
    study = {"split_csv": str(split_csv), "imgsz": imgsz, "epochs": epochs, "models": rows}
    study["paired"] = paired_with_best(rows, reports)
    (out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    (out / "study.md").write_text(to_markdown(study))
    plot_study(study, out / "study.png")
    return study


def run_study_cv(
    split_csv: str | Path,
    out: str | Path,
    k: int,
    *,
    models: Sequence[StudyModel] = STUDY_MODELS,
    epochs: dict[str, int],
    imgsz: int = 224,
    extra: dict[str, Sequence[str]] | None = None,
) -> dict:
    """Cross-validate every model's recipe (``leukedge train <family> --folds k``, one
    subprocess each, into ``out/cv<k>/<model>/``; finished ones reused) and write
    ``out/cv<k>/study-cv.json`` and ``study-cv.md``: the mean and spread across folds of
    each model's held-out accuracy, worst shift and shortcut audit. The test split is not
    used. Returns the ``study-cv.json`` record."""
    split_csv, out = Path(split_csv).resolve(), Path(out) / f"cv{k}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in progress_bar(models, f"Study, {k}-fold"):
        run = out / model.name
        options = (*(extra or {}).get(model.family, ()), "--folds", str(k))
        command = train_command(model, split_csv, run, epochs[model.family], imgsz, options)
        if not (run / CV_JSON).is_file():
            run.mkdir(parents=True, exist_ok=True)
            _call(command, run / "study.log")
        cv = json.loads((run / CV_JSON).read_text())
        rows.append({"name": model.name, "label": model.label, "command": " ".join(
            ["leukedge", *command[3:]]), **{key: cv.get(key) for key in CV_FIGURES}})  # fmt: skip
    study = {"split_csv": str(split_csv), "k": k, "imgsz": imgsz, "epochs": epochs, "models": rows}
    (out / "study-cv.json").write_text(json.dumps(study, indent=2) + "\n")
    (out / "study-cv.md").write_text(cv_markdown(study))
    return study


def cv_markdown(study: dict) -> str:
    """The cross-validated study table: mean ± sd (min–max) across folds, in %."""

    def spread(x: dict | None) -> str:
        if not x:
            return "–"
        return (f"{100 * x['mean']:.1f} ± {100 * x['sd']:.1f} "
                f"({100 * x['min']:.1f}–{100 * x['max']:.1f})")  # fmt: skip

    lines = [
        f"| {r['label']} | {spread(r['accuracy'])} | {spread(r['worst_shift_accuracy'])} | "
        f"{spread(r['shortcut_accuracy'])} |"
        for r in study["models"]
    ]
    return "\n".join([
        f"# Model study, {study['k']}-fold cross-validation",
        "",
        f"Train and validation fields of `{study['split_csv']}`, {study['imgsz']} px, epochs "
        + ", ".join(f"{k} {v}" for k, v in study["epochs"].items()) + "; each fold held out "
        "once. Mean ± standard deviation (min–max) across folds; the test split is not used.",
        "",
        "| model | held-out accuracy % | worst shift % | shortcut % (lower is better) |",
        "|---|---|---|---|",
        *lines,
        "",
        *_paired_section(study.get("paired") or []),
        "Commands:",
        "",
        *(f"- {r['label']}: `{r['command']}`" for r in study["models"]),
        "",
    ])  # fmt: skip


def paired_with_best(rows: list[dict], reports: dict[str, dict]) -> list[dict]:
    """Each model against the one with the most clean test fields right, field by field
    (exact McNemar on the clean test fields; ``render.paired_results``)."""
    if len(rows) < 2:
        return []
    best = max(rows, key=lambda r: r["correct"])
    out = []
    for r in rows:
        if r is not best:
            names = (best["label"], r["label"])
            clean = paired_results(reports[best["name"]], reports[r["name"]], names).get("clean")
            if clean is not None:
                out.append(clean)
    return out


def _row(model: StudyModel, command: list[str], weights: Path, report: dict) -> dict:
    return {
        "name": model.name,
        "label": model.label,
        "published_accuracy": model.published,
        "command": " ".join(["leukedge", *command[3:]]),
        "weights": str(weights),
        "params": family_of(weights).params(weights),
        "epochs_done": family_of(weights).epochs_done(weights),
        **headline(report, "test"),
    }


def _accuracy(row: dict, *keys: str) -> float | None:
    """``row[k1][k2]...["accuracy"]``, None where the row has no such figure."""
    return lookup(row, *keys, "accuracy")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def to_markdown(study: dict) -> str:
    """The study table: test accuracy, parameters, each shift, the shortcut audit, and
    the notebook's published accuracy."""
    header = ["model", "params (M)", "epochs", "clean: fields right (95% CI)", *SHIFTS]
    header += ["worst", "shortcut %", "notebook %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in study["models"]:
        worst = r["worst_shift"]
        cells = [
            r["label"],
            f"{r['params'] / 1e6:.2f}",
            str(r["epochs_done"]),
            right(r),
            *(_pct(_accuracy(r, "shifts", s)) for s in SHIFTS),
            f"{worst} {_pct(_accuracy(r, 'shifts', worst))}" if worst else "–",
            _pct(_accuracy(r, "shortcut")),
            "–" if r["published_accuracy"] is None else f"{r['published_accuracy']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    n = study["models"][0]["n"] if study["models"] else 0
    chance = lookup(study["models"][0], "shortcut", "chance") if study["models"] else None
    return "\n".join([
        "# Model study",
        "",
        f"Test split of `{study['split_csv']}` ({n} fields), {study['imgsz']} px, epochs "
        + ", ".join(f"{k} {v}" for k, v in study["epochs"].items()) + ".",
        "Shifts are applied to the raw field (`leukedge.evaluation.shifts`); the shortcut audit "
        f"paints the detected cells out (lower is better; chance {_pct(chance)}%). "
        "\"notebook %\" is the reference notebook's published accuracy on its own split.",
        "",
        *lines,
        "",
        "Commands:",
        "",
        *(f"- {r['label']}: `{r['command']}`" for r in study["models"]),
        "",
    ])  # fmt: skip


def _paired_section(paired: list[dict]) -> list[str]:
    if not paired:
        return []
    rows = []
    for m in paired:
        a, b = m["models"]
        rows.append(
            f"| {b} | {m['only_a_right']} | {m['only_b_right']} | {m['p_value']:.3g} | "
            f"{m['verdict']} |"
        )
    return [
        f"Paired with the model with the most clean fields right ({paired[0]['models'][0]}), "
        "field by field on the clean test fields (exact McNemar; p >= 0.05: no measurable "
        "difference):",
        "",
        "| model | only the best right | only this one right | p | verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def plot_study(study: dict, path: Path) -> None:
    """Grouped bars per model: clean, worst shift, shortcut audit, published."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = study["models"]
    x = np.arange(len(rows))
    bars = {
        "clean": [r["accuracy"] for r in rows],
        "worst shift": [_accuracy(r, "shifts", r["worst_shift"] or "") or 0 for r in rows],
        "shortcut audit (lower is better)": [_accuracy(r, "shortcut") or 0 for r in rows],
        "notebook (published)": [(r["published_accuracy"] or 0) / 100 for r in rows],
    }
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.2
    for i, (name, values) in enumerate(bars.items()):
        ax.bar(x + (i - 1.5) * width, values, width, label=name)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Seven-model study: clean, worst colour shift, shortcut audit")
    fig.savefig(path, dpi=120)
