"""Model bundles: a folder with model file(s) and a ``leukedge.json`` manifest.

The manifest names the classes in output order, the model file and its input,
the preprocessing, the uncertainty threshold, how the model was trained and
evaluated, and the SHA-256 of every file. A bundle whose files do not match is
refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "leukedge.json"
BUNDLE_VERSION = 1
REQUIRED = ("classes", "model", "preprocess", "files")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: str | Path) -> dict:
    """The manifest of a bundle folder (or a ``leukedge.json`` path), with required keys checked."""
    bundle = Path(bundle)
    path = bundle if bundle.name == MANIFEST else bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: no bundle manifest here")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from exc
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{path}: manifest lacks {', '.join(missing)}")
    if manifest.get("bundle_version", BUNDLE_VERSION) > BUNDLE_VERSION:
        raise BundleError(
            f"{path}: bundle version {manifest['bundle_version']} is newer than this leukedge "
            f"understands ({BUNDLE_VERSION}); upgrade leukedge"
        )
    return manifest


def verify_bundle(bundle: str | Path, manifest: dict) -> None:
    """Check every file's SHA-256 against the manifest; ``BundleError`` names the first mismatch."""
    bundle = Path(bundle)
    if bundle.name == MANIFEST:
        bundle = bundle.parent
    for name, expected in manifest["files"].items():
        path = bundle / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        found = sha256_file(path)
        if found != expected:
            raise BundleError(
                f"{path}: SHA-256 mismatch (manifest {expected[:12]}..., file {found[:12]}...); "
                "the bundle was altered or damaged, refusing to load it"
            )


def write_manifest(bundle: str | Path, manifest: dict) -> Path:
    """Write ``leukedge.json``; ``files`` gets the SHA-256 of every other file in ``bundle``."""
    bundle = Path(bundle)
    files = {
        p.relative_to(bundle).as_posix(): sha256_file(p)
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    out = {"bundle_version": BUNDLE_VERSION, **manifest, "files": files}
    path = bundle / MANIFEST
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path
