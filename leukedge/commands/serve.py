"""``leukedge serve``: the station's web page (live view, slides, gallery, explanations,
reports) on a camera source."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from ..console import err_console
from . import fail


def serve(
    source: str = typer.Option(
        None, "--source", "-s", help="picamera2, usb:N, video:FILE or synthetic."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on; any but 127.0.0.1/::1 needs a token."
    ),
    port: int = typer.Option(8080, help="TCP port."),
    model: str = typer.Option(
        None, "--model", "-m", help="'default' (shipped) or a bundle folder."
    ),
    results_dir: Path = typer.Option(None, "--results-dir", help="Results folder (SQLite log)."),
    config: Path = typer.Option(
        None, "--config", "-c", help="Station TOML file; options given here override it."
    ),
    token: str = typer.Option(
        None,
        "--token",
        envvar="LEUKEDGE_TOKEN",
        show_envvar=True,
        help="Access token required on every request (16+ characters; default: the "
        "config's token). Open the page once as http://HOST:PORT/?token=TOKEN.",
    ),
) -> None:
    """Serve the station's page: live view, new slide, capture, explanations, end, report.
    Ctrl-C or SIGTERM stops; open slides stay open."""
    from ..edge.config import ConfigError
    from ..edge.results_log import ResultsError
    from ..station.security import ServeError
    from ..station.server import bind, build_app, camera_opener, run
    from .run import _settings

    if not 1 <= port <= 65535:
        fail(f"--port must be 1..65535, got {port}")
    try:
        cfg = _settings(config, source=source, model=model,
                        results_dir=str(results_dir) if results_dir else None)  # fmt: skip
        token = token or cfg.token or None
        opener = camera_opener(cfg)
        sock = bind(host, port, token)
        app, station = build_app(cfg, opener, token=token, config_threshold=bool(config))
    except (ConfigError, ResultsError, ServeError, ValueError) as exc:
        fail(f"refused: {exc}")
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    login = "?token=TOKEN" if token else ""
    err_console.print(f"model {station.model.name} on {station.model.backend.name}, "
                      f"camera {cfg.source}, results {station.log.path}")  # fmt: skip
    err_console.print(f"open http://{shown}:{port}/{login} (Ctrl-C stops)")
    run(app, sock)
