"""Which of a bundle's model files this CPU runs fastest: the manifest's ``model.routes``.

``model.file`` runs everywhere. ``model.routes`` lists other files of the same network, each
with the machines and CPU features it is the fastest known file for, first match wins::

    "routes": [{"file": "model-u8s8.onnx", "machines": ["x86_64"], "features": [],
                "why": "ONNX Runtime's x86 INT8 kernels take uint8 activations"}]

A route file gives the same outputs as ``model.file`` within the bundle's self-test
tolerance (``leukedge.export.routes`` writes and checks it); the self-test runs on the file
picked, so a route a machine computes wrongly is refused like any model file.
``LEUKEDGE_ROUTE`` (a file name, or ``model.file`` itself) overrides the choice, e.g. to
benchmark each file on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath

from .backends import FORMAT_BACKEND, available_backends
from .bundle import BundleError
from .selftest import cpu_info

#: Environment variable naming the model file to run instead of the chosen route.
ROUTE_ENV = "LEUKEDGE_ROUTE"

#: ``platform.machine()`` spellings of one architecture -> the name routes use.
MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


def machine_name(machine: str) -> str:
    """The routes' name for a ``platform.machine()`` value (x86_64, aarch64, ...)."""
    return MACHINE_ALIASES.get(machine.lower(), machine.lower())


@dataclass(frozen=True)
class Route:
    """A model file of a bundle and where it is the fastest: ``machines`` (empty: any) and
    the CPU ``features`` it needs (``/proc/cpuinfo`` flags, e.g. avx512_vnni, asimddp);
    ``why`` says so in words."""

    file: str
    machines: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    why: str = ""

    def fits(self, cpu: dict) -> bool:
        """Whether a ``selftest.cpu_info()`` machine has what this route needs."""
        machine = machine_name(cpu.get("machine", ""))
        if self.machines and machine not in {machine_name(m) for m in self.machines}:
            return False
        return set(self.features) <= set(cpu.get("features", ()))


def _strings(value: object, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BundleError(f"{where}: {key} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_routes(manifest: dict, where: str) -> tuple[Route, ...]:
    """``model.routes`` of a manifest (``where``: its path, for errors); ``BundleError`` for
    an entry that is not an object with a listed ``.onnx``/``.tflite`` ``file`` of the same
    format family the bundle's backends run."""
    model = manifest["model"]
    entries = model.get("routes", [])
    if not isinstance(entries, list):
        raise BundleError(f"{where}: model.routes must be a list, got {type(entries).__name__}")
    routes = []
    for i, entry in enumerate(entries):
        key = f"model.routes[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{where}: {key} must be an object with a file, got {entry!r}")
        if unknown := sorted(set(entry) - {"file", "machines", "features", "why", "precision",
                                             "quantization", "format", "input"}):  # fmt: skip
            raise BundleError(f"{where}: {key} has unknown key(s) {unknown}")
        file = entry["file"]
        if file not in manifest["files"]:
            raise BundleError(f"{where}: {key}.file {file!r} is not listed in files")
        if PurePosixPath(file).suffix.lower() not in (".onnx", ".tflite"):
            raise BundleError(f"{where}: {key}.file must be a .onnx or .tflite file, got {file!r}")
        routes.append(
            Route(
                file,
                _strings(entry.get("machines", []), f"{key}.machines", where),
                _strings(entry.get("features", []), f"{key}.features", where),
                str(entry.get("why", "")),
            )
        )
    return tuple(routes)


def choose_route(
    manifest: dict,
    where: str,
    cpu: dict | None = None,
    backend: str = "auto",
    forced: str | None = None,
) -> Route:
    """The model file to run here: ``forced`` or else ``LEUKEDGE_ROUTE`` when set (it must
    be ``model.file`` or a route's file), else the first route that fits ``cpu`` (default:
    this machine's ``cpu_info()``) and runs on ``backend`` ("auto": any installed runtime),
    else ``model.file``."""
    default = Route(manifest["model"]["file"], why="the bundle's portable model file")
    routes = parse_routes(manifest, where)
    forced = forced or os.environ.get(ROUTE_ENV)
    if forced:
        known = {r.file: r for r in (default, *routes)}
        if forced not in known:
            raise BundleError(
                f"{where}: route {forced!r} is not a model file of this bundle; choose "
                f"{', '.join(known)} (or unset {ROUTE_ENV})"
            )
        return Route(forced, why="asked for")
    cpu = cpu_info() if cpu is None else cpu
    runtimes = available_backends() if backend == "auto" else [backend]
    runnable = (
        r for r in routes if FORMAT_BACKEND[PurePosixPath(r.file).suffix.lower()] in runtimes
    )
    return next((r for r in runnable if r.fits(cpu)), default)
