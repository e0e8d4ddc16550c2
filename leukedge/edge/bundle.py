"""Model bundles: a folder with model file(s) and a ``leukedge.json`` manifest.

The manifest names the classes in output order, the model file and its input,
the preprocessing, the uncertainty threshold, how the model was trained and
evaluated, and the SHA-256 of every file. It is checked against a strict schema
(``check_manifest``: types, ranges, every path inside the bundle folder) before
anything it names is read, and a bundle whose files do not match their SHA-256s is
refused, naming the file. ``check_model_file`` then runs the loaded model once on a
blank field: the model file's own class names and output width must agree with the
manifest. A station with a trusted key also refuses a bundle whose manifest is not
signed by it (``leukedge.edge.signature``).

Sections other modules own ("trust", "self_test", "evaluation", "training") are only
checked to be objects here; their owners parse them and name the manifest on error.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import LeukedgeError
from .preprocess import INPUT_MODES, WHITE_POINTS, Preprocess, prepare
from .segment import MODES as SEGMENTATION_MODES

MANIFEST = "leukedge.json"
#: The detached Ed25519 signature of the manifest's bytes, beside it.
SIGNATURE = MANIFEST + ".sig"
BUNDLE_VERSION = 1
REQUIRED = ("classes", "model", "preprocess", "files")
#: Sections other modules parse (``Model``, ``selftest``, reports); here only "an object".
OWNED_SECTIONS = ("trust", "self_test", "evaluation", "training")
MODEL_FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
MODEL_OUTPUTS = ("probabilities", "logits")
PREPROCESS_SIZES = (16, 1024)
#: ``ood.max_z`` above this would flag no real field; at or below 0, every field.
MAX_OOD_Z = 10.0
MAX_MANIFEST_BYTES = 16 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "restore the bundle's original leukedge.json or re-export the bundle"


class BundleError(LeukedgeError, ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_path(bundle: str | Path) -> Path:
    """The ``leukedge.json`` of a bundle folder (or that path itself)."""
    bundle = Path(bundle)
    return bundle if bundle.name == MANIFEST else bundle / MANIFEST


def bundle_file(bundle: str | Path, name: object, where: str | Path | None = None) -> Path:
    """The file ``name`` (a manifest entry) of a bundle folder; ``BundleError`` naming
    ``where`` (default: the manifest) unless it is a relative path that stays inside the
    folder, links resolved."""
    bundle = Path(bundle)
    where = where or bundle / MANIFEST
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: file name {name!r} is not a non-empty string; {_FIX}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name or ":" in name or "\0" in name:
        raise BundleError(
            f"{where}: file {name!r} is not a plain path inside the bundle folder; {_FIX}"
        )
    path = bundle / pure
    if not path.resolve().is_relative_to(bundle.resolve()):
        raise BundleError(f"{where}: {path} leads outside the bundle folder (a link); {_FIX}")
    return path


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate key(s) {dup}")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def read_manifest(bundle: str | Path, trusted_key: str | Path | None = None) -> dict:
    """The checked manifest of a bundle folder (or a ``leukedge.json`` path).

    With ``trusted_key`` (an Ed25519 public key file), the manifest's bytes must carry a
    valid signature by it (``SIGNATURE``) before they are parsed. ``BundleError`` names
    the manifest and what is wrong (``check_manifest``).
    """
    path = manifest_path(bundle)
    if not path.is_file():
        raise BundleError(f"{path}: no bundle manifest here")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path}: manifest larger than {MAX_MANIFEST_BYTES >> 20} MB")
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc.strerror or exc})") from exc
    if trusted_key is not None:
        from .signature import verify_manifest

        verify_manifest(path, raw, trusted_key)
    try:
        manifest = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); {_FIX}") from exc
    check_manifest(manifest, path)
    return manifest


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    """Collects nothing: the first problem raises ``BundleError`` naming the manifest."""

    def __init__(self, where: Path):
        self.where = where

    def fail(self, key: str, problem: str) -> None:
        raise BundleError(f"{self.where}: {key} {problem}; {_FIX}")

    def object(self, d: Mapping, key: str, required: bool = False) -> dict | None:
        if key not in d:
            if required:
                self.fail(key, "is missing")
            return None
        if not isinstance(d[key], dict):
            self.fail(key, f"must be an object, got {type(d[key]).__name__}")
        return d[key]

    def string(self, d: Mapping, key: str, label: str, choices=None, required=False) -> None:
        if key not in d:
            if required:
                self.fail(label, "is missing")
            return
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            self.fail(label, f"must be a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(label, f"must be one of {', '.join(choices)}, got {v!r}")

    def number(self, d: Mapping, key: str, label: str, lo, hi, required=False, integer=False):
        if key not in d:
            if required:
                self.fail(label, "is missing")
            return
        v = d[key]
        ok = _integer(v) if integer else _number(v)
        kind = "an integer" if integer else "a number"
        if not ok or not lo <= v <= hi:
            self.fail(label, f"must be {kind} in {lo}..{hi}, got {v!r}")


def check_manifest(manifest: object, where: str | Path) -> None:
    """Check a parsed manifest against the schema; ``BundleError`` names ``where`` (the
    manifest path, whose folder is the bundle) and the first bad key.

    Core keys are checked strictly: ``bundle_version`` (an integer, this leukedge's),
    ``classes`` (unique non-empty strings), ``model`` (``file``, a listed ``.onnx`` or
    ``.tflite`` file; ``format``, ``output``, ``outputs``, ``routes``), ``preprocess`` (known keys,
    modes, ``size`` 16..1024, finite ``scale`` and ``offset``), ``uncertain_threshold``
    (0..1), ``ood`` (``lab_mean``/``lab_std`` three numbers, ``max_z`` in (0, 10]),
    ``files`` (relative paths inside the bundle -> SHA-256 hex), ``inputs``. Other keys
    are allowed; the sections in ``OWNED_SECTIONS`` must be objects.
    """
    where = Path(where)
    c = _Checker(where)
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: the manifest must be a JSON object; {_FIX}")
    m = manifest
    for key in REQUIRED:
        if key not in m:
            c.fail(key, "is missing")
    version = m.get("bundle_version", BUNDLE_VERSION)
    if not _integer(version) or version < 1:
        c.fail("bundle_version", f"must be a positive integer, got {version!r}")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"{where}: bundle version {version} is newer than this leukedge "
            f"understands ({BUNDLE_VERSION}); upgrade leukedge"
        )
    c.string(m, "name", "name")

    classes = m["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        c.fail("classes", f"must be a list of at least 2 class names, got {classes!r}")
    if not all(isinstance(x, str) and x.strip() for x in classes):
        c.fail("classes", f"must all be non-empty strings, got {classes!r}")
    if len(set(classes)) != len(classes):
        c.fail("classes", f"must be unique, got {classes!r}")

    files = c.object(m, "files", required=True)
    if not files:
        c.fail("files", "must list the bundle's files")
    bundle = where.parent
    for name, digest in files.items():
        bundle_file(bundle, name, where)
        if name in (MANIFEST, SIGNATURE):
            c.fail("files", f"must not list {name} itself")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            c.fail(f"files[{name!r}]", f"must be a SHA-256 (64 lowercase hex), got {digest!r}")

    model = c.object(m, "model", required=True)
    c.string(model, "file", "model.file", required=True)
    bundle_file(bundle, model["file"], where)
    if model["file"] not in files:
        c.fail("model.file", f"{model['file']!r} is not listed in files")
    suffix = PurePosixPath(model["file"]).suffix.lower()
    if suffix not in MODEL_FORMATS:
        c.fail("model.file", f"must be a .onnx or .tflite file, got {model['file']!r}")
    c.string(model, "format", "model.format", choices=(MODEL_FORMATS[suffix],))
    c.string(model, "output", "model.output", choices=MODEL_OUTPUTS)
    outputs = c.object(model, "outputs")
    for key, value in (outputs or {}).items():
        if not isinstance(value, str) or not value:
            c.fail(f"model.outputs.{key}", f"must name a model output, got {value!r}")
    if isinstance(model.get("input"), list):  # a multi-input model: one entry per input
        for i, entry in enumerate(model["input"]):
            if not isinstance(entry, dict):
                c.fail(f"model.input[{i}]", f"must be an object, got {type(entry).__name__}")
    else:
        c.object(model, "input")
    if model.get("quantization") is not None:  # null: an fp32 model file
        c.object(model, "quantization")
    if "routes" in model:  # other files of the same network, per CPU (``routes``)
        from .routes import parse_routes

        parse_routes(m, str(where))

    pre = c.object(m, "preprocess", required=True)
    if unknown := sorted(set(pre) - set(Preprocess.__dataclass_fields__)):
        c.fail("preprocess", f"has unknown key(s) {unknown}")
    c.string(pre, "input_mode", "preprocess.input_mode", INPUT_MODES, required=True)
    c.string(pre, "segmentation", "preprocess.segmentation", SEGMENTATION_MODES)
    c.number(pre, "size", "preprocess.size", *PREPROCESS_SIZES, required=True, integer=True)
    c.string(pre, "layout", "preprocess.layout", ("NCHW", "NHWC"), required=True)
    c.number(pre, "scale", "preprocess.scale", -1e3, 1e3, required=True)
    if pre["scale"] == 0:
        c.fail("preprocess.scale", "must not be 0")
    c.number(pre, "offset", "preprocess.offset", -1e3, 1e3, required=True)
    c.string(pre, "white_point", "preprocess.white_point", WHITE_POINTS)

    c.number(m, "uncertain_threshold", "uncertain_threshold", 0.0, 1.0)
    inputs = m.get("inputs", ["field"])
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        c.fail("inputs", f"must be a non-empty list of input names, got {inputs!r}")
    c.string(m, "data_manifest", "data_manifest")
    if "data_manifest_sha256" in m and not (
        isinstance(m["data_manifest_sha256"], str) and _SHA256.fullmatch(m["data_manifest_sha256"])
    ):
        c.fail("data_manifest_sha256", "must be a SHA-256 (64 lowercase hex)")

    ood = c.object(m, "ood")
    if ood is not None:
        for key, lo, hi in (("lab_mean", 0.0, 255.0), ("lab_std", 0.0, 64.0)):
            v = ood.get(key)
            if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)) or not all(
                lo <= x <= hi for x in v
            ):
                c.fail(f"ood.{key}", f"must be 3 numbers in {lo:g}..{hi:g}, got {v!r}")
        c.number(ood, "max_z", "ood.max_z", 1e-6, MAX_OOD_Z)
        c.number(ood, "n", "ood.n", 1, 10**9, integer=True)
    for key in OWNED_SECTIONS:
        c.object(m, key)


def verify_bundle(bundle: str | Path, manifest: dict) -> None:
    """Check every file's SHA-256 against the manifest; ``BundleError`` names the first mismatch."""
    bundle = Path(bundle)
    if bundle.name == MANIFEST:
        bundle = bundle.parent
    for name, expected in manifest["files"].items():
        path = bundle_file(bundle, name)
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        found = sha256_file(path)
        if found != expected:
            raise BundleError(
                f"{path}: SHA-256 mismatch (manifest {expected[:12]}..., file {found[:12]}...); "
                "the bundle was altered or damaged, refusing to load it"
            )


def write_manifest(bundle: str | Path, manifest: dict) -> Path:
    """Write ``leukedge.json``; ``files`` gets the SHA-256 of every other file in ``bundle``.

    A signature of the previous manifest no longer matches, so it is removed: sign the
    bundle again (``leukedge bundle sign``).
    """
    bundle = Path(bundle)
    (bundle / SIGNATURE).unlink(missing_ok=True)
    files = {
        p.relative_to(bundle).as_posix(): sha256_file(p)
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    }
    out = {"bundle_version": BUNDLE_VERSION, **manifest, "files": files}
    path = bundle / MANIFEST
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def class_names(value: object) -> list[str] | None:
    """Class names from model metadata: a JSON list, or a ``{index: name}`` dict as JSON or
    as Python text (Ultralytics writes both); None when ``value`` is neither."""
    if isinstance(value, (bytes, str)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if isinstance(value, dict):
        try:
            value = [value[k] for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            return None
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    return None


def _tflite_class_names(path: Path) -> list[str] | None:
    """The ``names`` in a ``.tflite`` file's "leukedge" metadata, if it has any."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # tflite-runtime only: no flatbuffer schema to read it with
        return None
    try:
        model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            if meta.Name() == b"leukedge":
                data = model.Buffers(meta.Buffer()).DataAsNumpy()
                return class_names(json.loads(bytes(data)).get("names"))
    except Exception:  # a damaged flatbuffer: the runtime already loaded it, names unknown
        return None
    return None


def check_model_file(model) -> None:
    """Run a loaded ``Model`` once on a blank field before any real one: ``BundleError``
    naming the manifest when the model file does not take the manifest's preprocessing,
    its output width or its own class names (ONNX ``names`` metadata, TFLite "leukedge"
    metadata) differ from ``classes``, or "probabilities" are not probabilities."""
    where = model.bundle / MANIFEST
    file = getattr(model, "model_file", None) or model.bundle / model.manifest["model"]["file"]
    classes = list(model.classes)
    names = class_names((getattr(model.backend, "metadata", None) or {}).get("names"))
    if names is None and file.suffix == ".tflite":
        names = _tflite_class_names(file)
    if names is not None and names != classes:
        raise BundleError(
            f"{where}: classes {classes} differ from the model file's own {names} "
            f"({file.name}); {_FIX}"
        )
    size = model.preprocess.size
    blank = np.full((size, size, 3), 200, np.uint8)
    mask = np.zeros((size, size), bool)
    batches = [prepare(blank, spec, mask)[None] for spec in model.input_specs]
    try:
        probs = model.outputs(batches[0] if len(batches) == 1 else batches)["probabilities"]
    except BundleError:
        raise
    except Exception as exc:  # the runtimes raise their own types for a shape mismatch
        raise BundleError(
            f"{where}: {file.name} does not take the manifest's preprocessing (size {size}, "
            f"layout {model.preprocess.layout}, inputs {len(batches)}): {exc}; {_FIX}"
        ) from exc
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise BundleError(
            f"{where}: {file.name} gives {probs.shape[-1]} scores for {len(classes)} classes; "
            f"{_FIX}"
        )
    if model.output == "probabilities" and not (
        np.isfinite(probs).all()
        and probs.min() >= -1e-3
        and probs.max() <= 1 + 1e-3
        and abs(probs.sum() - 1) < 1e-2
    ):
        raise BundleError(
            f"{where}: model.output says probabilities but {file.name} gives "
            f'{np.round(probs[0], 3).tolist()}; set model.output to "logits" or {_FIX}'
        )
