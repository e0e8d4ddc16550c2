"""``leukedge bench --quick``: report.json follows the schema and its figures are consistent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukedge.benchmarks import end_to_end
from leukedge.cli import app

SCHEMA = Path(__file__).resolve().parents[1] / "leukedge" / "benchmarks" / "schema.json"

TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def validate(value, schema: dict, root: dict, path: str = "$") -> list[str]:
    """Errors of ``value`` against the JSON Schema keywords ``schema.json`` uses."""
    errors = []
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        errors += validate(value, target, root, path)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(TYPES[t](value) for t in types):
            return errors + [f"{path}: {value!r:.60} is not {'/'.join(types)}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    for sub in schema.get("allOf", []):
        errors += validate(value, sub, root, path)
    if "anyOf" in schema and all(validate(value, s, root, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches no anyOf alternative")
    if isinstance(value, dict):
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                errors += validate(v, sub, root, f"{path}.{k}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items")
        for i, v in enumerate(value):
            errors += validate(v, schema.get("items", {}), root, f"{path}[{i}]")
    if TYPES["number"](value):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            errors.append(f"{path}: {value} out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    return errors


def test_validator_reports_errors():
    root = json.loads(SCHEMA.read_text())
    stats = root["$defs"]["stats"]
    good = {"n": 3, "median_ms": 1.0, "p95_ms": 2, "p99_ms": 2, "mean_ms": 1, "throughput_per_s": 9}
    assert validate(good, stats, root) == []
    assert validate({**good, "n": True}, stats, root) == ["$.n: True is not integer"]
    assert validate({**good, "median_ms": 0.0}, stats, root) == ["$.median_ms: 0.0 <= 0"]
    assert validate({"n": 1}, stats, root)[0] == "$: missing 'median_ms'"
    assert validate({"skipped": 3}, root["properties"]["accuracy"], root) == [
        "$: matches no anyOf alternative"
    ]


def test_bench_threads_are_checked_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["bench", "--threads", "0,x", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "error: --threads '0,x'" in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``leukedge bench --quick`` with a tiny trained-looking bundle and a generated test split."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    from conftest import write_tiny_bundle

    from leukedge.data.layouts import find_dataset
    from leukedge.data.split import make_split
    from leukedge.edge.synth import write_synth_dataset

    tmp = tmp_path_factory.mktemp("bench")
    bundle = write_tiny_bundle(tmp / "tiny")
    write_synth_dataset(tmp / "data", 4)
    make_split(find_dataset(tmp / "data"), tmp / "split", ratios=(0.5, 0.0, 0.5))
    out = tmp / "out"
    args = ["bench", "--quick", "--out", str(out), "--data", str(tmp / "no-data")]
    args += ["--split-csv", str(tmp / "split" / "split.csv"), "--model", str(bundle)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = (out / "report.json").read_text()

    def no_nan(constant):
        raise ValueError(f"report.json holds {constant}")

    return {"report": json.loads(text, parse_constant=no_nan), "out": out, "output": res.output}


@pytest.mark.slow
def test_quick_report_matches_schema(quick):
    schema = json.loads(SCHEMA.read_text())
    assert validate(quick["report"], schema, schema) == []
    out = quick["out"]
    for name in ("report.md", "latency.png", "accuracy_size.png", "segmentation/report.json"):
        assert (out / name).is_file(), name
    for name in ("confusion.png", "shifts.png", "report.md"):
        assert (out / "accuracy" / "tiny-test" / name).is_file(), name
    md = (out / "report.md").read_text()
    headings = ("## Headline", "## Machine", "## Classification latency", "## End to end")
    for heading in (*headings, "## Folder throughput"):
        assert heading in md
    header = "| model | file (SHA-256), * run here | format | precision | backend |"
    assert header in quick["output"]
    assert "Segmentation: the fast path is" in quick["output"]


@pytest.mark.slow
def test_quick_figures_are_consistent(quick):
    from leukedge.benchmarks.latency import label

    r = quick["report"]
    s224 = r["segmentation"]["speed_224"]
    speedup = s224["reference"]["median_ms"] / s224["fast"]["median_ms"]
    assert s224["speedup_median"] == pytest.approx(speedup)
    assert r["settings"]["threads"] == [1]

    rows = r["latency"]["rows"]
    assert rows and not r["latency"]["failures"]
    for row in rows:
        for stats in (row["infer"], row["predict"]):
            assert stats["median_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
            assert stats["throughput_per_s"] == pytest.approx(1e3 / stats["mean_ms"])
        assert row["cold_start_ms"] > row["infer"]["median_ms"]
    by_label = {label(w): w for w in rows}
    assert len(by_label) == len(rows)
    for q in r["latency"]["ratios"]:
        assert q["ratio"] == pytest.approx(q["baseline_value"] / q["candidate_value"])
        for side in ("candidate", "baseline"):
            row = by_label[q[side]]
            expected = row["size_bytes"] if q["measure"] == "size_bytes" else row[q["measure"]]
            if q["measure"] != "size_bytes":
                expected = expected["median_ms"]
            assert q[f"{side}_value"] == expected
    kinds = {(q["kind"], q["measure"], q["arch"]): q for q in r["latency"]["ratios"]}
    if importlib.util.find_spec("ultralytics"):
        assert kinds["int8_vs_fp32", "size_bytes", "yolo11n-cls"]["ratio"] > 2
        assert ("vs_pytorch", "predict", "yolo11n-cls") in kinds
    if importlib.util.find_spec("tensorflow"):
        assert ("vs_keras", "infer", "tiny-cnn") in kinds

    for row in r["end_to_end"]["rows"]:
        stages = ("decode", "gate", "segment", "preprocess", "infer", "trust")
        assert row["total_median_ms"] >= max(row[f"{s}_median_ms"] for s in stages)

    picked = [m for m in r["models"] if m.get("picked", True)]
    folder = r["folder"]["rows"]
    settings = end_to_end.FOLDER_SETTINGS  # one and two threads, two workers per bundle
    assert len(folder) == len(settings) * len(picked)
    assert [(f["threads"], f["batch"], f["workers"]) for f in folder[: len(settings)]] == [
        *settings
    ]
    for row in folder:
        for stats in (row["fields_per_s"], row["cpu_ms_per_field"]):
            assert stats["min"] <= stats["median"] <= stats["max"]

    shipped = [m["name"] for m in r["models"] if m["source"] == "shipped" and m["picked"]]
    accs = {a["name"]: a for a in r["accuracy"]["models"]}
    assert sorted(accs) == sorted(["tiny-test", *shipped])
    acc = accs["tiny-test"]
    assert acc["n"] == r["accuracy"]["n_test"]
    assert acc["accuracy_ci"][0] <= acc["accuracy"] <= acc["accuracy_ci"][1]
    given = [m for m in r["models"] if m["source"] == "given"]
    assert [m["name"] for m in given] == ["tiny-test"] and given[0]["trained"]
