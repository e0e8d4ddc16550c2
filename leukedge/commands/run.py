"""``leukedge run``: the station on a source; each field's result out, slide calls at the end."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import typer

from ..console import err_console
from . import fail


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; else since leukedge was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        from .. import IMPORTED_AT

        return time.perf_counter() - IMPORTED_AT


class _Notes(logging.Handler):
    """Library diagnostics (skipped files, unreadable entries, slide ends) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]note:[/yellow] {record.getMessage()}", markup=True)


def run(
    source: str = typer.Option(
        None,
        "--source",
        "-s",
        help="picamera2, usb:N, folder:DIR (a subfolder per slide), video:FILE, "
        "image paths/globs, or synthetic.",
    ),
    slide: str = typer.Option(
        None,
        "--slide",
        help="Slide of fields without a slide folder [default: the open slide of the last "
        "run, else a new one from the config's pattern]. An open slide is continued.",
    ),
    reopen: bool = typer.Option(False, "--reopen", help="Add fields to an ended --slide."),
    model: str = typer.Option(
        None, "--model", "-m", help="'default' (shipped) or a bundle folder."
    ),
    backend: str = typer.Option(None, help="auto, onnxruntime or litert."),
    threads: int = typer.Option(None, help="Inference threads (1 to twice the CPU cores)."),
    workers: int = typer.Option(
        None,
        "--workers",
        help="Files (folder, paths): processes that gate, segment and classify the fields "
        "read ahead, 0 to the CPU cores; 0: none [default: one per core where there are two "
        "or more].",
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="Station TOML file; options given here override it."
    ),
    results_dir: Path = typer.Option(None, "--results-dir", help="Results folder (SQLite log)."),
    json_lines: bool = typer.Option(
        False, "--json-lines", help="One JSON object per field on stdout."
    ),
    save_frames: Path = typer.Option(
        None, "--save-frames", help="Also save each camera/video frame as PNG under DIR/SLIDE/."
    ),
    once: bool = typer.Option(
        False, "--once", help="Hot folder: process what is there, then stop."
    ),
    batch: int = typer.Option(
        16,
        "--batch",
        min=1,
        help="Files (folder, paths): fields per model call and per commit, read ahead on "
        "a second thread; 1: one at a time.",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Report cold start and per-stage timings."
    ),
) -> None:
    """Classify fields from a source into slides. A finite source ends its slide with a
    stored call; Ctrl-C or SIGTERM stops and leaves the slide open for the next run."""
    from ..edge.config import ConfigError
    from ..edge.results_log import ResultsError, SlideError
    from ..edge.sources import open_source
    from ..edge.station import Station
    from .results import print_slide

    if reopen and not slide:
        fail("--reopen needs --slide: the ended slide to add fields to")
    try:
        cfg = _settings(config, source=source, backend=backend, threads=threads, model=model,
                        workers=workers, results_dir=results_dir and str(results_dir))  # fmt: skip
        once_opt = {"once": True} if once and cfg.source.startswith("folder:") else {}
        src = open_source(cfg.source, **{**cfg.options_for(), **once_opt})
        station = Station.from_config(cfg, bool(config), frames_dir=save_frames, batch=batch)
        if reopen:
            station.open_slide(slide, reopen=True)
    except (ConfigError, ResultsError, SlideError, ValueError) as exc:
        fail(f"refused: {exc}")
    err_console.print(f"model {station.model.name} ({station.model.route.file}: "
                      f"{station.model.route.why}) on {station.model.backend.name}, "
                      f"source {cfg.source}, results {station.log.path}",
                      markup=False, highlight=False)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: src.stop())
    slides, problem = [], None

    def on_result(logged) -> None:
        _report(logged, json_lines, verbose, not slides)
        if logged.slide not in slides:
            slides.append(logged.slide)

    with _notes(), station:  # the worker processes end with the run
        try:
            station.run(src, slide_id=slide, on_result=on_result,
                        on_slide_end=lambda s, _: print_slide(station.slide(s)))  # fmt: skip
        except KeyboardInterrupt:
            err_console.print("interrupted: the slide stays open; run again to continue it")
        except (ResultsError, SlideError) as exc:
            problem = str(exc)
    _print_open(station, slides)
    if problem:
        fail(problem)
    if src.failed:
        raise typer.Exit(1)


@contextmanager
def _notes():
    """Show the library's diagnostics (skipped files, unreadable entries) on stderr."""
    handler = _Notes()
    logger = logging.getLogger("leukedge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _print_open(station, slides: list[str]) -> None:
    """Print the slides that stay open (ended ones were printed as they ended)."""
    from ..edge.results_log import ResultsError
    from .results import print_slide

    for slide_id in slides:
        try:
            record = station.slide(slide_id)
        except ResultsError:
            return  # the error itself is printed next
        if record["slide"]["state"] == "open":
            print_slide(record)


def _settings(config: Path | None, **overrides):
    from ..edge.config import StationConfig, load_config

    cfg = load_config(config) if config else StationConfig()
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def _report(logged, json_lines: bool, verbose: bool, first: bool) -> None:
    res = logged.result
    if verbose and first:
        err_console.print(f"cold start: {process_age_s():.2f} s to the first result")
    if json_lines:
        print(json.dumps({"slide": logged.slide, "id": logged.id, **res.to_json()}), flush=True)
    if res.error is not None:
        err_console.print(f"[red]error[/red] {res.error}")
        return
    flag = f" [yellow]uncertain ({', '.join(res.reasons)})[/yellow]" if res.uncertain else ""
    timing = " ".join(f"{k} {v:.1f} ms" for k, v in res.timings_ms.items()) if verbose else ""
    err_console.print(  # no highlighting: its regexes cost more than the line (per field)
        f"{logged.slide} {res.source}: {res.label} {res.confidence:.2f}, "
        f"{res.cell_count} cells{flag} {timing}",
        highlight=False,
    )
