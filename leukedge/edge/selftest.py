"""Known-answer self-test: does the runtime here compute the bundle's model as at export?

SHA-256s prove a bundle's weights are the exported ones, not that the runtime computes
with them correctly: a wrong wheel, a damaged library or CPU kernels the runtime gets
wrong (issue 32: LiteRT on an emulated Armv9 CPU with SME called every field "Benign",
without an error) give wrong answers silently. A bundle therefore carries a few fixed
inputs and the outputs its model gave on the reference machine at export; ``load_model``
runs them and refuses the bundle (``SelfTestError``) when an output is further off than
the tolerance.

The set, ``selftest.npz`` (listed in the manifest's ``files``):

- ``view_<input>`` for each model input (``field``, ``masked``): uint8 (n, S, S, 3), what
  the input sees before scaling (``preprocess.view``); stored rather than regenerated, so
  the check does not depend on the OpenCV version;
- one float32 (n, K) array per checked model output (``probabilities``; ``features``
  where the model has them), as the reference machine computed them.

The manifest's ``self_test`` section: ``{"file", "n", "cases": [what each input is],
"tolerance": {output: largest absolute difference allowed}, "reference": {"machine", "cpu",
"backend", "runtime": {package: version}}}``.
"""

from __future__ import annotations

import math
import platform
import re
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .bundle import MANIFEST, BundleError
from .preprocess import scale_view

SELF_TEST_FILE = "selftest.npz"
#: Packages whose code computes a model's outputs, as ``runtime_versions`` reports them.
RUNTIME_PACKAGES = (
    "onnxruntime",
    "ai-edge-litert",
    "tflite-runtime",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
)
#: The package that runs each backend, first one installed.
BACKEND_PACKAGES = {"onnxruntime": ("onnxruntime",), "litert": ("ai-edge-litert", "tflite-runtime")}
# CPU flags that decide which kernels a runtime picks (x86 SIMD, Arm NEON/SVE/SME, int8 dot).
_SIMD = re.compile(
    r"(sse\d?\w*|ssse3|avx\w*|fma\w*|f16c|amx\w*|asimd\w*|neon|sve\w*|sme(?!p$)\w*|i8mm|bf16|fphp)"
)


class SelfTestError(BundleError):
    """The runtime here computes the bundle's model differently from the reference machine."""


class MissingSelfTestWarning(UserWarning):
    """A bundle without a known-answer set: its runtime's arithmetic goes unchecked."""


@dataclass(frozen=True)
class SelfTestSpec:
    """A manifest's ``self_test`` section (see the module doc)."""

    file: str
    n: int
    tolerance: dict[str, float]
    reference: dict

    @classmethod
    def from_manifest(cls, manifest: dict, path: str | Path) -> SelfTestSpec | None:
        """The section of ``manifest`` (read from ``path``), None when it has none;
        ``BundleError`` naming ``path`` when it is malformed."""
        section = manifest.get("self_test")
        if section is None:
            return None
        fix = "re-run: leukedge bundle add-self-test BUNDLE"
        if not isinstance(section, dict):
            raise BundleError(f"{path}: self_test must be an object; {fix}")
        file, n, tolerance = section.get("file"), section.get("n"), section.get("tolerance")
        if not isinstance(file, str) or file not in manifest.get("files", {}):
            raise BundleError(f"{path}: self_test file {file!r} is not among the files; {fix}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BundleError(f"{path}: self_test n must be a positive integer; {fix}")
        if (
            not isinstance(tolerance, dict)
            or "probabilities" not in tolerance
            or not all(
                isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < math.inf
                for t in tolerance.values()
            )
        ):
            raise BundleError(
                f"{path}: self_test tolerance must map output names (probabilities first) to "
                f"positive numbers; {fix}"
            )
        reference = section.get("reference", {})
        if not isinstance(reference, dict):
            raise BundleError(f"{path}: self_test reference must be an object; {fix}")
        return cls(file, n, {k: float(v) for k, v in tolerance.items()}, reference)


@dataclass(frozen=True)
class SelfTestResult:
    """How far the outputs here are from the reference's, per checked output."""

    n: int
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    labels_agree: int
    ms: float

    @property
    def passed(self) -> bool:
        # NaN compares False, so NaN outputs fail.
        return all(d <= self.tolerance[k] for k, d in self.max_abs_diff.items())

    def summary(self) -> str:
        diffs = ", ".join(
            f"{k} max |diff| {d:.2g} (tolerance {self.tolerance[k]:.2g})"
            for k, d in self.max_abs_diff.items()
        )
        return f"{diffs}; labels agree on {self.labels_agree}/{self.n}; {self.ms:.1f} ms"


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """This machine: ``machine`` (e.g. x86_64, aarch64), ``cpu`` (its name as ``cpuinfo``
    gives it, else the platform's) and ``features`` (the SIMD flags runtimes pick kernels
    by; empty where ``cpuinfo`` is unreadable)."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    if not name and "CPU part" in fields:  # Arm cores name themselves by implementer and part
        name = f"implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {
        "machine": platform.machine(),
        "cpu": name or platform.processor() or "unknown",
        "features": sorted(f for f in flags if _SIMD.fullmatch(f)),
    }


def runtime_versions() -> dict[str, str]:
    """Installed version of each of ``RUNTIME_PACKAGES`` (the ones not installed left out)."""
    found = {}
    for package in RUNTIME_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def backend_version(backend: str) -> str:
    """ "package version" of the runtime behind a backend name, e.g. "onnxruntime 1.22.0"."""
    versions = runtime_versions()
    package = next((p for p in BACKEND_PACKAGES.get(backend, ()) if p in versions), None)
    return f"{package} {versions[package]}" if package else f"{backend} (version unknown)"


def reference_machine(backend: str) -> dict:
    """The ``reference`` entry for outputs computed here on ``backend``."""
    cpu = cpu_info()
    machine = {"machine": cpu["machine"], "cpu": cpu["cpu"]}
    return {**machine, "backend": backend, "runtime": runtime_versions()}


def model_outputs(model, views: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``model.outputs`` for uint8 (n, S, S, 3) views, one array per model input, run one
    input at a time as the station runs fields: {"probabilities": float32 (n, C) before
    any temperature, "features": float32 (n, D) where the model has them}."""
    xs = [scale_view(v, spec) for v, spec in zip(views, model.input_specs)]
    rows = []
    for i in range(len(xs[0])):
        batch = [x[i : i + 1] for x in xs]
        rows.append(model.outputs(batch[0] if len(batch) == 1 else batch))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def input_names(model) -> list[str]:
    """The model's named inputs, in its input order (see ``model.MODEL_INPUTS``)."""
    return list(model.manifest.get("inputs", ["field"]))


def run_self_test(model) -> SelfTestResult | None:
    """Run a loaded model's known-answer set; None when its bundle has none."""
    path = model.bundle / MANIFEST
    spec = SelfTestSpec.from_manifest(model.manifest, path)
    if spec is None:
        return None
    t0 = time.perf_counter()
    file = model.bundle / spec.file
    try:
        with np.load(file, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{file}: unreadable known-answer set ({exc})") from exc
    keys = [f"view_{name}" for name in input_names(model)]
    missing = [k for k in (*keys, *spec.tolerance) if k not in stored]
    if missing:
        raise BundleError(
            f"{file}: lacks {', '.join(missing)}; re-run leukedge bundle add-self-test"
        )
    if any(len(stored[k]) != spec.n for k in (*keys, *spec.tolerance)):
        raise BundleError(f"{file}: does not hold the {spec.n} cases {path} says")
    found = model_outputs(model, [stored[k] for k in keys])
    diffs = {}
    for name in spec.tolerance:
        if name not in found or found[name].shape != stored[name].shape:
            raise SelfTestError(
                f"{model.bundle}: the model gives no {name} output of the shape its known-answer "
                f"set holds {stored[name].shape}; the model file is not the one exported"
            )
        diffs[name] = float(np.max(np.abs(found[name] - stored[name].astype(np.float32))))
    agree = int(np.sum(found["probabilities"].argmax(1) == stored["probabilities"].argmax(1)))
    ms = (time.perf_counter() - t0) * 1e3
    return SelfTestResult(spec.n, diffs, spec.tolerance, agree, ms)


def failure_message(model, result: SelfTestResult) -> str:
    """What failed, where and what to do, in one paragraph (for ``SelfTestError``)."""
    cpu = cpu_info()
    reference = model.manifest["self_test"].get("reference", {})
    made = ", ".join(str(reference[k]) for k in ("machine", "cpu", "backend") if k in reference)
    return (
        f"{model.bundle}: known-answer self-test FAILED: {model.route.file} on "
        f"{backend_version(model.backend.name)} differs from the reference machine "
        f"({made or 'unknown'}): {result.summary()}. This machine: {cpu['machine']}, "
        f"{cpu['cpu']}, CPU features {' '.join(cpu['features']) or 'unknown'}. Its results "
        "would be wrong; do not classify with it: reinstall the runtime from the project's "
        "wheelhouse or try the other shipped bundle (`leukedge doctor` shows the details); "
        "if the model file was changed on purpose, re-run `leukedge bundle add-self-test` "
        "on the reference machine."
    )


def check_self_test(model) -> SelfTestResult | None:
    """Run a loaded model's known-answer set: ``SelfTestError`` when an output is off by more
    than its tolerance, a ``MissingSelfTestWarning`` (and None) when the bundle has none."""
    result = run_self_test(model)
    if result is None:
        warnings.warn(
            f"{model.bundle}: no known-answer self-test in this bundle, so whether this "
            "machine's runtime computes the model correctly is unchecked; add one with: "
            f"leukedge bundle add-self-test {model.bundle}",
            MissingSelfTestWarning,
            stacklevel=3,
        )
    elif not result.passed:
        raise SelfTestError(failure_message(model, result))
    return result
