"""``load_model``: a verified bundle on ONNX Runtime or LiteRT, field in, label out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .backends import open_backend
from .bundle import MANIFEST, BundleError, check_model_file, read_manifest, verify_bundle
from .calibration import Calibration
from .features import FeatureStats
from .imageio import check_field
from .preprocess import Preprocess, integer_lut, lut_view, scale_view, view
from .routes import choose_route
from .selftest import check_self_test

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

#: Named model inputs a manifest's ``inputs`` may list, in the model file's input order.
MODEL_INPUTS = ("field", "masked")


@dataclass
class Prediction:
    """One field's classification: ``probabilities`` maps class name -> probability
    (temperature-calibrated when the bundle has a temperature). ``out_of_distribution``:
    the field's features lie beyond the bundle's threshold (``ood_score``, the feature
    distance; None for a bundle without feature statistics)."""

    label: str
    probabilities: dict[str, float]
    confidence: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    out_of_distribution: bool = False
    ood_score: float | None = None


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
    ``inputs`` (default ``["field"]``) names what each model input gets (``input_specs``);
    its ``model.outputs`` names the file's "probabilities" output (default: the first) and
    "features" output (optional, ``leukedge.export.features``). Its ``trust`` section adds
    the feature statistics (``leukedge.edge.features``) and the calibration
    (``leukedge.edge.calibration``); ``notes`` says what a bundle without them falls back to.
    ``route`` (``leukedge.edge.routes``) is the model file run here: the one of the
    manifest's ``model.routes`` for this CPU, else ``model.file`` (``route=`` names one).
    """

    def __init__(
        self,
        bundle: Path,
        manifest: dict,
        backend: str,
        threads: int | None,
        route: str | None = None,
    ):
        self.bundle = bundle
        self.manifest = manifest
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        self.preprocess = Preprocess.from_dict(manifest["preprocess"])
        self.input_specs = input_specs(self.preprocess, manifest.get("inputs", ["field"]))
        where = str(bundle / MANIFEST)
        #: The model file run here: ``model.file`` or the route for this CPU (``routes``).
        self.route = choose_route(manifest, where, backend=backend, forced=route)
        self.model_file = model_file = bundle / self.route.file
        self.sha256 = manifest["files"].get(self.route.file)  # checked by load_model
        if self.sha256 is None:
            raise BundleError(f"{model_file}: not listed in the manifest's files; refusing it")
        self.backend = open_backend(model_file, backend, threads)
        #: Per model input: the table from pixel values to the integers it takes (None: it
        #: takes float32), ``preprocess.integer_lut``.
        self.input_luts = [
            None if q is None else integer_lut(spec, q.quantize)
            for spec, q in zip(self.input_specs, self.backend.integer_inputs)
        ]
        self.output = manifest["model"].get("output", "probabilities")
        named = manifest["model"].get("outputs") or {}
        self.output_names = {"probabilities": self.backend.output_names[0], **named}
        if missing := sorted(set(self.output_names.values()) - set(self.backend.output_names)):
            raise BundleError(
                f"{where}: model.outputs names {missing}, which {model_file.name} lacks "
                f"(it has {self.backend.output_names})"
            )
        trust = manifest.get("trust") or {}
        self.feature_stats = (
            FeatureStats.from_manifest(trust["features"], where) if "features" in trust else None
        )
        if self.feature_stats is not None and "features" not in self.output_names:
            raise BundleError(
                f"{where}: trust.features needs a feature output (model.outputs.features); "
                "re-run leukedge bundle add-trust"
            )
        self.calibration = (
            Calibration.from_manifest(trust["calibration"], where)
            if "calibration" in trust
            else None
        )
        if self.calibration is not None and self.calibration.threshold is not None:
            self.uncertain_threshold = float(self.calibration.threshold)
        else:
            self.uncertain_threshold = float(manifest.get("uncertain_threshold", 0.5))
        notes = []
        if self.feature_stats is None:
            notes.append("no feature statistics (trust.features): fields unlike the training "
                         "fields are caught by their colour only")  # fmt: skip
        if self.calibration is None:
            notes.append("no calibration (trust.calibration): raw probabilities, "
                         f"low-confidence threshold {self.uncertain_threshold}")  # fmt: skip
        self.notes: tuple[str, ...] = tuple(notes)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.bundle.name)

    def outputs(self, batch: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Preprocessed batch (N, ...) (a list of them for a multi-input model): float32 as
        ``preprocess.scale_view`` gives it, or the model file's own input (``encode``) ->
        {"probabilities": float32 (N, C) as the model file gives them (before temperature),
        "features": float32 (N, D) when the model has a feature output}, one inference."""
        out = self.backend.outputs(batch)
        probs = out[self.output_names["probabilities"]]
        if probs.shape[-1] != len(self.classes):
            raise BundleError(
                f"{self.bundle}: {probs.shape[-1]} model outputs for {len(self.classes)} classes"
            )
        result = {"probabilities": _softmax(probs) if self.output == "logits" else probs}
        if "features" in self.output_names:
            feats = out[self.output_names["features"]]
            result["features"] = feats.reshape(len(feats), -1)
        return result

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """float32 (N, C) model probabilities -> the bundle's calibrated ones (or as they are)."""
        return probs if self.calibration is None else self.calibration.apply(probs)

    def probabilities(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed batch(es) (``outputs``) -> float32 (N, C) calibrated probabilities."""
        return self.calibrate(self.outputs(batch)["probabilities"])

    def encode(self, views: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 (N, S, S, 3) model views (``preprocess.view``), one array per model input ->
        each input's batch as the model file takes it: its integers (``input_luts``, in the
        file's layout) or float32 (``preprocess.scale_view``)."""
        return [
            scale_view(v, spec) if lut is None else q.arrange(lut_view(v, lut), "NHWC")
            for v, spec, lut, q in zip(
                views, self.input_specs, self.input_luts, self.backend.integer_inputs
            )
        ]

    def prepare_batch(self, fields: list[np.ndarray], masks=None):
        """RGB uint8 fields -> the model input (N, ...) as ``encode`` gives it (a list of them,
        one per model input, for a multi-input model); ``masks`` (bool (H, W) each) feed the
        "mask" input mode and the "masked" input (computed with the bundle's segmentation when
        not given)."""
        fields = [check_field(f) for f in fields]
        masks = masks if masks is not None else [None] * len(fields)
        views = [
            np.stack([view(f, spec, m) for f, m in zip(fields, masks)]) for spec in self.input_specs
        ]
        batches = self.encode(views)
        return batches[0] if len(batches) == 1 else batches

    def predict_batch(self, fields: list[np.ndarray], masks=None) -> list[Prediction]:
        """Classify RGB uint8 fields (``masks``: see ``prepare_batch``)."""
        t0 = time.perf_counter()
        batch = self.prepare_batch(fields, masks)
        t1 = time.perf_counter()
        outs = self.outputs(batch)
        t2 = time.perf_counter()
        probs = self.calibrate(outs["probabilities"])
        n = len(fields)
        ood, scores = np.zeros(n, bool), [None] * n
        if self.feature_stats is not None:
            ood, dist = self.feature_stats.flag(outs["features"])
            scores = [float(d) for d in dist]
        t3 = time.perf_counter()
        per = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "infer": (t2 - t1) * 1e3 / n,
            "trust": (t3 - t2) * 1e3 / n,
        }
        out = []
        for p, flagged, score in zip(probs, ood, scores):
            k = int(np.argmax(p))
            out.append(
                Prediction(
                    self.classes[k],
                    {c: float(v) for c, v in zip(self.classes, p)},
                    float(p[k]),
                    dict(per),
                    bool(flagged),
                    score,
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
    trusted_key: str | Path | None = None,
    route: str | None = None,
) -> Model:
    """Load and verify a bundle; refuses (``BundleError``) one whose SHA-256s do not match and
    (``SelfTestError``, with ``self_test``) one the runtime here computes wrongly, and
    (``SignatureError``, with ``trusted_key``, a public key file) one not signed with it.
    ``route``: the bundle's model file to run (default: the one for this CPU, ``routes``)."""
    bundle = resolve_bundle(path)
    manifest = read_manifest(bundle, trusted_key)
    verify_bundle(bundle, manifest)
    model = Model(bundle, manifest, backend, threads, route)
    check_model_file(model)
    if self_test:
        check_self_test(model)
    return model
