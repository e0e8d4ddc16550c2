"""``leukedge bundle``: maintain model bundles after export (trust figures, self-test, signature).

Each sub-command is a thin verb over a library function that rewrites the bundle's
manifest (and its SHA-256s) in place.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail

app = typer.Typer(help="Maintain model bundles: trust figures, known-answer self-test, signature.")


@app.command("add-trust")
def add_trust(
    bundle: str = typer.Argument(..., help="Bundle folder, its leukedge.json, or a shipped name."),
    split_csv: Path = typer.Option(
        ...,
        "--split-csv",
        help="The split the bundle's model was trained on (its SHA-256 is "
        "checked against the manifest's data_manifest_sha256).",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="The data set's folder, when it has moved since the split was made."
    ),
    percentile: float = typer.Option(
        99.5, "--percentile", help="Percentile of the held-out feature distances flagged above."
    ),
    target: float = typer.Option(
        0.995, "--target", help="Accuracy the confident validation fields must reach."
    ),
    diagram: Path | None = typer.Option(
        None, "--diagram", help="Write the reliability diagram (before/after) to this PNG."
    ),
) -> None:
    """Add the feature output, the feature statistics (out-of-distribution score) and the
    temperature calibration to a bundle, from its training split; re-stamps the SHA-256s."""
    from ..export import trust

    report = trust.add_trust(bundle, split_csv, data, percentile=percentile, target=target)
    lower = report["lower_magnification"]
    table = Table(title=f"trust figures of {report['bundle']} (validation, {report['val_n']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("feature dimensions", str(report["feature_dim"])),
        ("feature distance threshold", f"{report['feature_threshold']:.2f}"),
        ("validation fields flagged by it", f"{report['val_flagged']:.2%}"),
        ("training fields flagged, out of fold", f"{report['train_out_of_fold_flagged']:.2%}"),
        (f"temperature (fitted on {report['calibration_n']})", f"{report['temperature']:.3f}"),
        ("ECE before / after", f"{report['ece_before']:.4f} / {report['ece_after']:.4f}"),
        (
            "clean: ECE before / after",
            f"{report['ece_clean_before']:.4f} / {report['ece_clean_after']:.4f}",
        ),  # fmt: skip
        (f"low-confidence threshold (target {target:.1%})", f"{report['threshold']:.3f}"),
        (
            "fields under it (all / clean)",
            f"{report['calibration_under_threshold']:.2%} / {report['val_under_threshold']:.2%}",
        ),  # fmt: skip
        (
            "lower magnification: training fields flagged, out of fold / validation",
            f"{lower['train_held_out_flagged']:.2%} / {lower['val_flagged']:.2%}",
        ),
        ("half-magnification mosaics passed", f"{lower['mosaics_passed']:.2%}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if diagram is not None:
        path = trust.plot_reliability(report, diagram, Path(report["bundle"]).parent.name)
        err_console.print(f"reliability diagram: {path}")


@app.command("keygen")
def keygen(
    out: Path = typer.Argument(
        ..., help="Private key file to write (PEM); the public key goes beside it as *.pub.pem."
    ),
) -> None:
    """Make an Ed25519 key pair for signing bundles. Keep the private key off the station;
    copy the public key to it and name it in station.toml as trusted_key."""
    from ..edge.signature import SignatureError, generate_keypair

    public = out.with_name(f"{out.stem}.pub.pem")
    try:
        generate_keypair(out, public)
    except (SignatureError, OSError) as exc:
        fail(str(exc))
    print(f"private key (keep it secret, off the station): {out}")
    print(f"public key (station.toml trusted_key): {public}")


@app.command("sign")
def sign(
    bundle: str = typer.Argument(..., help="Bundle folder, its leukedge.json, or a shipped name."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (PEM), from bundle keygen."),
) -> None:
    """Sign an intact bundle: its manifest, which lists the SHA-256 of every file, gets a
    signature beside it (leukedge.json.sig). Rewriting the manifest removes it."""
    from ..edge.bundle import BundleError, read_manifest, verify_bundle
    from ..edge.model import resolve_bundle
    from ..edge.signature import sign_bundle

    try:
        folder = resolve_bundle(bundle)
        verify_bundle(folder, read_manifest(folder))
        print(sign_bundle(folder, key))
    except (BundleError, OSError) as exc:
        fail(str(exc))


@app.command("verify")
def verify(
    bundle: str = typer.Argument(..., help="Bundle folder, its leukedge.json, or a shipped name."),
    key: Path = typer.Option(..., "--key", help="Trusted Ed25519 public key (PEM)."),
) -> None:
    """Check a bundle as a station with this trusted key would: signature, manifest, SHA-256s."""
    from ..edge.bundle import BundleError, read_manifest, verify_bundle
    from ..edge.model import resolve_bundle

    try:
        folder = resolve_bundle(bundle)
        verify_bundle(folder, read_manifest(folder, trusted_key=key))
    except (BundleError, OSError) as exc:
        fail(str(exc))
    print(f"{folder}: signed with {key}, every file matches its SHA-256")


@app.command("add-self-test")
def add_self_test(
    bundle: str = typer.Argument(..., help="Bundle folder, its leukedge.json, or a shipped name."),
    tolerance: float = typer.Option(
        None,
        "--tolerance",
        help="Largest difference of a probability allowed. Default: the measured spread of "
        "correct runtimes with a margin (leukedge.export.selftest.PROBABILITY_TOLERANCE).",
    ),
    backend: str = typer.Option("auto", help="auto, onnxruntime or litert."),
) -> None:
    """Write the bundle's known-answer self-test (selftest.npz: fixed inputs and the outputs
    its model gives on this machine, the reference) and its manifest section; re-stamps the
    SHA-256s. Run it on the reference machine after any change to the model file; running
    it again replaces the set."""
    from ..export import selftest

    section = selftest.add_self_test(bundle, tolerance, backend=backend)
    reference = section["reference"]
    bounds = ", ".join(f"{k} {v:.3g}" for k, v in section["tolerance"].items())
    print(f"{section['file']}: {section['n']} known answers ({', '.join(section['cases'])})")
    print(f"tolerance: {bounds}")
    print(f"reference: {reference['machine']}, {reference['cpu']}, {reference['backend']}")


@app.command("add-route")
def add_route(
    bundle: str = typer.Argument(..., help="Bundle folder, its leukedge.json, or a shipped name."),
) -> None:
    """Add the x86-64 routes of an S8S8 ONNX bundle: the same network with uint8 activations
    (the same quantized values), uint8 pixels in 2x2 patches instead of the float input:
    model-u8s8.onnx for CPUs with VNNI, model-u8u8.onnx (uint8 weights too) for the others;
    each checked against model.file on the known answers; x86-64 machines then run the one
    for their CPU. Re-stamps the SHA-256s. Run it again after any change to the model file
    (add-trust first)."""
    from ..export.routes import add_onnx_routes

    for entry in add_onnx_routes(bundle):
        needs = " + ".join(entry["machines"] + entry.get("features", []))
        print(f"{entry['file']}: route for {needs} ({entry['why']})")
