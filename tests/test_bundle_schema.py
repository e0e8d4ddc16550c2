"""Issue 24 item 8: the manifest is checked (types, ranges, paths inside the bundle, classes
against the model file) before anything is loaded; optional Ed25519 bundle signatures."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from leukedge.cli import app
from leukedge.edge import bundle as bundle_mod
from leukedge.edge.bundle import MANIFEST, SIGNATURE, BundleError, read_manifest, write_manifest
from leukedge.edge.model import load_model, resolve_bundle


def _copy(name: str, dest):
    """A copy of a shipped bundle, unsigned, whatever its owners add to it."""
    shutil.copytree(resolve_bundle(name), dest)
    (dest / SIGNATURE).unlink(missing_ok=True)
    return dest


@pytest.fixture
def onnx_bundle(tmp_path):
    return _copy("default", tmp_path / "default")


@pytest.fixture
def tflite_bundle(tmp_path):
    return _copy("mobilenetv2", tmp_path / "mobilenetv2")


def _edit(bundle, change) -> None:
    """Rewrite the manifest as an attacker or a slip would: by hand, SHA-256s untouched."""
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(m):
        for k in keys[:-1]:
            m = m[k]
        if value is _DELETE:
            del m[keys[-1]]
        else:
            m[keys[-1]] = value

    return change


_DELETE = object()
OOD = {"lab_mean": [222.5, 130.4, 116.8], "lab_std": [11.3, 2.9, 7.8], "max_z": 4.0, "n": 300}

SCHEMA_CASES = {
    "threshold below 0": (
        _set("uncertain_threshold", -5),
        r"uncertain_threshold must be a number in 0\.0\.\.1\.0",
    ),
    "threshold a string": (
        _set("uncertain_threshold", "0.6"),
        "uncertain_threshold must be a number",
    ),
    "ood max_z huge": (_set("ood", {**OOD, "max_z": 1e9}), r"ood\.max_z must be a number in"),
    "ood std huge": (
        _set("ood", {**OOD, "lab_std": [1e9, 1, 1]}),
        r"ood\.lab_std must be 3 numbers",
    ),
    "version a string": (_set("bundle_version", "2"), "bundle_version must be a positive integer"),
    "version newer": (_set("bundle_version", 99), "newer than this leukedge understands"),
    "files a list": (_set("files", ["model.onnx"]), "files must be an object"),
    "model null": (_set("model", None), "model must be an object"),
    "model.file missing": (_set("model", "file", _DELETE), r"model\.file is missing"),
    "model.file absolute": (_set("model", "file", "/etc/passwd"), "not a plain path inside"),
    "files outside": (_set("files", "../x.onnx", "0" * 64), "not a plain path inside"),
    "model file unlisted": (_set("model", "file", "other.onnx"), "is not listed in files"),
    "preprocess size huge": (
        _set("preprocess", "size", 10**9),
        r"preprocess\.size must be an integer in 16\.\.1024",
    ),
    "preprocess size float": (
        _set("preprocess", "size", 224.0),
        r"preprocess\.size must be an integer",
    ),
    "preprocess unknown key": (_set("preprocess", "sise", 224), r"unknown key\(s\) \['sise'\]"),
    "preprocess bad mode": (
        _set("preprocess", "input_mode", "raw"),
        r"preprocess\.input_mode must be one of",
    ),
    "classes three duplicates": (
        _set("classes", ["Benign", "Pre", "Pre", "Pro"]),
        "classes must be unique",
    ),
    "classes empty name": (_set("classes", ["Benign", "", "Pre", "Pro"]), "non-empty strings"),
    "classes not a list": (_set("classes", "Benign,Early"), "classes must be a list"),
    "digest not hex": (_set("files", "model.onnx", "abc"), "must be a SHA-256"),
    "trust not an object": (_set("trust", [1, 2]), "trust must be an object"),
    "self_test not an object": (_set("self_test", "yes"), "self_test must be an object"),
    "output unknown": (_set("model", "output", "scores"), r"model\.output must be one of"),
    "format mismatch": (_set("model", "format", "tflite"), r"model\.format must be one of onnx"),
    "input entry not an object": (_set("model", "input", [{}, 3]), r"model\.input\[1\] must be"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_bad_manifest_is_refused_before_any_file_is_read(onnx_bundle, monkeypatch, case):
    change, match = SCHEMA_CASES[case]
    _edit(onnx_bundle, change)
    hashed = []
    monkeypatch.setattr(bundle_mod, "sha256_file", lambda p, *a: hashed.append(p) or "")
    with pytest.raises(BundleError, match=match) as info:
        load_model(onnx_bundle, self_test=False)
    message = str(info.value)
    assert message.startswith(str(onnx_bundle / MANIFEST)) and "\n" not in message
    assert hashed == []  # nothing the manifest names was read


def test_unparsable_manifests_are_refused(onnx_bundle):
    path = onnx_bundle / MANIFEST
    text = path.read_text()
    for bad, match in [
        (text.replace('"classes"', '"classes": [], "classes"', 1), "duplicate key"),
        (text.replace('"uncertain_threshold": 0.6', '"uncertain_threshold": NaN'), "not a number"),
        ("[1, 2]", "must be a JSON object"),
        ("{", "unreadable manifest"),
    ]:
        path.write_text(bad)
        with pytest.raises(BundleError, match=match):
            read_manifest(onnx_bundle)


def test_model_outside_the_bundle_with_a_matching_hash_is_refused(onnx_bundle, tmp_path):
    """A ``..`` entry once hashed and loaded a model from outside the bundle."""
    outside = tmp_path / "evil.onnx"
    shutil.copy(onnx_bundle / "model.onnx", outside)
    digest = bundle_mod.sha256_file(outside)

    def escape(m):
        m["model"]["file"] = "../evil.onnx"
        m["files"]["../evil.onnx"] = digest

    _edit(onnx_bundle, escape)
    with pytest.raises(BundleError, match="not a plain path inside the bundle"):
        load_model(onnx_bundle, self_test=False)


def test_symlink_leading_outside_the_bundle_is_refused(onnx_bundle, tmp_path):
    outside = tmp_path / "evil.onnx"
    shutil.move(onnx_bundle / "model.onnx", outside)
    (onnx_bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"leads outside the bundle folder \(a link\)"):
        load_model(onnx_bundle, self_test=False)


@pytest.mark.parametrize("fixture", ["onnx_bundle", "tflite_bundle"])
def test_swapped_class_order_is_caught_by_the_model_files_own_names(request, fixture):
    """Swapping the class order made a Pro field read "Benign 1.00"."""
    folder = request.getfixturevalue(fixture)
    _edit(folder, lambda m: m.__setitem__("classes", m["classes"][::-1]))
    with pytest.raises(BundleError, match="differ from the model file's own"):
        load_model(folder, self_test=False)


def test_class_count_and_input_size_are_checked_against_the_model_at_load(tmp_path):
    """3 classes for a 4-output model, or a size the model does not take, failed every
    field with exit 0; now load_model refuses the bundle (a model without class names)."""
    from conftest import write_tiny_bundle

    folder = write_tiny_bundle(tmp_path / "tiny", size=32)
    assert load_model(folder, self_test=False).classes
    _edit(folder, lambda m: m.__setitem__("classes", m["classes"][:3]))
    with pytest.raises(BundleError, match="4 .*3 classes"):
        load_model(folder, self_test=False)
    folder = write_tiny_bundle(tmp_path / "tiny2", size=32)
    _edit(folder, _set("preprocess", "size", 64))
    with pytest.raises(BundleError, match="does not take the manifest's preprocessing"):
        load_model(folder, self_test=False)


def test_shipped_bundles_pass_the_schema():
    for name in ("default", "mobilenetv2"):
        model = load_model(name, self_test=False)
        assert len(model.classes) == 4


# -- signatures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pytest.importorskip("cryptography")
    from leukedge.edge.signature import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    pairs = {}
    for who in ("ours", "theirs"):
        generate_keypair(folder / f"{who}.pem", folder / f"{who}.pub.pem")
        pairs[who] = (folder / f"{who}.pem", folder / f"{who}.pub.pem")
    assert oct((folder / "ours.pem").stat().st_mode & 0o777) == "0o600"
    return pairs


def test_signed_bundle_loads_and_any_change_is_refused(onnx_bundle, keys):
    from leukedge.edge.signature import SignatureError, sign_bundle

    private, public = keys["ours"]
    with pytest.raises(SignatureError, match="unsigned bundle .* leukedge bundle sign"):
        load_model(onnx_bundle, trusted_key=public, self_test=False)
    assert sign_bundle(onnx_bundle, private) == onnx_bundle / SIGNATURE
    assert load_model(onnx_bundle, trusted_key=public, self_test=False).classes
    load_model(onnx_bundle, self_test=False)  # no key configured: signature not needed

    _, other = keys["theirs"]
    with pytest.raises(SignatureError, match="does not match the trusted key"):
        load_model(onnx_bundle, trusted_key=other, self_test=False)

    path = onnx_bundle / MANIFEST
    path.write_bytes(path.read_bytes().replace(b"0.6", b"0.1", 1))
    with pytest.raises(SignatureError, match="does not match the trusted key"):
        load_model(onnx_bundle, trusted_key=public, self_test=False)

    (onnx_bundle / SIGNATURE).write_text("not base64 at all!\n")
    with pytest.raises(SignatureError, match="does not match"):
        read_manifest(onnx_bundle, trusted_key=public)


def test_rewriting_a_manifest_removes_its_stale_signature(onnx_bundle, keys):
    from leukedge.edge.signature import sign_bundle

    sign_bundle(onnx_bundle, keys["ours"][0])
    manifest = read_manifest(onnx_bundle)
    write_manifest(onnx_bundle, {k: v for k, v in manifest.items() if k != "files"})
    assert not (onnx_bundle / SIGNATURE).exists()
    assert SIGNATURE not in read_manifest(onnx_bundle)["files"]


def test_bad_keys_are_one_line_errors(onnx_bundle, keys, tmp_path):
    from leukedge.edge.signature import SignatureError, generate_keypair, sign_bundle

    public = keys["ours"][1]
    with pytest.raises(SignatureError, match="not an unencrypted PEM private key"):
        sign_bundle(onnx_bundle, public)
    with pytest.raises(SignatureError, match="cannot read the public key"):
        read_manifest(onnx_bundle, trusted_key=tmp_path / "none.pem")
    with pytest.raises(SignatureError, match="already exists"):
        generate_keypair(keys["ours"][0], tmp_path / "x.pub.pem")


def test_bundle_cli_keygen_sign_verify(onnx_bundle, tmp_path):
    pytest.importorskip("cryptography")
    runner = CliRunner()
    key = tmp_path / "k.pem"
    res = runner.invoke(app, ["bundle", "keygen", str(key)])
    assert res.exit_code == 0 and str(tmp_path / "k.pub.pem") in res.output
    res = runner.invoke(
        app, ["bundle", "verify", str(onnx_bundle), "--key", str(tmp_path / "k.pub.pem")]
    )
    assert res.exit_code == 2 and "unsigned bundle" in res.output
    res = runner.invoke(app, ["bundle", "sign", str(onnx_bundle), "--key", str(key)])
    assert res.exit_code == 0 and res.output.strip().endswith(SIGNATURE)
    res = runner.invoke(
        app, ["bundle", "verify", str(onnx_bundle), "--key", str(tmp_path / "k.pub.pem")]
    )
    assert res.exit_code == 0 and "signed with" in res.output
    (onnx_bundle / "model.onnx").write_bytes(b"tampered")
    res = runner.invoke(app, ["bundle", "sign", str(onnx_bundle), "--key", str(key)])
    assert res.exit_code == 2 and "SHA-256 mismatch" in res.output and "Traceback" not in res.output


def test_station_config_trusted_key_is_a_path_from_the_config_folder(tmp_path, keys):
    from leukedge.edge.config import load_config

    shutil.copy(keys["ours"][1], tmp_path / "station.pub.pem")
    (tmp_path / "station.toml").write_text('trusted_key = "station.pub.pem"\n')
    assert load_config(tmp_path / "station.toml").trusted_key == str(tmp_path / "station.pub.pem")
