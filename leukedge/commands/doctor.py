"""``leukedge doctor``: does this machine compute a bundle's model correctly?"""

from __future__ import annotations

import time

import typer
from rich.table import Table

from ..console import console, err_console
from . import fail


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
    from ..edge.selftest import (
        backend_version,
        cpu_info,
        failure_message,
        run_self_test,
        runtime_versions,
    )

    try:
        bundle = resolve_bundle(model)
    except BundleError as exc:
        fail(str(exc))
    cpu = cpu_info()
    table = Table.grid(padding=(0, 2))
    table.add_row("machine", f"{cpu['machine']}, {cpu['cpu']}")
    table.add_row("CPU features", " ".join(cpu["features"]) or "unknown")
    table.add_row("runtimes", ", ".join(f"{k} {v}" for k, v in runtime_versions().items()))
    table.add_row("bundle", str(bundle))
    failed = None
    t0 = time.perf_counter()
    try:
        net = load_model(bundle, backend, threads, self_test=False)
        t1 = time.perf_counter()
        result = run_self_test(net)
    except BundleError as exc:
        failed = str(exc)
    else:
        table.add_row("model", f"{net.name}, every SHA-256 verified")
        table.add_row(
            "route",
            f"{net.manifest['model']['file']} on {backend_version(net.backend.name)} "
            f"({net.backend.name} backend), threads {threads or 'default'}",
        )
        timing = f"load {(t1 - t0) * 1e3:.0f} ms (verify + open)"
        if result is None:
            table.add_row("self-test", "none in this bundle: the arithmetic is unchecked; "
                          f"add one: leukedge bundle add-self-test {bundle}")  # fmt: skip
        else:
            reference = net.manifest["self_test"].get("reference", {})
            runtime = ", ".join(f"{k} {v}" for k, v in reference.get("runtime", {}).items())
            table.add_row(
                "reference",
                f"{reference.get('machine', '?')}, {reference.get('cpu', '?')}, "
                f"{reference.get('backend', '?')}; {runtime}",
            )
            timing += f", self-test {result.ms:.1f} ms ({result.n} inputs)"
            verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
            table.add_row("self-test", f"{verdict}: {result.summary()}")
            if not result.passed:
                failed = failure_message(net, result)
        table.add_row("timings", timing)
    console.print(table)
    if failed:
        err_console.print(f"[red]error:[/red] {failed}")
        raise typer.Exit(1)
