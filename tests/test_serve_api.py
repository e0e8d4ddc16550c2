"""The station's web API (``leukedge serve``): every route, the token rule, cross-site
requests, bad slide ids and capture errors (camera gone: a clear message, the server
keeps running)."""

from __future__ import annotations

import re
import threading

import httpx
import pytest
from serve_support import (
    FakeMicroscope,
    GoneCamera,
    StillCamera,
    gone_until,
    live_server,
    make_app,
    wait_for,
)
from starlette.testclient import TestClient
from typer.testing import CliRunner

from leukedge.cli import app as cli
from leukedge.edge.config import StationConfig
from leukedge.edge.model import load_model
from leukedge.edge.sources import SyntheticSource
from leukedge.station.security import MIN_TOKEN, ServeError, check_bind
from leukedge.station.server import bind, camera_opener

JSON = {"content-type": "application/json"}
TOKEN = "t0k3n-for-the-station-page"
PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
FIELD_KEYS = {"id", "label", "probabilities", "confidence", "uncertain", "reasons", "cell_count"}


@pytest.fixture
def model(tiny_bundle):
    return load_model(tiny_bundle, self_test=False)


@pytest.fixture
def client(model, tmp_path):
    app, _, camera = make_app(model, tmp_path / "results")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wait_for(lambda: camera.status.ok, what="the synthetic camera")
        yield c


def _post(client, path, body=None, **kw):
    return client.post(path, json=body if body is not None else {}, **kw)


def test_page_status_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "leukedge station" in page.text
    assert "Research" in page.text or "research" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("station.js", "station.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing external
    status = client.get("/api/status").json()
    assert status["camera"]["ok"] and status["camera"]["trigger"]["mode"] == "demand"
    assert status["model"]["name"] == "tiny-test" and status["current"] is None
    assert status["new_slide"].startswith("slide-")
    assert "low-confidence" in status["reasons"]  # what each reason means, for the page


def test_the_page_escapes_what_it_shows(model, tmp_path):
    app, _, _ = make_app(model, tmp_path / "results", name="usb:<b>0</b>")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        page = client.get("/").text
    assert "usb:&lt;b&gt;0&lt;/b&gt;" in page and "<b>0</b>" not in page


def test_slide_lifecycle_every_route(client):
    made = _post(client, "/api/slides", {"slide": "S-0042", "operator": "A. Tech"})
    assert made.status_code == 201, made.text
    assert made.json()["id"] == "S-0042" and made.json()["operator"] == "A. Tech"
    assert client.get("/api/status").json()["current"] == "S-0042"
    fields = []
    for _ in range(3):
        r = _post(client, "/api/capture")
        assert r.status_code == 201, r.text
        fields.append(r.json())
    assert all(FIELD_KEYS <= set(f) for f in fields)
    assert len({f["id"] for f in fields}) == 3 and all(f["slide"] == "S-0042" for f in fields)
    record = client.get("/api/slides/S-0042").json()
    assert record["slide"]["state"] == "open" and record["tally"]["fields"] == 3
    assert [f["id"] for f in record["fields"]] == [f["id"] for f in fields]
    assert all("frame" not in f for f in record["fields"])  # no station paths shown
    first = fields[0]["id"]
    assert client.get(f"/api/fields/{first}/thumb").content.startswith(JPEG)
    assert client.get(f"/api/fields/{first}/view").content.startswith(PNG)
    explained = client.get(f"/api/fields/{first}/explain")
    assert explained.status_code == 200 and explained.headers["content-type"] == "image/png"
    assert explained.content.startswith(PNG)
    ended = _post(client, "/api/slides/S-0042/end")
    assert ended.status_code == 200
    call = ended.json()
    assert {"call", "refer", "text"} <= set(call) and isinstance(call["refer"], bool)
    assert _post(client, "/api/slides/S-0042/end").json() == call  # stored, not recomputed
    assert client.get("/api/slides/S-0042").json()["slide"]["call"]["text"] == call["text"]
    again = _post(client, "/api/capture", {"slide": "S-0042"})
    assert again.status_code == 409 and "ended" in again.json()["error"]
    assert _post(client, "/api/slides", {"slide": "S-0042"}).status_code == 409
    listed = client.get("/api/slides").json()["slides"]
    assert [s["id"] for s in listed] == ["S-0042"] and listed[0]["state"] == "ended"
    mode = _post(client, "/api/capture-mode", {"mode": "auto"})
    assert mode.json() == {"mode": "auto"}
    assert client.get("/api/status").json()["camera"]["trigger"]["mode"] == "auto"
    assert _post(client, "/api/capture-mode", {"mode": "every"}).status_code == 400


def test_a_restart_continues_the_open_slide(model, tmp_path):
    app, _, _ = make_app(model, tmp_path / "results")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        _post(client, "/api/slides", {"slide": "S-9", "operator": "B"})
        assert _post(client, "/api/capture").status_code == 201
    restarted = lambda: SyntheticSource(n=None, size=(64, 64), seed=1)  # noqa: E731
    app, _, _ = make_app(model, tmp_path / "results", opener=restarted)  # the service again
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/status").json()["current"] == "S-9"
        assert _post(client, "/api/capture").status_code == 201
        assert client.get("/api/slides/S-9").json()["tally"]["fields"] == 2


def test_report_route_serves_the_results_report_file(model, tmp_path):
    app, _, _ = make_app(model, tmp_path / "results")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_for(lambda: client.get("/api/status").json()["camera"]["ok"], what="camera")
        _post(client, "/api/slides", {"slide": "S-7", "operator": "<b>bold</b>"})
        ids = [_post(client, "/api/capture").json()["id"] for _ in range(2)]
        _post(client, "/api/slides/S-7/end")
        report = client.get("/slides/S-7/report")
        assert client.get("/slides/S-404/report").status_code == 404
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in report.headers["content-security-policy"]
    assert "S-7" in report.text and "<b>bold</b>" not in report.text
    assert report.text.count("data:image/") >= len(ids)
    out = tmp_path / "S-7.html"
    done = CliRunner().invoke(cli, ["results", "report", "S-7", "--dir", str(tmp_path / "results"),
                                    "--out", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    when = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}")  # the report's own time
    assert when.sub("T", out.read_text()) == when.sub("T", report.text)


@pytest.mark.parametrize(
    "slide", ["../etc", "a/b", ".hidden", "<script>alert(1)</script>", "x" * 65, 42, "S 1"]
)
def test_bad_slide_ids_are_refused(client, slide):
    r = _post(client, "/api/slides", {"slide": slide})
    assert r.status_code == 400, r.text
    assert "invalid slide id" in r.json()["error"]
    assert r.headers["content-type"] == "application/json"


def test_no_slide_id_makes_one(client):
    for body in ({}, {"slide": ""}, {"slide": None}):
        r = _post(client, "/api/slides", body)
        assert r.status_code == 201 and r.json()["id"].startswith("slide-")


def test_bad_ids_in_paths_and_bodies(client):
    for path in ("/api/slides/..%2Fetc", "/api/slides/%3Cb%3E", "/slides/..%2F..%2Fx/report"):
        r = client.get(path)  # refused as JSON (never HTML), whatever the id holds
        assert r.status_code in (400, 404), path
        assert r.headers["content-type"] == "application/json", path
    assert client.get("/api/slides/S-404").status_code == 404
    assert client.get("/api/fields/999/explain").status_code == 404
    assert client.get("/api/fields/abc/explain").status_code == 404
    assert _post(client, "/api/slides/S-404/end").status_code == 404
    bad_json = client.post("/api/slides", content=b"{not json", headers=JSON)
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    assert client.post("/api/slides", json=[1], headers=JSON).status_code == 400
    long = _post(client, "/api/slides", {"slide": "S-1", "operator": "x" * 101})
    assert long.status_code == 400
    huge = client.post("/api/slides", content=b" " * 20_000, headers=JSON)
    assert huge.status_code == 413


def test_capture_without_a_slide_is_refused(client):
    r = _post(client, "/api/capture")
    assert r.status_code == 409 and "no open slide" in r.json()["error"]


def test_camera_gone_is_a_clear_error_and_the_server_keeps_running(model, tmp_path):
    back = threading.Event()
    app, _, camera = make_app(model, tmp_path / "results", opener=gone_until(back))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_for(lambda: camera.status.error not in (None, "starting"), what="camera error")
        assert _post(client, "/api/slides", {"slide": "S-1"}).status_code == 201
        r = _post(client, "/api/capture")
        assert r.status_code == 503
        message = r.json()["error"]
        assert "camera" in message and "not found" in message and "Check the camera" in message
        status = client.get("/api/status").json()["camera"]
        assert not status["ok"] and GoneCamera.MESSAGE in status["error"]
        back.set()  # plugged in again: reopened, captures work
        wait_for(lambda: camera.status.ok, what="the camera back")
        assert _post(client, "/api/capture").status_code == 201


def test_auto_capture_takes_one_field_per_still_view(model, tmp_path):
    app, station, camera = make_app(model, tmp_path / "results", opener=StillCamera)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert _post(client, "/api/slides", {"slide": "S-AUTO"}).status_code == 201
        assert _post(client, "/api/capture-mode", {"mode": "auto"}).status_code == 200
        fields = lambda: client.get("/api/slides/S-AUTO").json()["fields"]  # noqa: E731
        wait_for(fields, what="an auto-captured field")
        frames = camera.status.frames
        wait_for(lambda: camera.status.frames > frames + 20, what="more still frames")
        (field,) = fields()  # held still: taken once
        assert field["source_id"].startswith("still:0#") and field["label"]
        assert client.get("/api/status").json()["camera"]["trigger"]["captures"] == 1


def test_the_pi_camera_live_view_is_low_resolution_and_a_capture_full(model, tmp_path):
    """picamera2 (a fake camera): its own trigger watches the low-resolution stream, the
    page's capture takes the same frame at full resolution."""
    options = {"size": [640, 480], "preview_width": 160, "settle": 0,
               "camera_factory": FakeMicroscope}  # fmt: skip
    config = StationConfig(source="picamera2", source_options={"picamera2": options})
    app, station, camera = make_app(model, tmp_path / "results", opener=camera_opener(config))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_for(lambda: camera.trigger.latest is not None, what="the low-resolution stream")
        assert camera.trigger.mode == "demand" and camera.trigger.latest.shape == (120, 160, 3)
        assert _post(client, "/api/slides", {"slide": "S-PI"}).status_code == 201
        r = _post(client, "/api/capture")
        assert r.status_code == 201, r.text
        assert r.json()["source_id"].startswith("picamera2:0#")
        (row,) = station.log.results("S-PI")  # demand: nothing else taken meanwhile
        assert client.app.state.web.images.field(row["id"]).shape == (480, 640, 3)


def test_token_rule():
    with pytest.raises(ServeError, match="token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ServeError, match="characters"):
        check_bind("0.0.0.0", "short")
    assert check_bind("127.0.0.1", None) is None and check_bind("::1", None) is None
    assert check_bind("0.0.0.0", "x" * MIN_TOKEN) == "x" * MIN_TOKEN


def test_token_is_checked_on_every_request(model, tmp_path):
    app, _, camera = make_app(model, tmp_path / "results", token=TOKEN)
    with TestClient(app, base_url="http://station.local") as client:
        for path in ("/", "/api/status", "/stream.mjpg", "/static/station.js", "/api/slides"):
            r = client.get(path)
            assert r.status_code == 401, path
        page = client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 401 and "token" in page.text and "<form" in page.text
        assert client.post("/api/slides", json={"slide": "S-1"}).status_code == 401
        wrong = client.get("/api/status", headers={"authorization": "Bearer " + "x" * 26})
        assert wrong.status_code == 401
        ok = client.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert client.get("/api/status", headers={"x-leukedge-token": TOKEN}).status_code == 200
        login = client.get(f"/?token={TOKEN}&x=1", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/?x=1"
        cookie = login.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "max-age=2592000" in cookie.lower()  # 30 days
        assert client.get("/api/status").status_code == 200  # the cookie now
        off = client.get(f"http://station.local//evil.example/?token={TOKEN}",
                         follow_redirects=False)  # fmt: skip
        assert off.headers["location"] == "/evil.example/"  # never "//evil.example/"
        made = client.post("/api/slides", json={"slide": "S-1"})
        assert made.status_code == 201


def test_cross_site_requests_are_refused(client):
    assert client.get("/api/capture").status_code == 405  # state changes are POST only
    assert client.get("/api/slides/S-1/end").status_code == 405
    evil = {"origin": "http://evil.example", **JSON}
    assert client.post("/api/slides", content=b"{}", headers=evil).status_code == 403
    site = {"sec-fetch-site": "cross-site", **JSON}
    assert client.post("/api/slides", content=b"{}", headers=site).status_code == 403
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/api/slides", content=b"slide=S-1", headers=form).status_code == 415
    text = {"content-type": "text/plain"}
    assert client.post("/api/capture", content=b"{}", headers=text).status_code == 415
    same = {"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin", **JSON}
    assert client.post("/api/slides", content=b'{"slide": "S-1"}', headers=same).status_code == 201


def test_loopback_without_token_refuses_other_host_names(client):
    """DNS rebinding: a site whose name resolves to 127.0.0.1 gets nothing."""
    r = client.get("/api/status", headers={"host": "evil.example:8080"})
    assert r.status_code == 421
    assert client.get("/api/status", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/api/status", headers={"host": "[::1]:8080"}).status_code == 200


def test_live_stream_over_a_real_server(model, tmp_path):
    app, _, _ = make_app(model, tmp_path / "results")
    with live_server(app) as url:
        with httpx.stream("GET", f"{url}/stream.mjpg", timeout=20) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if data.count(b"--frame") >= 2:
                    break
        assert b"Content-Type: image/jpeg" in data and JPEG in data


def test_serve_cli_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("LEUKEDGE_TOKEN", raising=False)
    runner = CliRunner()
    results = ["--results-dir", str(tmp_path / "r")]
    r = runner.invoke(cli, ["serve", "--source", "synthetic", "--host", "0.0.0.0", *results])
    assert r.exit_code == 2 and "token" in r.output
    r = runner.invoke(cli, ["serve", "--source", f"folder:{tmp_path}", *results])
    assert r.exit_code == 2 and "needs a camera" in r.output
    r = runner.invoke(cli, ["serve", "--source", "synthetic?bogus=1", *results])
    assert r.exit_code == 2 and "bogus" in r.output
    r = runner.invoke(cli, ["serve", "--source", "synthetic", "--token", "short", *results])
    assert r.exit_code == 2 and "characters" in r.output
    with bind("127.0.0.1", 0, None) as taken:
        port = str(taken.getsockname()[1])
        r = runner.invoke(cli, ["serve", "--source", "synthetic", "--port", port, *results])
        assert r.exit_code == 2 and "cannot listen" in r.output
