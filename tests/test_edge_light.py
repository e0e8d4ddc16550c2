"""The edge core never pulls in tensorflow, torch or ultralytics, directly or indirectly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"tensorflow", "torch", "ultralytics", "keras", "jax", "tf2onnx", "onnx"}


def _modules_after(code: str) -> set[str]:
    tail = "import sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\n{tail}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import leukedge.edge",
        "import leukedge.edge as e, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(e.__path__, 'leukedge.edge.'):\n"
        "    importlib.import_module(m.name)",
        "import leukedge.cli",
    ],
    ids=["edge", "every-edge-module", "cli"],
)
def test_edge_imports_no_heavy_framework(code):
    heavy = _modules_after(code) & HEAVY
    assert not heavy, f"{code!r} imported {sorted(heavy)}"


def test_probe_detects_a_heavy_import():
    """The probe itself works: importing a module that pulls in json shows json."""
    assert "json" in _modules_after("import json")
