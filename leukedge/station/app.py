"""The station's web page and its JSON API (Starlette), around a ``Station`` and a
``LiveCamera``. The page uses the API; tests and other programs may too.

=====  ==========================  =======================================================
GET    /                           the page
GET    /stream.mjpg                the live view (``multipart/x-mixed-replace`` JPEGs)
GET    /api/status                 model, camera, current slide, a new slide id, reasons
GET    /api/slides                 the slides, newest first
POST   /api/slides                 ``{"slide", "operator", "notes"}``: start or continue one
GET    /api/slides/{id}            ``{"slide", "tally", "fields"}``
POST   /api/slides/{id}/end        end it; its stored call (``call``, ``text``, ``refer``)
POST   /api/capture                ``{"slide"}`` (default: the current one): the field result
POST   /api/capture-mode           ``{"mode": "demand" | "auto"}``
GET    /api/fields/{id}/thumb      JPEG: the field with the blast mask outline
GET    /api/fields/{id}/view       PNG: what the model was given
GET    /api/fields/{id}/explain    PNG: the explanation map over the field
GET    /slides/{id}/report         the printable report (as ``leukedge results report``)
=====  ==========================  =======================================================

Errors are ``{"error": message}``: 400 bad input, 404 unknown slide or field, 409 a slide
state that does not allow it, 503 no frame from the camera, 500 the results database.
Security (token, cross-site requests, headers) is ``security.Guard``'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..edge.pipeline import REASONS
from ..edge.report import slide_report
from ..edge.results_log import ResultsError, SlideError, validate_slide_id
from ..edge.slide import NOTICE
from ..edge.sources.base import Frame
from ..edge.station import Station
from .camera import CameraError, LiveCamera
from .images import FieldImageError, FieldImages
from .security import REPORT_CSP, Guard

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Largest JSON body accepted, in bytes.
MAX_BODY = 16_384
#: Longest operator name and notes.
MAX_OPERATOR, MAX_NOTES = 100, 2000
#: Live-view viewers at once (each costs a JPEG per frame), and their frame rate.
MAX_VIEWERS, STREAM_FPS = 4, 4.0
NO_STORE = {"cache-control": "no-store"}
#: Keys of a logged field that the API shows (the image's path on the station is not shown).
FIELD_KEYS = ("id", "source_id", "time", "label", "probabilities", "confidence", "uncertain",
              "reasons", "cell_count", "error", "image_sha256")  # fmt: skip


class ApiError(Exception):
    """A request refused with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def field_json(row: dict[str, Any]) -> dict[str, Any]:
    """A logged field as the API shows it (``FIELD_KEYS``, and ``image``: whether its
    image was kept for the gallery and explanations)."""
    return {**{k: row.get(k) for k in FIELD_KEYS}, "image": bool(row.get("frame"))}


def call_json(slide_id: str, call: dict[str, Any]) -> dict[str, Any]:
    """A stored call as the API shows it: ``call`` (the class, or None), ``text``, ``refer``."""
    return {"slide": slide_id, "call": call.get("label"), "text": call.get("text"),
            "refer": call.get("refer"), "figures": call.get("figures"),
            "notice": call.get("notice", NOTICE)}  # fmt: skip


class StationWeb:
    """The handlers, holding the station, the camera and the field images."""

    def __init__(self, station: Station, camera: LiveCamera):
        self.station, self.camera = station, camera
        self.images = FieldImages(station)
        self.viewers = 0
        self.closing = threading.Event()  # set on a stop: live views end, the server stops
        self.auto_note: str | None = None  # why the last auto-captured field was not taken
        station.current = station.current or station.resume_slide("web")  # after a restart
        self._auto = ThreadPoolExecutor(1, thread_name_prefix="leukedge-auto")
        camera.on_auto = lambda frame: self._auto.submit(self._auto_field, frame)

    def close(self) -> None:
        self.closing.set()
        self.camera.stop()
        self._auto.shutdown(wait=True, cancel_futures=True)

    # -- helpers -----------------------------------------------------------------

    def _process(self, frame: Frame, slide: str):
        """Classify a captured frame into ``slide``; its logged row. Shows the result on
        the live view."""
        try:
            logged = self.station.process(frame, slide)
        except SlideError as exc:
            raise ApiError(409, str(exc)) from None
        if logged is None or logged.id is None:
            raise ApiError(409, f"this field is already in slide {slide}; move the stage")
        res = logged.result
        if res.error is None:
            flag = f" uncertain ({', '.join(res.reasons)})" if res.uncertain else ""
            self.camera.caption = f"{slide}: {res.label} {res.confidence:.2f}{flag}"
        else:
            self.camera.caption = f"{slide}: field not classified"
        return self.station.log.field(logged.id)

    def _auto_field(self, frame: Frame) -> None:
        slide = self.station.current
        if slide is None:
            self.auto_note = "auto-capture took a field, but no slide is open: start one"
            return
        try:
            self._process(frame, slide)
            self.auto_note = None
        except (ApiError, ResultsError) as exc:
            self.auto_note = f"auto-capture: {exc}"
            logger.warning("auto-capture: %s", exc)

    # -- routes ------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        model = self.station.model
        return TEMPLATES.TemplateResponse(request, "index.html", {
            "model": model.name, "source": self.camera.name, "notice": NOTICE,
        })  # fmt: skip

    async def stream(self, request: Request) -> Response:
        if self.viewers >= MAX_VIEWERS:
            raise ApiError(503, f"at most {MAX_VIEWERS} live views at once; close one")
        kind = "multipart/x-mixed-replace; boundary=frame"
        return StreamingResponse(self._frames(), media_type=kind, headers=NO_STORE)

    async def _frames(self):
        self.viewers += 1
        try:
            last = None
            while not (self.closing.is_set() or self.camera.stopped):
                jpeg = await run_in_threadpool(self.camera.view_jpeg)
                if jpeg is not None and jpeg is not last:
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                    yield head.encode() + b"\r\n\r\n" + jpeg + b"\r\n"
                    last = jpeg
                await asyncio.sleep(1.0 / STREAM_FPS)
        finally:
            self.viewers -= 1

    async def status(self, request: Request) -> Response:
        model = self.station.model
        return JSONResponse({
            "model": {"name": model.name, "sha256": model.sha256, "backend": model.backend.name},
            "camera": self.camera.status.to_json(),
            "current": self.station.current,
            "new_slide": self.station.new_slide_id(),
            "auto_note": self.auto_note,
            "reasons": REASONS,
            "notice": NOTICE,
        })  # fmt: skip

    async def slides(self, request: Request) -> Response:
        infos = await run_in_threadpool(self.station.log.slides)
        return JSONResponse({"slides": [s.to_json() for s in reversed(infos)]})

    async def new_slide(self, request: Request) -> Response:
        body = await _body(request)
        slide = _slide_id(body.get("slide") or self.station.new_slide_id())
        operator = _text(body, "operator", MAX_OPERATOR)
        notes = _text(body, "notes", MAX_NOTES)
        try:
            info = await run_in_threadpool(self.station.open_slide, slide, operator, notes,
                                           origin="web")  # fmt: skip
        except SlideError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse(info.to_json(), 201)

    async def slide(self, request: Request) -> Response:
        slide = _slide_id(request.path_params["slide"])
        record = await run_in_threadpool(self._record, slide)
        record["fields"] = [field_json(r) for r in record["fields"]]
        return JSONResponse(record)

    def _record(self, slide: str) -> dict[str, Any]:
        try:
            return self.station.slide(slide)
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None

    async def end_slide(self, request: Request) -> Response:
        slide = _slide_id(request.path_params["slide"])
        try:
            call = await run_in_threadpool(self.station.end_slide, slide)
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None
        return JSONResponse(call_json(slide, call))

    async def capture(self, request: Request) -> Response:
        body = await _body(request)
        slide = body.get("slide") or self.station.current
        if slide is None:
            raise ApiError(409, "no open slide: start one (New slide) before capturing")
        slide = _slide_id(slide)
        try:
            frame = await run_in_threadpool(self.camera.capture)
        except CameraError as exc:
            raise ApiError(503, f"{exc}. Check the camera; the station keeps trying.") from None
        row = await run_in_threadpool(self._process, frame, slide)
        return JSONResponse({**field_json(row), "slide": slide}, 201)

    async def capture_mode(self, request: Request) -> Response:
        mode = (await _body(request)).get("mode")
        if mode not in ("demand", "auto"):
            raise ApiError(400, f"mode must be 'demand' or 'auto', got {mode!r}")
        self.camera.trigger.mode = mode
        return JSONResponse({"mode": mode})

    async def thumb(self, request: Request) -> Response:
        data = await self._image(self.images.thumbnail, request)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=3600"})

    async def view(self, request: Request) -> Response:
        data = await self._image(self.images.view, request)
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def explain(self, request: Request) -> Response:
        data = await self._image(self.images.explanation, request)
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def _image(self, make, request: Request) -> bytes:
        try:
            return await run_in_threadpool(make, request.path_params["field"])
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None
        except FieldImageError as exc:
            raise ApiError(404, str(exc)) from None

    async def report(self, request: Request) -> Response:
        slide = _slide_id(request.path_params["slide"])
        html = await run_in_threadpool(self._report, slide)
        return HTMLResponse(html, headers={"content-security-policy": REPORT_CSP, **NO_STORE})

    def _report(self, slide: str) -> str:
        try:
            return slide_report(self.station.log, slide)
        except KeyError as exc:
            raise ApiError(404, exc.args[0]) from None


TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body); ``ApiError`` 400/413."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise ApiError(413, f"request body over {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _slide_id(value: Any) -> str:
    try:
        return validate_slide_id(value)
    except SlideError as exc:
        raise ApiError(400, str(exc)) from None


def _text(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, f"{key} must be text of at most {limit} characters")
    return value.strip() or None


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse({"error": str(exc)}, exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


async def _results_error(request: Request, exc: ResultsError) -> Response:
    logger.error("%s", exc)
    return JSONResponse({"error": str(exc)}, 500)


def create_app(station: Station, camera: LiveCamera, *, token: str | None = None) -> Starlette:
    """The web app of ``station`` with ``camera`` (started and stopped with the app).
    ``token``: required on every request when set (see ``security``)."""
    web = StationWeb(station, camera)

    @asynccontextmanager
    async def lifespan(app):
        camera.start()
        try:
            yield
        finally:
            await run_in_threadpool(web.close)

    get, post = ["GET"], ["POST"]
    routes = [
        Route("/", web.index, methods=get),
        Route("/stream.mjpg", web.stream, methods=get),
        Route("/api/status", web.status, methods=get),
        Route("/api/slides", web.slides, methods=get),
        Route("/api/slides", web.new_slide, methods=post),
        Route("/api/slides/{slide}", web.slide, methods=get),
        Route("/api/slides/{slide}/end", web.end_slide, methods=post),
        Route("/api/capture", web.capture, methods=post),
        Route("/api/capture-mode", web.capture_mode, methods=post),
        Route("/api/fields/{field:int}/thumb", web.thumb, methods=get),
        Route("/api/fields/{field:int}/view", web.view, methods=get),
        Route("/api/fields/{field:int}/explain", web.explain, methods=get),
        Route("/slides/{slide}/report", web.report, methods=get),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ResultsError: _results_error,
        },
        lifespan=lifespan,
    )
    app.state.web = web
    return app
