"""``load_model``: a verified bundle on ONNX Runtime or LiteRT, field in, label out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import open_backend
from .bundle import MANIFEST, BundleError, read_manifest, sha256_file, verify_bundle
from .preprocess import Preprocess, prepare

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


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

    ``predict(field)`` takes an RGB uint8 (H, W, 3) field of any size.
    """

    def __init__(self, bundle: Path, manifest: dict, backend: str, threads: int | None):
        self.bundle = bundle
        self.manifest = manifest
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        self.preprocess = Preprocess.from_dict(manifest["preprocess"])
        model_file = bundle / manifest["model"]["file"]
        self.sha256 = sha256_file(model_file)
        self.backend = open_backend(model_file, backend, threads)
        self.output = manifest["model"].get("output", "probabilities")
        self.uncertain_threshold = float(manifest.get("uncertain_threshold", 0.5))

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.bundle.name)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, ...) preprocessed batch -> float32 (N, C) class probabilities."""
        out = self.backend.run(batch)
        if out.shape[-1] != len(self.classes):
            raise BundleError(
                f"{self.bundle}: {out.shape[-1]} model outputs for {len(self.classes)} classes"
            )
        return _softmax(out) if self.output == "logits" else out

    def predict_batch(self, fields: list[np.ndarray], masks=None) -> list[Prediction]:
        """Classify RGB uint8 fields; ``masks`` (bool (H, W) each) feed the "mask" input mode."""
        t0 = time.perf_counter()
        masks = masks if masks is not None else [None] * len(fields)
        batch = np.stack([prepare(f, self.preprocess, m) for f, m in zip(fields, masks)])
        t1 = time.perf_counter()
        probs = self.probabilities(batch)
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
    path: str | Path = "default", backend: str = "auto", threads: int | None = None
) -> Model:
    """Load and verify a bundle; refuses (``BundleError``) one whose SHA-256s do not match."""
    bundle = resolve_bundle(path)
    manifest = read_manifest(bundle)
    verify_bundle(bundle, manifest)
    return Model(bundle, manifest, backend, threads)
