"""The package's import graph, read statically with ``ast``: layers, the edge allow-list and
what each documented install (``pyproject.toml`` extras) must provide.

Every ``import`` counts, at module level ("eager") or inside a function ("lazy"), so an
optional code path cannot hide a dependency. ``ARCHITECTURE.md`` explains the layers.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "leukedge"

#: Module prefix -> layer (the longest prefix wins). A new top-level package must be placed.
LAYER_OF = {
    "leukedge": "base",
    "leukedge.errors": "base",
    "leukedge.console": "support",
    "leukedge.progress": "support",
    "leukedge.offline": "support",
    "leukedge.edge": "edge",
    "leukedge.data": "data",
    "leukedge.evaluation": "evaluation",
    "leukedge.training": "training",
    "leukedge.export": "export",
    "leukedge.benchmarks": "benchmarks",
    "leukedge.scale": "apps",
    "leukedge.station": "apps",
    "leukedge.commands": "commands",
    "leukedge.cli": "commands",
    "leukedge.__main__": "commands",
}
#: Layer -> the layers it may import (besides its own). edge <- data <- evaluation <-
#: training <- export <- benchmarks <- commands; the applications (scale, the station's
#: web front) build on edge and data, and only the command line imports them.
BELOW = {
    "base": set(),
    "edge": {"base"},
    "support": {"base"},
    "data": {"base", "edge", "support"},
    "evaluation": {"base", "edge", "support", "data"},
    "training": {"base", "edge", "support", "data", "evaluation"},
    "export": {"base", "edge", "support", "data", "evaluation", "training"},
    "benchmarks": {"base", "edge", "support", "data", "evaluation", "training", "export"},
    "apps": {"base", "edge", "support", "data"},
    "commands": {"base", "edge", "support", "data", "evaluation", "training", "export",
                 "benchmarks", "apps"},
}  # fmt: skip

#: Third-party modules ``leukedge.edge`` may import: the light runtime, the alternative
#: LiteRT runtime, tomli (Python 3.10), the Pi camera (lazily) and cryptography (lazily,
#: for bundle signatures). Everything else in edge is stdlib or leukedge.edge/errors.
EDGE_ALLOWED = {"numpy", "cv2", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tomli"}
EDGE_LAZY_ONLY = {"picamera2", "cryptography"}

#: Module prefix -> the extras it is documented to run under (the longest prefix wins):
#: every third-party module it imports must come from the base dependencies or those extras.
INSTALL_OF = {
    "leukedge": (),
    "leukedge.edge": ("edge",),
    "leukedge.edge.signature": ("edge", "sign"),
    "leukedge.data": (),
    "leukedge.evaluation": ("edge",),
    "leukedge.evaluation.plots": ("eval",),
    "leukedge.evaluation.render": ("eval",),
    "leukedge.training": ("train",),
    "leukedge.export": ("export",),
    "leukedge.export.yolo": ("export", "train"),
    "leukedge.export.families": ("export", "train"),
    "leukedge.benchmarks": ("edge",),
    "leukedge.benchmarks.plots": ("eval",),
    "leukedge.benchmarks.segmentation": ("eval",),
    "leukedge.benchmarks.build": ("train", "export"),
    "leukedge.benchmarks.worker": ("edge", "train"),
    "leukedge.scale": ("edge", "scale"),
    "leukedge.station": ("edge", "station"),
}
#: Imports no extra provides: the Pi camera (Raspberry Pi OS: apt install python3-picamera2)
#: and tflite-runtime, an alternative to ai-edge-litert the LiteRT backend falls back to.
NOT_FROM_PYPI = {"picamera2", "tflite_runtime"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports(name: str) -> tuple[tuple[str, bool], ...]:
    """(imported module, lazy) of every import in a module; ``from pkg import mod`` gives
    ``pkg.mod`` when that is a leukedge module, else ``pkg``."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    lazy_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            found += [(a.name, lazy) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in modules() else base, lazy))
    return tuple(found)


def most_specific(table: dict, name: str):
    key = max((k for k in table if name == k or name.startswith(k + ".")), key=len, default=None)
    return table[key] if key is not None else None


def third_party(name: str) -> set[tuple[str, bool]]:
    return {
        (m.split(".")[0], lazy)
        for m, lazy in imports(name)
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "leukedge"
    }


def test_every_module_has_a_layer_and_imports_none_above_it():
    problems = []
    for name in modules():
        layer = most_specific(LAYER_OF, name)
        if layer is None:
            problems.append(f"{name}: no layer (add it to LAYER_OF and ARCHITECTURE.md)")
            continue
        for target, lazy in imports(name):
            if target.split(".")[0] != "leukedge" or target not in modules():
                continue
            other = most_specific(LAYER_OF, target)
            if other != layer and other not in BELOW[layer]:
                kind = "lazily " if lazy else ""
                problems.append(f"{name} ({layer}) {kind}imports {target} ({other})")
    assert not problems, "\n".join(problems)


def test_edge_imports_only_the_light_runtime():
    """One allow-list for the light core: what ``leukedge.edge`` may import."""
    problems = []
    for name in (m for m in modules() if m.startswith("leukedge.edge")):
        for target, lazy in imports(name):
            top = target.split(".")[0]
            if top == "leukedge":
                if not (target.startswith("leukedge.edge") or target in ("leukedge",
                        "leukedge.errors")):  # fmt: skip
                    problems.append(f"{name} imports {target}")
            elif top in sys.stdlib_module_names or top in EDGE_ALLOWED:
                continue
            elif top in EDGE_LAZY_ONLY and lazy:
                continue
            else:
                problems.append(f"{name} imports {top}{' at module level' if not lazy else ''}")
    assert not problems, "\n".join(problems)


def _loaded_after(code: str) -> set[str]:
    """Top-level non-stdlib packages loaded by running ``code`` in a fresh interpreter."""
    code += "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1])) - set(sys.stdlib_module_names)
    return {m for m in loaded if not m.startswith("_")}  # __main__, import hooks


def test_importing_every_edge_module_loads_only_the_light_runtime():
    code = (
        "import importlib, pkgutil, leukedge.edge as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'leukedge.edge.'):\n"
        "    importlib.import_module(m.name)"
    )
    assert _loaded_after(code) <= {"leukedge", *EDGE_ALLOWED}


def test_the_command_line_imports_no_framework():
    """Verbs import heavy libraries inside their functions: ``leukedge run`` stays light."""
    heavy = {"tensorflow", "torch", "ultralytics", "keras", "jax", "tf2onnx", "onnx",
             "matplotlib", "ray", "picamera2", "cryptography"}  # fmt: skip
    assert not _loaded_after("import leukedge.cli") & heavy


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def extras() -> dict[str, set[str]]:
    """Install name ("" for the base) -> the distributions it installs, extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {"": project["dependencies"], **project["optional-dependencies"]}

    def expand(key: str) -> set[str]:
        out = set()
        for req in declared[key]:
            m = re.match(r"\s*([A-Za-z0-9._-]+)(?:\[([^\]]*)\])?", req)
            if _canonical(m.group(1)) == "leukedge":
                for sub in m.group(2).split(","):
                    out |= expand(sub.strip())
            else:
                out.add(_canonical(m.group(1)))
        return out

    return {key: expand(key) | (expand("") if key else set()) for key in declared}


@cache
def eager_third_party(name: str) -> frozenset[str]:
    """Third-party modules that importing ``name`` loads: its module-level imports and
    those of the leukedge modules it imports at module level, transitively."""
    found = {top for top, lazy in third_party(name) if not lazy}
    for target, lazy in imports(name):
        if not lazy and target in modules() and target != name:
            found |= eager_third_party(target)
    return frozenset(found)


def test_every_extra_declares_what_its_code_imports():
    """Each module's third-party imports, eager or lazy, come from its documented install,
    and importing it under that install loads nothing else (``eager_third_party``)."""
    by_import = importlib.metadata.packages_distributions()
    problems = []
    for name in modules():
        install = most_specific(INSTALL_OF, name)
        dists = set().union(*(extras()[e] for e in install)) | extras()[""]
        needed = {top for top, _ in third_party(name)} | eager_third_party(name)
        for top in sorted(needed - NOT_FROM_PYPI):
            provided = {_canonical(d) for d in by_import.get(top, [])} | {_canonical(top)}
            if not provided & dists:
                problems.append(f"{name} imports {top}: in none of {['base', *install]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("install", sorted({i for v in INSTALL_OF.values() for i in v}))
def test_documented_installs_exist(install):
    assert install in extras(), f"pyproject.toml has no extra {install!r}"


def test_verbs_stay_thin():
    """Each CLI verb parses, calls the library and prints: its body (after the signature)
    stays well under 60 lines."""
    long = []
    for name, path in modules().items():
        if not name.startswith("leukedge.commands."):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.body:
                start = node.body[0].lineno
                if node.end_lineno - start + 1 > 45:
                    long.append(f"{name}.{node.name}: {node.end_lineno - start + 1} lines")
    assert not long, "\n".join(long)


#: What the light station must never load, even lazily: training and export frameworks,
#: plotting, science stacks and web frameworks.
HEAVY = {"tensorflow", "torch", "torchvision", "ultralytics", "keras", "jax", "tf2onnx", "onnx",
         "matplotlib", "ray", "scipy", "sklearn", "pandas", "starlette", "uvicorn", "fastapi",
         "flask", "jinja2"}  # fmt: skip

#: Runs the station's whole path in one fresh interpreter (argv: a folder with fields, a
#: results folder): load and run both shipped bundles, ``leukedge run`` on the folder and
#: ``leukedge demo``; prints the top-level modules then loaded.
STATION_PATH = """
import json, sys
import numpy as np
from leukedge.cli import app
from leukedge.edge import load_model
from leukedge.edge.synth import synth_field

field = synth_field("Pre", size=(224, 224), seed=0)[0]
for name in ("default", "mobilenetv2"):
    assert load_model(name, threads=1).predict(field).label
folder, results = sys.argv[1:3]
for args in (["run", "--source", f"folder:{folder}", "--once", "--slide", "light",
              "--results-dir", results], ["demo", "--fields", "2"]):
    try:
        app(args, prog_name="leukedge")
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_the_station_path_loads_no_framework(tmp_path):
    """Import time is not enough: a framework imported when a model loads, a field is
    classified, ``leukedge run`` reads a folder or ``leukedge demo`` runs is caught here."""
    import cv2

    from leukedge.edge.synth import synth_field

    folder = tmp_path / "fields"
    folder.mkdir()
    for i, label in enumerate(("Benign", "Pro")):
        rgb = synth_field(label, size=(224, 224), seed=i)[0]
        cv2.imwrite(str(folder / f"f{i}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cmd = [sys.executable, "-c", STATION_PATH, str(folder), str(tmp_path / "results")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    said = done.stdout + done.stderr  # both verbs ran: the folder's slide and the demo's
    assert "fields 2, uncertain" in said and said.count("slide call") >= 3
