"""``leukedge run``: the station loop: frames in, per-field results logged, slide summary out."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import typer

from ..console import err_console


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; else since leukedge was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        from .. import IMPORTED_AT

        return time.perf_counter() - IMPORTED_AT


def _settings(config: Path | None, **overrides):
    from ..edge.config import StationConfig, load_config

    cfg = load_config(config) if config else StationConfig()
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"slide {summary['slide']}")
    table.add_column("class")
    table.add_column("fields", justify="right")
    table.add_column("confident", justify="right")
    for label, n in sorted(summary["counts"].items()):
        table.add_row(label, str(n), str(summary["confident_counts"].get(label, 0)))
    err_console.print(table)
    err_console.print(
        f"fields {summary['fields']}, uncertain {summary['uncertain']}, errors {summary['errors']}"
    )
    err_console.print(f"[bold]slide call:[/bold] {summary['explanation']}")
    err_console.print(f"[italic]{summary['notice']}[/italic]")


def run(
    source: str = typer.Option(
        None,
        "--source",
        "-s",
        help="picamera2, usb:N, folder:DIR, video:FILE, image paths/globs, or synthetic.",
    ),
    slide: str = typer.Option(
        None,
        "--slide",
        help="Slide id (default: from the config's pattern). An existing slide is continued.",
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="'default' (shipped) or a bundle folder."
    ),
    backend: str = typer.Option(None, help="auto, onnxruntime or litert."),
    threads: int = typer.Option(None, help="Inference threads."),
    config: Path = typer.Option(
        None, "--config", "-c", help="Station TOML file; options given here override it."
    ),
    results_dir: Path = typer.Option(None, "--results-dir", help="Results folder (SQLite log)."),
    json_lines: bool = typer.Option(
        False, "--json-lines", help="One JSON object per field on stdout."
    ),
    save_frames: Path = typer.Option(
        None, "--save-frames", help="Also save each camera/video frame as PNG here."
    ),
    once: bool = typer.Option(
        False, "--once", help="Hot folder: process what is there, then stop."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Report cold start and per-stage timings."
    ),
) -> None:
    """Classify fields from a source into a slide; Ctrl-C or SIGTERM ends it with a summary."""
    from ..edge.bundle import BundleError
    from ..edge.config import ConfigError
    from ..edge.model import load_model
    from ..edge.pipeline import FieldPipeline
    from ..edge.results_log import ResultsLog, default_results_dir
    from ..edge.slide import SlideTally
    from ..edge.sources import open_source

    try:
        cfg = _settings(
            config,
            source=source,
            backend=backend,
            threads=threads,
            model=model,
            results_dir=str(results_dir) if results_dir else None,
        )
        net = load_model(cfg.model or "default", cfg.backend, cfg.threads)
    except (ConfigError, BundleError, ValueError) as exc:
        err_console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    pipeline = FieldPipeline(net, threshold=cfg.uncertain_threshold if config else None)
    slide_id = slide or cfg.new_slide_id()
    log = ResultsLog(cfg.results_dir or default_results_dir())
    log.start_slide(slide_id, model_sha256=net.sha256, model=net.name, source=cfg.source)
    tally = SlideTally(slide_id)
    for row in log.results(slide_id):
        tally.add(row.get("label"), bool(row.get("uncertain")), row.get("error") is not None)
    options = dict(cfg.source_options)
    if once:
        options["once"] = True
    src = open_source(cfg.source, **options)
    frames_dir = save_frames or (
        Path(log.path).parent / "frames" / slide_id if cfg.save_frames else None
    )
    signal.signal(signal.SIGTERM, lambda *_: src.stop())
    err_console.print(
        f"slide [bold]{slide_id}[/bold]: model {net.name} on {net.backend.name}, "
        f"source {cfg.source}"
    )
    first = True
    try:
        with src:
            for frame in src:
                if not log.has(slide_id, frame.source_id, frame.sha256):
                    res = pipeline(frame)
                    if res.error is None:
                        log.log_result(slide_id, res.log_record())
                    else:
                        log.log_error(slide_id, res.source, res.error, res.image_sha256)
                    tally.add(res.label, res.uncertain, res.error is not None)
                    if frames_dir is not None and frame.data is None and frame.rgb is not None:
                        from ..edge.imageio import write_field

                        frames_dir.mkdir(parents=True, exist_ok=True)
                        write_field(frames_dir / f"{frame.sha256[:16]}.png", frame.rgb)
                    _report(res, json_lines, verbose)
                    if first and verbose:
                        err_console.print(
                            f"cold start: {process_age_s():.2f} s "
                            "from process start to first result"
                        )
                    first = False
                src.mark_done(frame)
    except KeyboardInterrupt:
        err_console.print("interrupted")
    finally:
        log.end_slide(slide_id)
    summary = tally.summary()
    _print_summary(summary)
    if src.failed:
        raise typer.Exit(1)


def _report(res, json_lines: bool, verbose: bool) -> None:
    if json_lines:
        print(json.dumps(res.to_json()), flush=True)
    if res.error is not None:
        err_console.print(f"[red]error[/red] {res.error}")
        return
    flag = f" [yellow]uncertain ({', '.join(res.reasons)})[/yellow]" if res.uncertain else ""
    timing = " ".join(f"{k} {v:.1f} ms" for k, v in res.timings_ms.items()) if verbose else ""
    err_console.print(
        f"{res.source}: {res.label} {res.confidence:.2f}, {res.cell_count} cells{flag} {timing}"
    )
