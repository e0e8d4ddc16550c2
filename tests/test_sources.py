"""Frame sources: cameras (faked), hot folder, video, files, synthetic fields."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukedge.edge.sources import Frame, open_source
from leukedge.edge.synth import synth_field

FAST = {"poll": 0.01, "settle": 0.0, "decode_timeout": 0.0}


def _png(path: Path, rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def _field(seed: int = 0, size: int = 24) -> np.ndarray:
    return synth_field("Pre", size=(size, size), seed=seed)[0]


def _bounded(source, seconds: float = 10.0) -> list[Frame]:
    """All frames of ``source``, stopping it after ``seconds`` so a bug cannot hang."""
    timer = threading.Timer(seconds, source.stop)
    timer.start()
    try:
        return list(source)
    finally:
        timer.cancel()


# -- picamera2 ------------------------------------------------------------------


class FakePicamera2:
    """Records the picamera2 calls the source may make; RGB888 frames are B, G, R."""

    instances: list[FakePicamera2] = []

    def __init__(self, camera_num: int = 0):
        self.calls: list[tuple] = [("Picamera2", camera_num)]
        self.size = None
        self.started_at = None
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, main, lores=None):
        self.calls.append(("create_still_configuration", main, lores))
        return {"main": dict(main), "lores": dict(lores or {})}

    def configure(self, config):
        self.calls.append(("configure", config))
        self.size = config["main"]["size"]
        self.lores = config["lores"].get("size")

    def start(self):
        self.calls.append(("start",))
        self.started_at = time.monotonic()

    def capture_metadata(self):
        self.calls.append(("capture_metadata", time.monotonic() - self.started_at))
        return {"ExposureTime": 12000, "AnalogueGain": 1.25, "ColourGains": (1.8, 1.5), "Lux": 90}

    def set_controls(self, controls):
        self.calls.append(("set_controls", dict(controls)))

    def capture_array(self):
        self.calls.append(("capture_array",))
        width, height = self.size
        bgr = np.empty((height, width, 3), np.uint8)
        bgr[...] = (10, 20, 30)  # B, G, R
        return bgr

    def capture_request(self):
        self.calls.append(("capture_request",))
        return FakeRequest(self)

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


class FakeRequest:
    """A picamera2 request: the main stream through ``capture_array``, lores as YUV420."""

    def __init__(self, cam: FakePicamera2):
        self.cam = cam

    def make_array(self, stream):
        if stream == "main":
            return self.cam.capture_array()
        width, height = self.cam.lores
        return cv2.cvtColor(np.full((height, width, 3), 128, np.uint8), cv2.COLOR_RGB2YUV_I420)

    def release(self):
        pass


def test_picamera2_converts_bgr_locks_exposure_and_closes():
    FakePicamera2.instances.clear()
    source = open_source(
        "picamera2:1?count=2&capture=continuous",
        size=(64, 48),
        settle=0.05,
        camera_factory=FakePicamera2,
    )
    frames = _bounded(source)
    (cam,) = FakePicamera2.instances
    assert [f.source_id for f in frames] == ["picamera2:1#0", "picamera2:1#1"]
    for f in frames:
        assert f.error is None and f.data is None
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.rgb[0, 0].tolist() == [30, 20, 10]  # R, G, B
    names = [c[0] for c in cam.calls]
    assert names == [
        "Picamera2",
        "create_still_configuration",
        "configure",
        "start",
        "capture_metadata",
        "set_controls",
        "capture_request",
        "capture_array",
        "capture_request",
        "capture_array",
        "stop",
        "close",
    ]
    assert cam.calls[0] == ("Picamera2", 1)
    assert cam.calls[1][1:] == (
        {"size": (64, 48), "format": "RGB888"},
        {"size": (64, 48), "format": "YUV420"},
    )
    assert cam.calls[4][1] >= 0.05  # metadata read only after the settle time
    locked = {
        "AeEnable": False,
        "AwbEnable": False,
        "ExposureTime": 12000,
        "AnalogueGain": 1.25,
        "ColourGains": (1.8, 1.5),
    }
    assert cam.calls[5][1] == locked == source.locked_controls


def test_picamera2_stop_ends_stream_and_releases_camera():
    FakePicamera2.instances.clear()
    source = open_source(
        "picamera2", capture="continuous", settle=0, size=8, camera_factory=FakePicamera2
    )
    with source:
        for i, frame in enumerate(source):
            assert frame.error is None
            if i == 2:
                source.stop()
    cam = FakePicamera2.instances[0]
    assert [c[0] for c in cam.calls].count("capture_array") == 3
    assert [c[0] for c in cam.calls][-2:] == ["stop", "close"]


def test_picamera2_missing_camera_or_library_is_an_error_frame():
    def no_camera(num):
        raise IndexError("list index out of range")

    source = open_source("picamera2", camera_factory=no_camera, tries=1)
    (frame,) = _bounded(source)
    assert frame.rgb is None and "camera not found" in frame.error and source.failed
    if "picamera2" not in sys.modules:
        try:
            import picamera2  # noqa: F401
        except ImportError:
            (frame,) = _bounded(open_source("picamera2"))
            assert "--system-site-packages" in frame.error


def test_picamera2_that_disappears_is_reopened_with_backoff_and_keeps_its_settings():
    FakePicamera2.instances.clear()
    opened = []

    def flaky(num):
        opened.append(time.monotonic())
        if len(opened) == 2:
            raise RuntimeError("camera busy")
        cam = FakePicamera2(num)
        if len(opened) == 1:  # the first camera dies after one frame
            real, taken = cam.capture_array, []

            def capture():
                taken.append(1)
                if len(taken) > 1:
                    raise RuntimeError("camera unplugged")
                return real()

            cam.capture_array = capture
        return cam

    source = open_source(
        "picamera2?capture=continuous",
        count=3,
        settle=0,
        size=8,
        backoff=0.05,
        camera_factory=flaky,
    )
    frames = _bounded(source)
    good = [f for f in frames if f.error is None]
    errors = [f.error for f in frames if f.error]
    assert [f.source_id for f in good] == ["picamera2:0#0", "picamera2:0#1", "picamera2:0#2"]
    assert len(errors) == 2 and "camera failed" in errors[0] and "camera not found" in errors[1]
    assert "retrying in 0.05 s" in errors[0] and "retrying in 0.1 s" in errors[1]
    assert opened[2] - opened[1] >= 0.09  # the back-off doubled
    assert not source.failed
    first, last = FakePicamera2.instances[0], FakePicamera2.instances[-1]
    assert ("set_controls", source.locked_controls) in last.calls
    assert [c[0] for c in first.calls][-2:] == ["stop", "close"]


# -- USB camera -------------------------------------------------------------------


class FakeCapture:
    """cv2.VideoCapture stand-in reading a shared plan: True gives a frame, False fails."""

    def __init__(self, plan, log):
        self.plan, self.log = plan, log
        log.append("open")

    def isOpened(self):
        return True

    def read(self):
        if next(self.plan, False):
            bgr = np.zeros((6, 8, 3), np.uint8)
            bgr[...] = (10, 20, 30)
            return True, bgr
        return False, None

    def set(self, prop, value):
        self.log.append(("set", prop, value))

    def release(self):
        self.log.append("release")


def test_usb_retries_with_backoff_then_recovers():
    log: list = []
    plan = iter([True, False, False, True, True])
    source = open_source(
        "usb:2?capture=continuous",
        count=3,
        backoff=0.02,
        tries=5,
        capture_factory=lambda i: FakeCapture(plan, log),
    )
    start = time.monotonic()
    frames = _bounded(source)
    elapsed = time.monotonic() - start
    assert [f.error is None for f in frames] == [True, False, False, True, True]
    assert [f.source_id for f in frames] == ["usb:2#0", "usb:2#1", "usb:2#1", "usb:2#1", "usb:2#2"]
    assert "failure 1/5" in frames[1].error and "retrying in 0.02 s" in frames[1].error
    assert "failure 2/5" in frames[2].error and "retrying in 0.04 s" in frames[2].error
    assert elapsed >= 0.06
    assert frames[0].rgb[0, 0].tolist() == [30, 20, 10]
    assert log.count("open") == 3 and log.count("release") == 3


def test_usb_takes_a_field_on_demand_only():
    frames_left = iter([True] * 20)
    source = open_source("usb:0", tries=1, capture_factory=lambda i: FakeCapture(frames_left, []))
    assert source.trigger.mode == "demand"  # not every frame
    source.trigger.request()
    frames = _bounded(source)
    assert [f.source_id for f in frames] == ["usb:0#0", "usb:0#1"]
    assert frames[0].error is None and "giving up" in frames[1].error
    assert source.trigger.captures == 1 and source.trigger.latest is not None  # 20 seen


def test_usb_gives_up_with_an_error_frame():
    log: list = []
    source = open_source(
        "usb:0",
        size=(320, 240),
        backoff=0.001,
        tries=3,
        capture_factory=lambda i: FakeCapture(iter(()), log),
    )
    frames = _bounded(source)
    assert len(frames) == 3 and all(f.rgb is None for f in frames)
    assert "giving up" in frames[-1].error and "3 times" in frames[-1].error
    assert (("set", cv2.CAP_PROP_FRAME_WIDTH, 320)) in log
    assert log.count("open") == log.count("release") == 3


# -- hot folder -------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, str]:
    """Unusable fields: file name -> a word the error must contain."""
    (folder / "empty.png").write_bytes(b"")
    good = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    cv2.imwrite(str(folder / "gray.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), np.zeros((8, 8, 4), np.uint8))
    cv2.imwrite(str(folder / "deep.png"), np.zeros((8, 8, 3), np.uint16))
    (folder / "text.jpg").write_bytes(b"not an image at all")
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82")
    return {
        "empty.png": "empty",
        "truncated.jpg": "truncated",
        "gray.png": "grayscale",
        "rgba.png": "alpha",
        "deep.png": "16-bit",
        "text.jpg": "not a readable",
        "huge.png": "too large",
    }


def test_folder_processes_existing_files_by_mtime_and_ignores_temp_files(tmp_path):
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        _png(tmp_path / name, _field(i))
    os.utime(tmp_path / "c.jpg", ns=(1_000, 1_000))  # oldest
    for name in [".hidden.png", "x.png.part", "~lock.png", "y.png~", "notes.txt"]:
        (tmp_path / name).write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "sub.png").mkdir()
    frames = _bounded(open_source(f"folder:{tmp_path}", once=True, **FAST))
    names = [Path(f.source_id).name for f in frames]
    assert names[0] == "c.jpg" and sorted(names[1:]) == ["a.png", "b.png"]
    first = frames[1]
    assert first.error is None and first.rgb.shape == (24, 24, 3)
    assert first.sha256 == hashlib.sha256(Path(first.source_id).read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["folder-once", "folder", "paths"])
def test_file_sources_say_how_many_files_are_left_and_whether_they_end(tmp_path, kind):
    for i in range(3):
        _png(tmp_path / f"{i}.png", _field(i))
    uri = {"folder-once": f"folder:{tmp_path}", "folder": f"folder:{tmp_path}"}
    options = {"folder-once": {"once": True, **FAST}, "folder": {**FAST, "poll": 0.01}}
    source = open_source(uri.get(kind, str(tmp_path / "*.png")), **options.get(kind, {}))
    assert source.endless is (kind == "folder")  # a watched folder gives fields until stopped
    left = []
    with source:
        for _ in range(3):
            next(source)
            left.append(source.backlog)
    assert left == [3, 2, 1]  # with the frame in hand


def test_folder_bad_files_give_error_frames_and_iteration_continues(tmp_path):
    expected = _bad_files(tmp_path)
    good = _png(tmp_path / "zz-good.png", _field())
    frames = _bounded(open_source(f"folder:{tmp_path}", once=True, **FAST))
    by_name = {Path(f.source_id).name: f for f in frames}
    assert set(by_name) == {*expected, "zz-good.png"}
    for name, word in expected.items():
        frame = by_name[name]
        assert frame.rgb is None and name in frame.error and word in frame.error, frame.error
    assert by_name["zz-good.png"].error is None and by_name["zz-good.png"].data == good


def test_folder_reads_a_slowly_written_file_once_complete(tmp_path):
    data = cv2.imencode(".jpg", cv2.cvtColor(_field(size=96), cv2.COLOR_RGB2BGR))[1].tobytes()
    chunks = [data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]

    def writer():
        with open(tmp_path / "slow.jpg", "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.04)

    source = open_source(f"folder:{tmp_path}", poll=0.01, settle=0.15, decode_timeout=5.0)
    thread = threading.Thread(target=writer)
    thread.start()
    frames = []
    timer = threading.Timer(10, source.stop)
    timer.start()
    for frame in source:
        frames.append(frame)
        source.stop()
    timer.cancel()
    thread.join()
    (frame,) = frames
    assert frame.error is None and frame.data == data and frame.rgb.shape == (96, 96, 3)


def test_folder_never_yields_a_done_file_twice_across_restarts(tmp_path):
    logged: set[tuple[str, str]] = set()  # the results log's done-state, keyed by content

    def run(unlogged: tuple[str, ...] = ()) -> list[str]:
        """Names yielded by a new source (as after a restart); logs all but ``unlogged``."""
        with open_source(f"folder:{tmp_path}", once=True, **FAST) as source:
            source.already_done = lambda f: "logged" if (f.source_id, f.sha256) in logged else None
            names = []
            for frame in source:
                names.append(Path(frame.source_id).name)
                if names[-1] not in unlogged:
                    logged.add((frame.source_id, frame.sha256))
            return names

    _png(tmp_path / "a.png", _field())
    _png(tmp_path / "b.png", _field(1))
    os.utime(tmp_path / "a.png", ns=(10**9, 10**9))  # a is older
    assert run(unlogged=("b.png",)) == ["a.png", "b.png"]  # "killed" before b was logged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # nothing written
    assert run(unlogged=("b.png",)) == ["b.png"]
    assert run() == ["b.png"]
    assert run() == []
    _png(tmp_path / "c.png", _field(2))
    assert run() == ["c.png"]
    os.utime(tmp_path / "a.png", ns=(5, 5))  # touched, same content: still done
    assert run() == []
    _png(tmp_path / "a.png", _field(3))  # new content under the old name: a new field
    assert run() == ["a.png"]


def test_read_only_folder_is_processed_and_left_untouched(tmp_path):
    folder = tmp_path / "in"
    (folder / "S-1").mkdir(parents=True)
    _png(folder / "a.png", _field())
    _png(folder / "S-1" / "b.png", _field(1))
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    for sub in (folder / "S-1", folder):
        sub.chmod(0o555)
    try:
        frames = _bounded(open_source(f"folder:{folder}", once=True, **FAST))
    finally:
        for sub in (folder, folder / "S-1"):
            sub.chmod(0o755)
    assert sorted((f.slide or "", Path(f.source_id).name) for f in frames) == [
        ("", "a.png"),
        ("S-1", "b.png"),
    ]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before


def test_folder_subfolders_are_slides_ended_by_marker_or_idle_time(tmp_path, caplog):
    for slide, n in (("S-0042", 2), ("S-0043", 1)):
        (tmp_path / slide).mkdir()
        for i in range(n):
            _png(tmp_path / slide / f"f{i}.png", _field(i))
    _png(tmp_path / "top.png", _field(9))
    (tmp_path / "S-0042" / "END").write_text("")
    (tmp_path / "bad name").mkdir()
    _png(tmp_path / "bad name" / "x.png", _field())
    (tmp_path / ".hidden").mkdir()
    _png(tmp_path / ".hidden" / "y.png", _field())
    source = open_source(f"folder:{tmp_path}", idle_end=0.3, **FAST)
    events, start = [], time.monotonic()
    for frame in source:
        kind = frame.ends_slide or Path(frame.source_id).name
        events.append((frame.slide, kind, round(time.monotonic() - start, 1)))
        if frame.ends_slide and frame.slide == "S-0043":
            source.stop()
        assert time.monotonic() - start < 10
    by_slide = {}
    for slide, kind, _ in events:
        by_slide.setdefault(slide, []).append(kind)
    assert by_slide["S-0042"] == ["f0.png", "f1.png", "end marker END"]  # files, then the end
    assert by_slide["S-0043"] == ["f0.png", "no new file for 0.3 s"]
    assert by_slide[None][0] == "top.png"
    idle = [t for slide, kind, t in events if slide == "S-0043" and kind.startswith("no new")]
    assert idle[0] >= 0.3
    marker = next(e for e in events if e[1] == "end marker END")
    assert marker[0] == "S-0042"
    assert "'bad name'" in caplog.text and "its files are not read" in caplog.text
    assert "y.png" not in str(events)
    with pytest.raises(ValueError, match="idle_end must be > 0"):
        open_source(f"folder:{tmp_path}", idle_end=0)


def test_undecodable_file_name_is_read_and_printable(tmp_path):
    raw = os.fsencode(tmp_path) + b"/field-\xff\xfe.png"
    data = cv2.imencode(".png", _field())[1].tobytes()
    with open(raw, "wb") as f:
        f.write(data)
    (frame,) = _bounded(open_source(f"folder:{tmp_path}", once=True, **FAST))
    assert frame.error is None and frame.data == data
    assert frame.source_id.endswith("field-\\xff\\xfe.png")
    frame.source_id.encode("utf-8")  # storable and printable
    assert os.fsencode(frame.path) == raw


def test_symlink_loop_does_not_stop_the_folder(tmp_path, caplog):
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("missing.png", tmp_path / "dangling.png")
    (tmp_path / "S-1").mkdir()
    os.symlink(".", tmp_path / "S-1" / "S-1")  # a folder that contains itself
    _png(tmp_path / "good.png", _field())
    _png(tmp_path / "S-1" / "good.png", _field(1))
    source = open_source(f"folder:{tmp_path}", **FAST)
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == 2:
            threading.Timer(0.2, source.stop).start()  # a few more scans
    assert sorted((f.slide or "", Path(f.source_id).name) for f in frames) == [
        ("", "good.png"),
        ("S-1", "good.png"),
    ]
    assert all(f.error is None for f in frames)
    assert caplog.text.count("loop.jpg: cannot read") == 1  # reported once, not per scan


def test_stalled_writer_gives_one_field_and_no_error(tmp_path, caplog):
    data = cv2.imencode(".jpg", cv2.cvtColor(_field(size=96), cv2.COLOR_RGB2BGR))[1].tobytes()
    path = tmp_path / "stall.jpg"

    def writer():
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.0)  # stalls longer than decode_timeout
            f.write(data[len(data) // 2 :])

    source = open_source(f"folder:{tmp_path}", poll=0.02, settle=0.05, decode_timeout=0.3)
    thread = threading.Thread(target=writer)
    thread.start()
    frames = []
    timer = threading.Timer(10, source.stop)
    timer.start()
    for frame in source:
        frames.append(frame)
        threading.Timer(0.3, source.stop).start()
    timer.cancel()
    thread.join()
    (frame,) = frames
    assert frame.error is None and frame.data == data
    assert "stall.jpg: still incomplete after 0.3 s" in caplog.text


def test_content_errors_are_decoded_once(tmp_path, monkeypatch):
    from leukedge.edge.sources import files

    calls = []
    real = files.decode_field
    monkeypatch.setattr(files, "decode_field", lambda *a, **k: calls.append(1) or real(*a, **k))
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    source = open_source(f"folder:{tmp_path}", **FAST)
    threading.Timer(0.3, source.stop).start()  # many scans
    (frame,) = list(source)
    assert "text.png" in frame.error and len(calls) == 1


def test_folder_watches_for_new_files_until_stopped(tmp_path):
    source = open_source(f"folder:{tmp_path}", poll=0.01, settle=0.05, decode_timeout=5)

    def drop():
        time.sleep(0.1)
        _png(tmp_path / "new.png", _field())

    threading.Thread(target=drop).start()
    timer = threading.Timer(10, source.stop)
    timer.start()
    start = time.monotonic()
    frames = []
    for frame in source:
        frames.append(frame)
        threading.Timer(0.1, source.stop).start()
    timer.cancel()
    assert [Path(f.source_id).name for f in frames] == ["new.png"]
    assert time.monotonic() - start < 5


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        open_source(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="unknown option.*colour"):
        open_source("folder:/tmp", colour=1)


# -- video, files, synthetic ------------------------------------------------------


def test_video_every_nth_frame_in_rgb(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    assert writer.isOpened()
    for i in range(6):
        bgr = np.zeros((24, 32, 3), np.uint8)
        bgr[..., 2] = 250  # red
        bgr[..., 1] = 40 * i
        writer.write(bgr)
    writer.release()
    frames = _bounded(open_source(f"video:{path}?step=2"))
    assert [f.source_id for f in frames] == [f"video:{path}#{i}" for i in (0, 2, 4)]
    for i, frame in zip((0, 2, 4), frames):
        assert frame.rgb.shape == (24, 32, 3)
        r, g, b = frame.rgb.reshape(-1, 3).mean(0)
        assert r > 200 and b < 40 and abs(g - 40 * i) < 20
    (missing,) = _bounded(open_source(f"video:{tmp_path / 'none.avi'}"))
    assert "cannot open video" in missing.error


def test_files_paths_globs_and_folders(tmp_path):
    for name in ["b.png", "a.png", "c.jpg"]:
        _png(tmp_path / name, _field())
    (tmp_path / "skip.txt").write_text("x")
    (tmp_path / "empty.png").write_bytes(b"")

    def names(uri):
        """File names yielded, "!" appended for an error frame."""
        frames = _bounded(open_source(uri))
        return [Path(f.source_id).name + ("!" if f.error else "") for f in frames]

    assert names(str(tmp_path / "*.png")) == ["a.png", "b.png", "empty.png!"]
    assert names(tmp_path) == ["a.png", "b.png", "c.jpg", "empty.png!"]
    assert names([tmp_path / "c.jpg", str(tmp_path / "a.png")]) == ["c.jpg", "a.png"]
    (missing,) = _bounded(open_source(str(tmp_path / "none.jpg")))
    assert "none.jpg" in missing.error and "cannot read" in missing.error
    (nomatch,) = _bounded(open_source(str(tmp_path / "*.tif")))
    assert "no image files match" in nomatch.error


def test_synthetic_is_deterministic():
    def grab(uri, **kw):
        return _bounded(open_source(uri, **kw))

    a, b = grab("synthetic?n=5&seed=3&size=40x32"), grab("synthetic", n=5, seed=3, size=(40, 32))
    labels = ["Benign", "Early", "Pre", "Pro", "Benign"]
    assert [f.source_id for f in a] == [f"synthetic:{c}#{i}" for i, c in enumerate(labels)]
    assert all(f.rgb.shape == (32, 40, 3) for f in a)
    assert all(np.array_equal(x.rgb, y.rgb) for x, y in zip(a, b))
    assert [f.sha256 for f in a] == [f.sha256 for f in b]
    c = grab("synthetic?n=5&seed=4&size=40x32")
    assert not np.array_equal(a[0].rgb, c[0].rgb)
    pro = grab("synthetic:Pro?n=2")
    assert [f.source_id for f in pro] == ["synthetic:Pro#0", "synthetic:Pro#1"]
    with pytest.raises(ValueError, match="unknown class"):
        open_source("synthetic:Blast")
    with pytest.raises(ValueError, match="unknown option.*speed.*allowed: n, seed, size"):
        open_source("synthetic?speed=2")
