"""Ed25519 signatures of bundle manifests: a station that trusts a key loads only the
bundles signed with it.

The manifest lists the SHA-256 of every other file of the bundle, so signing its bytes
signs the whole bundle. The signature is stored beside it as ``leukedge.json.sig``
(base64 text, one line). Keys are PEM files: the private key (PKCS#8, kept off the
station) signs, the public key (SubjectPublicKeyInfo) goes into the station config as
``trusted_key``. The ``cryptography`` package (extra ``leukedge[sign]``) is imported
only here, and only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from .bundle import SIGNATURE, BundleError, manifest_path


class SignatureError(BundleError):
    """A bundle that is unsigned or not signed by the trusted key; or an unusable key."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SignatureError(
            "signed bundles need the cryptography package: pip install 'leukedge[sign]'"
        ) from exc
    return InvalidSignature, serialization, ed25519


def _load_key(path: str | Path, private: bool):
    _, serialization, ed25519 = _crypto()
    path = Path(path)
    kind = "private" if private else "public"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read the {kind} key ({exc.strerror or exc})") from exc
    try:
        if private:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(
            f"{path}: not an unencrypted PEM {kind} key; make one with leukedge bundle keygen"
        ) from exc
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise SignatureError(
            f"{path}: not an Ed25519 {kind} key; make one with leukedge bundle keygen"
        )
    return key


def verify_manifest(path: str | Path, data: bytes, trusted_key: str | Path) -> None:
    """Check that ``data`` (the bytes of the manifest at ``path``) is signed with the
    Ed25519 public key in the file ``trusted_key``; ``SignatureError`` otherwise."""
    invalid, _, _ = _crypto()
    key = _load_key(trusted_key, private=False)
    path = Path(path)
    sig_path = path.with_name(SIGNATURE)
    sign_hint = f"sign it with: leukedge bundle sign {path.parent} --key PRIVATE.pem"
    try:
        text = sig_path.read_bytes()[:4096]
    except FileNotFoundError:
        raise SignatureError(
            f"{path}: unsigned bundle (no {SIGNATURE}), but this station loads only bundles "
            f"signed for the trusted key {trusted_key}; {sign_hint}"
        ) from None
    except OSError as exc:
        raise SignatureError(f"{sig_path}: cannot read ({exc.strerror or exc})") from exc
    try:
        signature = base64.b64decode(text.strip(), validate=True)
        key.verify(signature, data)
    except (binascii.Error, ValueError, invalid) as exc:
        raise SignatureError(
            f"{path}: the signature in {SIGNATURE} does not match the trusted key "
            f"{trusted_key} (the bundle was altered, or signed with another key); refusing it"
        ) from exc


def sign_bundle(bundle: str | Path, private_key: str | Path) -> Path:
    """Sign a bundle's manifest with an Ed25519 private key file; returns the signature file."""
    path = manifest_path(bundle)
    if not path.is_file():
        raise BundleError(f"{path}: no bundle manifest here")
    key = _load_key(private_key, private=True)
    sig_path = path.with_name(SIGNATURE)
    sig_path.write_text(base64.b64encode(key.sign(path.read_bytes())).decode() + "\n")
    return sig_path


def generate_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair as PEM files; the private one readable by its owner only.
    Refuses (``SignatureError``) to overwrite an existing file."""
    _, serialization, ed25519 = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise SignatureError(f"{p}: already exists; choose another name or move it away")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
