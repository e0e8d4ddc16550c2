"""``leukedge doctor``: does this machine compute a bundle's model correctly?"""

from __future__ import annotations

import time

import typer
from rich.table import Table

from ..console import console
from . import print_error


def doctor(
    model: str = typer.Option(
        "default", "--model", "-m", help="'default', 'mobilenetv2' (shipped) or a bundle folder."
    ),
    backend: str = typer.Option("auto", help="auto, onnxruntime or litert."),
    threads: int = typer.Option(None, help="Inference threads (default: the runtime's)."),
) -> None:
    """Run a bundle's known-answer self-test and print it with the runtime versions, the CPU
    features and the model file and backend chosen. Exits 1 when the check fails."""
    from ..edge.bundle import BundleError
    from ..edge.model import load_model, resolve_bundle
    from ..edge.selftest import SelfTestError, failure_message, run_self_test

    bundle = resolve_bundle(model)
    table = Table.grid(padding=(0, 2))
    for row in (*_machine_rows(), ("bundle", str(bundle))):
        table.add_row(*row)
    failed = None
    t0 = time.perf_counter()
    try:
        net = load_model(bundle, backend, threads, self_test=False)
        load_ms = (time.perf_counter() - t0) * 1e3
        result = run_self_test(net)
    except BundleError as exc:
        failed = exc
    else:
        for row in _model_rows(net, threads, load_ms, result):
            table.add_row(*row)
        if result is not None and not result.passed:
            failed = SelfTestError(failure_message(net, result))
    console.print(table)
    if failed is not None:
        print_error(failed)
        raise typer.Exit(1)


def _machine_rows() -> list[tuple[str, str]]:
    from ..edge.selftest import cpu_info, runtime_versions

    cpu = cpu_info()
    return [
        ("machine", f"{cpu['machine']}, {cpu['cpu']}"),
        ("CPU features", " ".join(cpu["features"]) or "unknown"),
        ("runtimes", ", ".join(f"{k} {v}" for k, v in runtime_versions().items())),
    ]


def _model_rows(net, threads: int | None, load_ms: float, result) -> list[tuple[str, str]]:
    """The model, its route (file, runtime, threads), the reference, the check, timings."""
    from ..edge.selftest import backend_version

    rows = [
        ("model", f"{net.name}, every SHA-256 verified"),
        (
            "route",
            f"{net.route.file} on {backend_version(net.backend.name)} "
            f"({net.backend.name} backend), threads {threads or 'default'}; {net.route.why}",
        ),
    ]
    timing = f"load {load_ms:.0f} ms (verify + open)"
    if result is None:
        rows.append(
            (
                "self-test",
                "none in this bundle: the arithmetic is unchecked; add one: "
                f"leukedge bundle add-self-test {net.bundle}",
            )
        )
        return [*rows, ("timings", timing)]
    reference = net.manifest["self_test"].get("reference", {})
    runtime = ", ".join(f"{k} {v}" for k, v in reference.get("runtime", {}).items())
    made = ", ".join(str(reference.get(k, "?")) for k in ("machine", "cpu", "backend"))
    verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
    return [
        *rows,
        ("reference", f"{made}; {runtime}"),
        ("self-test", f"{verdict}: {result.summary()}"),
        ("timings", f"{timing}, self-test {result.ms:.1f} ms ({result.n} inputs)"),
    ]
