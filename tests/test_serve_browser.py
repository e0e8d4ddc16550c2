"""The station's page in a real browser: Debian's chromium driven by chromedriver through
Selenium (no browser download), on the synthetic camera with the shipped model. A person's
path: new slide, capture three fields, open one field's explanation, end the slide, open
the report; and a camera that is gone. Screenshots are kept in the test's folder, and
copied to ``docs/img/`` for the README when ``LEUKEDGE_SCREENSHOTS`` is set."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from serve_support import GoneCamera, gone_until, live_server, make_app, wait_for

from leukedge.edge.model import load_model

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs/img"
#: The screenshots the READMEs show.
README_SHOTS = ("station-page.png", "station-field.png", "station-report.png",
                "station-camera-gone.png")  # fmt: skip
#: Synthetic camera frames: a 4:3 field as a camera gives it, at the scale of the
#: model's training fields (larger synthetic frames are flagged "scale").
FRAME = (320, 240)
LABEL = re.compile(r"^#\d+ (Benign|Early|Pre|Pro) \d+%$")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download a driver
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,1100",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, tmp_path: Path, name: str, whole: bool = False) -> Path:
    """A screenshot in the test's folder (and in docs/img/ when LEUKEDGE_SCREENSHOTS is set);
    ``whole``: of the whole page, not only the window."""
    path = tmp_path / name
    size = driver.get_window_size()
    if whole:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], height + 100)
    assert driver.save_screenshot(str(path)), name
    driver.set_window_size(size["width"], size["height"])
    print(f"screenshot: {path}")
    if os.environ.get("LEUKEDGE_SCREENSHOTS") and name in README_SHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)
    return path


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _loaded(driver, element_id: str) -> int:
    """The natural width of an image element once it has loaded (0 before)."""
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i.complete ? i.naturalWidth : 0",
        element_id,
    )


def test_a_slide_from_the_page(browser, tmp_path):
    app, station, _ = make_app(load_model("default"), tmp_path / "results", size=FRAME, fps=8)
    with live_server(app) as url:
        browser.get(url + "/")
        assert browser.title == "leukedge station"
        wait_for(lambda: _text(browser, "camera-state").startswith("camera ok"), what="camera ok")
        wait_for(lambda: _loaded(browser, "live") == 480, what="the live view")

        browser.find_element(By.ID, "slide-id").clear()
        browser.find_element(By.ID, "slide-id").send_keys("S-0042")
        browser.find_element(By.ID, "operator").send_keys("A. Tech")
        browser.find_element(By.CSS_SELECTOR, "#new-slide button").click()
        wait_for(lambda: _text(browser, "current-id") == "S-0042", what="the new slide")
        assert "Slide S-0042 is open" in _text(browser, "message")
        assert _text(browser, "current-state") == "open"
        assert "operator A. Tech" in _text(browser, "current-operator")

        for n in range(1, 4):
            wait_for(lambda: browser.find_element(By.ID, "capture").is_enabled(), what="ready")
            browser.find_element(By.ID, "capture").click()
            wait_for(lambda n=n: len(browser.find_elements(By.CSS_SELECTOR, "#gallery li")) == n,
                     what=f"field {n} in the gallery")  # fmt: skip
        assert _text(browser, "capture-state").startswith("field #")
        labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#gallery .card-label")]
        assert len(labels) == 3 and all(LABEL.match(t) for t in labels), labels
        thumbs = (
            "return [...document.querySelectorAll('#gallery img')]"
            ".every(i => i.complete && i.naturalWidth === 200)"
        )
        wait_for(lambda: browser.execute_script(thumbs), what="the thumbnails")
        assert _text(browser, "counts").startswith("3 fields")
        rows = browser.find_elements(By.CSS_SELECTOR, "#tally tbody tr")
        assert sum(int(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows) == 3
        assert _text(browser, "call").startswith("Running call:")
        time.sleep(1)  # the live view's caption shows the last result
        _shot(browser, tmp_path, "station-page.png")

        browser.find_elements(By.CSS_SELECTOR, "#gallery .card-button")[-1].click()  # the first
        wait_for(lambda: browser.find_element(By.ID, "detail").is_displayed(), what="detail")
        wait_for(lambda: _loaded(browser, "detail-explain") > 0, 60, "the explanation")
        size = station.model.preprocess.size  # 224; the two images load independently
        wait_for(lambda: _loaded(browser, "detail-view") == size, what="the model's view")
        assert _text(browser, "explain-caption").startswith("Explanation: where covering")
        first = station.log.results("S-0042")[0]
        assert _text(browser, "detail-title") == f"#{first['id']} {first['source_id']}"
        assert first["label"] in _text(browser, "detail-text")
        for reason in first["reasons"]:  # named and explained
            assert f"{reason} (" in _text(browser, "detail-text")
        browser.execute_script("document.getElementById('detail').scrollIntoView()")
        _shot(browser, tmp_path, "station-field.png")

        browser.find_element(By.ID, "end").click()
        wait_for(lambda: "ended" in _text(browser, "message"), what="the end of the slide")
        wait_for(lambda: _text(browser, "call").startswith("Slide call:"), what="the call")
        stored = station.log.slide("S-0042").call
        assert stored["text"] in _text(browser, "call") and stored["text"] in _text(
            browser, "message"
        )
        assert _text(browser, "current-state") == "ended"
        assert not browser.find_element(By.ID, "capture").is_enabled()
        browser.execute_script("window.scrollTo(0, 0)")
        _shot(browser, tmp_path, "station-ended.png")

        pytest.importorskip("leukedge.edge.report", reason="no slide report (edge.report) here")
        report = browser.find_element(By.ID, "report").get_attribute("href")
        assert report == f"{url}/slides/S-0042/report"
        browser.get(report)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "S-0042" in body and "A. Tech" in body and "research" in body.lower()
        for f in station.log.results("S-0042"):
            assert f["source_id"] in body
        images = browser.execute_script(
            "return [...document.images].map(i => [i.src.slice(0, 5), i.naturalWidth])"
        )
        assert len(images) >= 3 and all(src == "data:" and w > 0 for src, w in images)
        external = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('data:'))"
        )
        assert external == [], external  # self-contained: nothing fetched
        _shot(browser, tmp_path, "station-report.png", whole=True)


def test_camera_gone_shows_a_clear_message(browser, tmp_path):
    back = threading.Event()
    model = load_model("default")
    opener = gone_until(back)
    app, _, camera = make_app(
        model, tmp_path / "r", opener=opener, name="picamera2", reopen_after=2
    )
    with live_server(app) as url:
        browser.get(url + "/")
        wait_for(lambda: "not found" in _text(browser, "camera-state"), what="camera state")
        assert browser.find_element(By.ID, "camera-state").get_attribute("class") == "badge bad"
        browser.find_element(By.ID, "slide-id").clear()
        browser.find_element(By.ID, "slide-id").send_keys("S-0043")
        browser.find_element(By.CSS_SELECTOR, "#new-slide button").click()
        wait_for(lambda: _text(browser, "current-id") == "S-0043", what="the new slide")
        browser.find_element(By.ID, "capture").click()
        wait_for(lambda: "error" in browser.find_element(By.ID, "message").get_attribute("class"),
                 what="the error message")  # fmt: skip
        message = _text(browser, "message")
        assert GoneCamera.MESSAGE in message and "Check the camera" in message
        _shot(browser, tmp_path, "station-camera-gone.png")
        back.set()  # the camera is back: the same page captures again
        wait_for(lambda: _text(browser, "camera-state").startswith("camera ok"), what="camera")
        wait_for(lambda: browser.find_element(By.ID, "capture").is_enabled(), what="ready")
        browser.find_element(By.ID, "capture").click()
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#gallery li")) == 1,
                 what="a field after the camera came back")  # fmt: skip
        assert camera.status.ok
