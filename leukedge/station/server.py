"""``leukedge serve`` as a library: the station, its camera and the web app from a config,
and uvicorn on a socket bound first (so a port in use is one clear error, before the
model is loaded)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import uvicorn
from starlette.applications import Starlette

from ..edge.config import StationConfig, source_kind
from ..edge.sources import Source, open_source
from ..edge.station import Station
from .app import create_app
from .camera import LiveCamera
from .security import ServeError, check_bind

#: Kinds of source the page can show live and capture from.
CAMERA_KINDS = ("picamera2", "usb", "video", "synthetic")


def camera_opener(config: StationConfig) -> Callable[[], Source]:
    """A function opening ``config.source`` anew (the camera reopens it after a failure);
    ``ServeError`` for a source that is not a camera, ``ValueError`` for bad options
    (checked now). A synthetic source without ``n`` is endless, and without ``seed`` gives
    other fields at each start (a restarted simulation continues its slide)."""
    kind = source_kind(config.source)
    if kind not in CAMERA_KINDS:
        raise ServeError(
            f"source {config.source!r}: the page needs a camera ({', '.join(CAMERA_KINDS)}); "
            "for a hot folder or image files use `leukedge run`"
        )
    options = config.options_for()
    query = dict(parse_qsl(urlsplit(config.source).query))
    if kind == "synthetic":  # simulation: endless, and new fields after a restart
        for key, value in (("n", None), ("seed", int(time.time()))):
            if key not in query:
                options.setdefault(key, value)
    open_source(config.source, **options)  # refuses bad options before anything starts

    def opener() -> Source:
        return open_source(config.source, **options)

    return opener


def build_app(
    config: StationConfig,
    opener: Callable[[], Source],
    *,
    token: str | None,
    config_threshold: bool = True,
) -> tuple[Starlette, Station]:
    """The web app (and its station) for ``config`` with the camera ``opener``
    (``camera_opener``): every field's image is kept (``save_frames``) for the gallery,
    explanations and reports; ``token`` is required on every request when set. Raises
    ``ConfigError``, ``BundleError`` or ``ResultsError`` naming the problem."""
    config.save_frames = True
    station = Station.from_config(config, config_threshold=config_threshold)
    camera = LiveCamera(opener, config.source)
    return create_app(station, camera, token=token), station


def bind(host: str, port: int, token: str | None) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; ``ServeError`` naming the fix, also for
    an address other than loopback without a ``token`` (``check_bind``)."""
    check_bind(host, token)
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(64)
    except OSError as exc:
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port, "
            "or stop the program using it"
        ) from exc
    return sock


class _Server(uvicorn.Server):
    """Ends the page's live views first on a stop, so open streams do not hold it up."""

    def handle_exit(self, sig, frame) -> None:
        self.config.app.state.web.closing.set()
        super().handle_exit(sig, frame)


def make_server(app: Starlette) -> uvicorn.Server:
    """A uvicorn server for ``app`` (``create_app``): quiet, no server header; a stop
    (``handle_exit``, SIGINT, SIGTERM) ends open live views first."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


def run(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM."""
    make_server(app).run(sockets=[sock])
