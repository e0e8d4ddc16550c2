"""``load_model``: a verified bundle on ONNX Runtime or LiteRT, field in, label out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .backends import open_backend
from .bundle import MANIFEST, BundleError, read_manifest, verify_bundle
from .preprocess import Preprocess, prepare
from .selftest import check_self_test

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

#: Named model inputs a manifest's ``inputs`` may list, in the model file's input order.
MODEL_INPUTS = ("field", "masked")


@dataclass
class Prediction:
    """One field's classification: ``probabilities`` maps class name -> probability."""

    label: str
    probabilities: dict[str, float]
    confidence: float
    timings_ms: dict[str, float] = field(default_factory=dict)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def input_specs(spec: Preprocess, inputs: Sequence[str] = ("field",)) -> list[Preprocess]:
    """The preprocessing of each model input: "field" is ``spec`` itself, "masked" the field
    with everything outside the blast mask black (``spec`` with input mode "mask")."""
    if unknown := sorted(set(inputs) - set(MODEL_INPUTS)):
        raise BundleError(f"unknown model input(s) {unknown}; known: {', '.join(MODEL_INPUTS)}")
    return [spec if name == "field" else replace(spec, input_mode="mask") for name in inputs]


def resolve_bundle(path: str | Path) -> Path:
    """A bundle folder for a path, a ``leukedge.json``, or a shipped name ("default")."""
    p = Path(path)
    if p.name == MANIFEST:
        return p.parent
    if p.is_dir():
        return p
    shipped = MODELS_DIR / str(path)
    if (shipped / MANIFEST).is_file():
        return shipped
    names = sorted(d.parent.name for d in MODELS_DIR.glob(f"*/{MANIFEST}"))
    raise BundleError(
        f"{path}: no such model bundle (a folder with {MANIFEST}); "
        f"shipped: {', '.join(names) or 'none'}"
    )


class Model:
    """A loaded, verified model bundle.

    ``predict(field)`` takes an RGB uint8 (H, W, 3) field of any size. A manifest's
    ``inputs`` (default ``["field"]``) names what each model input gets (``input_specs``).
    """

    def __init__(self, bundle: Path, manifest: dict, backend: str, threads: int | None):
        self.bundle = bundle
        self.manifest = manifest
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        self.preprocess = Preprocess.from_dict(manifest["preprocess"])
        self.input_specs = input_specs(self.preprocess, manifest.get("inputs", ["field"]))
        model_file = bundle / manifest["model"]["file"]
        self.sha256 = manifest["files"].get(manifest["model"]["file"])  # checked by load_model
        if self.sha256 is None:
            raise BundleError(f"{model_file}: not listed in the manifest's files; refusing it")
        self.backend = open_backend(model_file, backend, threads)
        self.output = manifest["model"].get("output", "probabilities")
        self.uncertain_threshold = float(manifest.get("uncertain_threshold", 0.5))

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.bundle.name)

    def probabilities(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, ...) preprocessed batch (a list of them for a multi-input model)
        -> float32 (N, C) class probabilities."""
        out = self.backend.run(batch)
        if out.shape[-1] != len(self.classes):
            raise BundleError(
                f"{self.bundle}: {out.shape[-1]} model outputs for {len(self.classes)} classes"
            )
        return _softmax(out) if self.output == "logits" else out

    def predict_batch(self, fields: list[np.ndarray], masks=None) -> list[Prediction]:
        """Classify RGB uint8 fields; ``masks`` (bool (H, W) each) feed the "mask" input mode
        and the "masked" input (computed with the bundle's segmentation when not given)."""
        t0 = time.perf_counter()
        masks = masks if masks is not None else [None] * len(fields)
        batches = [
            np.stack([prepare(f, spec, m) for f, m in zip(fields, masks)])
            for spec in self.input_specs
        ]
        t1 = time.perf_counter()
        probs = self.probabilities(batches[0] if len(batches) == 1 else batches)
        t2 = time.perf_counter()
        per = {"preprocess": (t1 - t0) * 1e3 / len(fields), "infer": (t2 - t1) * 1e3 / len(fields)}
        out = []
        for p in probs:
            k = int(np.argmax(p))
            out.append(
                Prediction(
                    self.classes[k],
                    {c: float(v) for c, v in zip(self.classes, p)},
                    float(p[k]),
                    dict(per),
                )
            )
        return out

    def predict(self, field: np.ndarray, mask: np.ndarray | None = None) -> Prediction:
        """Classify one RGB uint8 (H, W, 3) field."""
        return self.predict_batch([field], None if mask is None else [mask])[0]


def load_model(
    path: str | Path = "default",
    backend: str = "auto",
    threads: int | None = None,
    self_test: bool = True,
) -> Model:
    """Load and verify a bundle; refuses (``BundleError``) one whose SHA-256s do not match and
    (``SelfTestError``, with ``self_test``) one the runtime here computes wrongly."""
    bundle = resolve_bundle(path)
    manifest = read_manifest(bundle)
    verify_bundle(bundle, manifest)
    model = Model(bundle, manifest, backend, threads)
    if self_test:
        check_self_test(model)
    return model
