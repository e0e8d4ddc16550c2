"""The models a benchmark measures: shipped bundles, bundles given on the command line
and architecture-only (untrained) models built on the fly by ``leukedge.benchmarks.build``.

Each model is a record (a dict): ``name``, ``arch`` (architecture), ``model`` (its
display name), ``format``, ``precision``, ``backend``, ``bundle``, ``file``, ``route``,
``picked``, ``sha256`` (bundles: the model file, whether this machine runs it, its prefix),
``size_bytes``, ``input_size``, ``source`` ("shipped", "given" or
"architecture-only") and ``trained``. Baselines (what a user would run instead) are
records with ``framework`` ("pytorch" or "keras"), ``arch``, ``model``, ``file``,
``size_bytes``, ``input_size`` and ``preprocess``.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..edge.backends import FORMAT_BACKEND, available_backends
from ..edge.bundle import MANIFEST, read_manifest
from ..edge.model import MODELS_DIR
from ..edge.routes import choose_route
from .spawn import SpawnError, run_module

#: Builders: architecture -> (packages they need, seconds allowed).
BUILDERS = {
    "yolo11n-cls": (("torch", "ultralytics"), 600),
    "mobilenetv2": (("tensorflow",), 900),
}


def arch_of(manifest: dict) -> str:
    """The architecture a bundle was trained from (Ultralytics' ``model`` argument, the
    Keras run's ``arch``), else the bundle's name."""
    training = manifest.get("training") or {}
    arch = (training.get("args") or {}).get("model") or training.get("arch")
    return Path(str(arch)).stem if arch else manifest.get("name", "model")


def bundle_record(
    bundle: str | Path,
    source: str,
    trained: bool,
    arch: str | None = None,
    model: str = "",
    route: str | None = None,
) -> dict:
    """The record of a bundle folder (see the module docstring) running ``route``, one of its
    model files (default: the one this machine picks, ``leukedge.edge.routes``); ``picked``
    says whether this machine would run it, ``sha256`` is the file's SHA-256 prefix."""
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    chosen = choose_route(manifest, str(bundle / MANIFEST)).file
    route = route or chosen
    file = bundle / route
    arch = arch or arch_of(manifest)
    return {
        "route": route,
        "picked": route == chosen,
        "sha256": manifest["files"][route][:12],
        "name": manifest.get("name", bundle.name),
        "arch": arch,
        "model": model or arch,
        "format": file.suffix.lstrip("."),
        "precision": manifest["model"].get("precision", "fp32"),
        "backend": FORMAT_BACKEND.get(file.suffix.lower(), "unknown"),
        "bundle": str(bundle),
        "file": str(file),
        "size_bytes": file.stat().st_size,
        "input_size": int(manifest["preprocess"].get("size", 224)),
        "source": source,
        "trained": trained,
    }


def route_records(bundle: str | Path, source: str) -> list[dict]:
    """A trained bundle's record for each of its model files (``model.file`` and
    ``model.routes``, a file listed for several CPUs once), the one this machine picks first."""
    manifest = read_manifest(bundle)
    files = [manifest["model"]["file"], *(r["file"] for r in manifest["model"].get("routes", []))]
    records = [bundle_record(bundle, source, True, route=f) for f in dict.fromkeys(files)]
    return sorted(records, key=lambda r: not r["picked"])


def shipped_bundles() -> list[Path]:
    """Bundle folders shipped in ``leukedge/models``."""
    return sorted(p.parent for p in MODELS_DIR.glob(f"*/{MANIFEST}"))


def build(work: Path, quick: bool, split_csv: Path) -> dict[str, dict]:
    """Build every architecture of ``BUILDERS`` whose packages are installed, side by side
    in child processes: arch -> the builder's result, or ``{"error": why}``."""

    def one(arch: str) -> dict:
        packages, timeout = BUILDERS[arch]
        if missing := [p for p in packages if importlib.util.find_spec(p) is None]:
            return {"error": f"{', '.join(missing)} not installed"}
        payload = {
            "arch": arch,
            "out": str(work / "models" / arch),
            "size": 64 if quick else 224,
            "quick": quick,
            "split_csv": str(split_csv),
        }
        try:
            return run_module("build", payload, timeout)
        except SpawnError as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(len(BUILDERS)) as pool:
        return dict(zip(BUILDERS, pool.map(one, BUILDERS)))


def collect(
    work: Path, *, quick: bool, on_device: bool, given: list[Path], split_csv: Path
) -> dict:
    """Every model to measure: ``{"models": [...], "baselines": [...], "notes": [...]}``.

    Unless ``on_device``, every architecture of ``BUILDERS`` is built untrained under
    ``work`` (``quick``: at 64 px, a tiny CNN standing in for MobileNetV2; the ``split_csv``
    train fields calibrate INT8) for its PyTorch/Keras baseline and its own fp32/INT8
    bundles (latency does not depend on the weights, so these give the like-for-like
    INT8 vs fp32 ratios beside any shipped bundle). A given bundle that is also shipped
    is measured once.
    """
    models = [r for b in shipped_bundles() for r in route_records(b, "shipped")]
    baselines, notes = [], []
    if not models:
        notes.append("no model bundle is shipped in leukedge/models")
    shipped = {m["bundle"] for m in models}
    for b in given:
        if str(Path(b).resolve()) not in shipped:
            models += route_records(b, "given")
    if on_device:
        notes.append(
            "on-device run: only shipped and given bundles; nothing needing torch, "
            "TensorFlow or the exporters (architecture-only models, PyTorch/Keras baselines)"
        )
    else:
        for arch, built in build(work, quick, split_csv).items():
            if "error" in built:
                notes.append(f"{arch}: not built, {built['error']}")
                continue
            models += built["models"]
            baselines += built["baselines"]
            notes += built["notes"]
    usable = available_backends()
    for m in [m for m in models if m["backend"] not in usable]:
        notes.append(f"{m['name']}: skipped, the {m['backend']} backend is not installed")
        models.remove(m)
    return {"models": models, "baselines": baselines, "notes": notes}
