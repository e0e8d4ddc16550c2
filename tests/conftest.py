"""Shared fixtures: a tiny ONNX model bundle built without any training framework, the
shared real data (``../shared`` beside the clone) and its leak-safe split, and a summary
line per skipped marker group so that no heavy check is skipped silently."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from leukedge.edge.classes import CLASSES
from leukedge.edge.preprocess import Preprocess

NETGUARD = Path(__file__).resolve().parent / "netguard"
sys.path.insert(0, str(NETGUARD))
import leukedge_netguard  # noqa: E402

leukedge_netguard.install(owner=True)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


#: Subprocesses of a guarded test run in a network namespace of their own (``unshare -n``,
#: loopback only) where this machine allows it: native code is caught too.
UNSHARE = ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh"]
CAN_UNSHARE = _unshare_works()


@contextmanager
def network_guard(attempts: list[str], record: Path):
    """Refuse and record non-loopback network use: in this process (audit hook), in Python
    subprocesses (the same hook through ``netguard/sitecustomize.py``, appending to
    ``record``) and, with ``unshare -n``, in every subprocess at the kernel's level."""
    saved = {k: os.environ.get(k) for k in ("LEUKEDGE_NETGUARD", "PYTHONPATH")}
    os.environ["LEUKEDGE_NETGUARD"] = str(record)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), saved["PYTHONPATH"]]))
    popen_init = subprocess.Popen.__init__

    def unshared(self, args, *rest, **kwargs):
        if CAN_UNSHARE and isinstance(args, list | tuple) and args and not kwargs.get("shell"):
            args = [*UNSHARE, *map(str, args)]
        return popen_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = unshared
    leukedge_netguard.ATTEMPTS = attempts
    try:
        yield attempts
    finally:
        leukedge_netguard.stop()
        subprocess.Popen.__init__ = popen_init
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _guarded_phase(item):
    """Every phase (setup with module fixtures that train, call, teardown) of a test
    marked ``slow`` (it trains or exports) runs under ``network_guard``."""
    if item.get_closest_marker("slow") is None:
        return None
    if not hasattr(item, "netguard"):
        item.netguard = ([], Path(item.config._tmp_path_factory.mktemp("netguard")) / "record")
    return network_guard(*item.netguard)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    guard = _guarded_phase(item)
    if guard is None:
        return (yield)
    with guard:
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    guard = _guarded_phase(item)
    if guard is None:
        return (yield)
    with guard:
        out = yield
    attempts, record = item.netguard
    seen = attempts + (record.read_text().splitlines() if record.exists() else [])
    assert not seen, "network use in an offline test:\n" + "\n".join(seen)
    return out


#: The real data the ``shared`` tests read: beside the clone, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TALEQANI = SHARED_DATA / "taleqani-all"


def need_shared(path: Path = TALEQANI) -> Path:
    """``path`` under ../shared, or skip the test saying which folder is missing."""
    if not path.is_dir():
        pytest.skip(f"{path} is not present (real data: clone beside ../shared to run this)")
    return path


@pytest.fixture(scope="session")
def shared_split(tmp_path_factory) -> Path:
    """``split.csv`` of ``leukedge data split ../shared/data/taleqani-all`` (4 classes, seed 0,
    the shipped bundles' split), rebuilt once per session (~15 s)."""
    from typer.testing import CliRunner

    from leukedge.cli import app

    need_shared()
    out = tmp_path_factory.mktemp("split4")
    done = CliRunner().invoke(app, ["data", "split", str(TALEQANI), "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out / "split.csv"


def pytest_terminal_summary(terminalreporter):
    """One line per marker group (``shared``, ``slow``) with skipped tests, and why."""
    groups: dict[str, Counter] = {}
    for report in terminalreporter.stats.get("skipped", []):
        marks = [m for m in ("shared", "slow") if m in report.keywords]
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for mark in marks:
            groups.setdefault(mark, Counter())[reason.removeprefix("Skipped: ")] += 1
    for mark, reasons in sorted(groups.items()):
        for reason, n in reasons.most_common():
            terminalreporter.write_line(f"{mark}: {n} test(s) skipped: {reason}", yellow=True)


def write_tiny_bundle(folder, size: int = 32, input_mode: str = "field", seed: int = 0):
    """A 4-class bundle: global mean RGB -> linear layer -> softmax, as ``model.onnx``;
    ``seed`` draws the weights (another seed: a differently trained model)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from leukedge.edge.bundle import write_manifest

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 8, (3, len(CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, len(CLASSES)])],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.zeros(len(CLASSES), np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    write_manifest(
        folder,
        {
            "name": "tiny-test",
            "classes": list(CLASSES),
            "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32"},
            "preprocess": Preprocess(input_mode=input_mode, size=size).to_dict(),
            "uncertain_threshold": 0.3,
        },
    )
    return folder


@pytest.fixture
def tiny_bundle(tmp_path):
    return write_tiny_bundle(tmp_path / "bundle")
