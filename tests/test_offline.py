"""Offline guarantees: ``ensure_offline`` and a tiny YOLO train + ONNX export with no network."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket

import numpy as np
import pytest

from leukedge.edge.classes import CLASSES
from leukedge.edge.imageio import read_field
from leukedge.edge.synth import write_synth_dataset
from leukedge.offline import FONT_NAMES, OFFLINE_ENV, OFFLINE_SETTINGS, ensure_offline, find_ttf

ENV_KEYS = (*OFFLINE_ENV, "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY")


@pytest.fixture
def restore_env(monkeypatch):
    """Undo ``ensure_offline``'s environment changes after the test."""
    for key in ENV_KEYS:
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)


def test_network_guard_catches_this_process_and_every_subprocess(tmp_path):
    """The guard every ``slow`` (train/export) test runs under (conftest.network_guard):
    an attempt a library swallows is still recorded, Python subprocesses are watched, and
    other subprocesses have no network at all where ``unshare -n`` works; loopback stays."""
    import subprocess
    import sys
    import urllib.request

    from conftest import CAN_UNSHARE, network_guard

    quiet = "import urllib.request\ntry: urllib.request.urlopen('http://example.com', timeout=2)\n"
    quiet += "except OSError: pass"
    server = socket.create_server(("127.0.0.1", 0))
    with network_guard([], tmp_path / "record") as attempts:
        with pytest.raises(OSError, match="network disabled"):
            socket.create_connection(("192.0.2.1", 80), timeout=2)
        try:
            urllib.request.urlopen("http://example.com", timeout=2)
        except OSError:
            pass  # swallowed, as Ultralytics and Keras do: recorded all the same
        child = subprocess.run([sys.executable, "-c", quiet], capture_output=True, timeout=60)
        shell = subprocess.run(
            ["timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/192.0.2.1/80"], capture_output=True
        )
        socket.create_connection(server.getsockname(), timeout=2).close()  # loopback: fine
    server.close()
    assert [a.split()[1] for a in attempts] == ["'192.0.2.1'", "'example.com'"]
    assert child.returncode == 0 and "'example.com'" in (tmp_path / "record").read_text()
    if CAN_UNSHARE:
        assert shell.returncode != 0 and b"unreachable" in shell.stderr.lower()


def test_ensure_offline_sets_env_settings_and_font(tmp_path, restore_env, monkeypatch):
    monkeypatch.setenv("ULTRALYTICS_API_KEY", "dummy")
    env = ensure_offline(tmp_path / "cfg")
    assert ensure_offline(tmp_path / "cfg") == env  # idempotent
    assert env.config_dir == tmp_path / "cfg"
    for key, value in OFFLINE_ENV.items():
        assert os.environ[key] == value
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "cfg")
    assert "ULTRALYTICS_API_KEY" not in os.environ
    ul_dir = tmp_path / "cfg" / "Ultralytics"
    settings = json.loads((ul_dir / "settings.json").read_text())
    assert {k: settings[k] for k in OFFLINE_SETTINGS} == OFFLINE_SETTINGS
    ttf = find_ttf()
    if ttf is None:
        assert env.font is None
    else:
        assert env.font == ul_dir / "Arial.ttf"
        for name in FONT_NAMES:
            assert (ul_dir / name).read_bytes() == ttf.read_bytes()


def _write_split(root, n_per_class: int = 6):
    """Synthetic 48x64 fields: per class all but two train, one val, one test."""
    paths = write_synth_dataset(root / "raw", n_per_class, size=(48, 64))
    split_csv = root / "split.csv"
    with split_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "group"])
        for group, path in enumerate(paths):
            i = int(path.stem.rsplit("-", 1)[1])
            split = "val" if i == n_per_class - 2 else "test" if i == n_per_class - 1 else "train"
            writer.writerow([path.resolve(), path.parent.name, split, group])
    return split_csv


def test_build_imagefolder_links_or_preprocesses(tmp_path):
    from leukedge.training.yolo import build_imagefolder

    split_csv = _write_split(tmp_path, n_per_class=3)  # per class: 1 train, 1 val, 1 test
    out = build_imagefolder(split_csv, tmp_path / "folder")
    for split in ("train", "val", "test"):
        folders = sorted((out / split).iterdir())
        assert [f.name for f in folders] == list(CLASSES)
        assert all(len(list(f.iterdir())) == 1 for f in folders)
    linked = next((out / "train" / "Pre").iterdir())
    src = tmp_path / "raw" / "Original" / "Pre" / linked.name
    assert linked.read_bytes() == src.read_bytes()

    out = build_imagefolder(split_csv, tmp_path / "folder", preprocess=lambda rgb: rgb[:32, :32])
    assert read_field(next((out / "val" / "Early").iterdir())).shape == (32, 32, 3)
    assert sum(1 for _ in out.rglob("*.png")) == 3 * len(CLASSES)  # old tree replaced


def test_build_imagefolder_turns_jittered_copies(tmp_path):
    from leukedge.training.jitter import dihedral
    from leukedge.training.yolo import build_imagefolder

    split_csv = _write_split(tmp_path, n_per_class=3)
    square = lambda rgb: rgb[:32, :32]  # noqa: E731
    out = build_imagefolder(
        split_csv, tmp_path / "folder", square, augment=lambda rgb, rng: rgb, copies=8, turns=True
    )
    turns = []
    for original in (out / "train").glob("*/synth-*-[0-9][0-9][0-9][0-9].png"):
        seen = read_field(original)
        for copy in original.parent.glob(f"{original.stem}-j*.png"):
            turned = read_field(copy)
            turns += [k for k in range(8) if np.array_equal(dihedral(seen, k), turned)][:1]
    assert len(turns) == 8 * len(CLASSES)  # every copy is a flip or turn of its field
    assert {1, 3, 5, 7} & set(turns)  # and quarter turns occur, which Ultralytics never makes


@pytest.mark.slow
def test_tiny_train_and_onnx_export_stay_offline(tmp_path, restore_env):
    """Guarded like every ``slow`` test (conftest.network_guard): no network use at all."""
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics not installed")
    from leukedge.export.yolo import export_yolo_onnx
    from leukedge.training.yolo import build_imagefolder, classify_preprocess, train_yolo

    data = build_imagefolder(_write_split(tmp_path), tmp_path / "folder")
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (data / split).iterdir() if p.is_dir()) == list(CLASSES)
    best = train_yolo(data, tmp_path / "run", epochs=1, imgsz=32, batch=8, seed=0)
    onnx_path = export_yolo_onnx(best, tmp_path / "onnx", imgsz=32)  # checks |ONNX - torch| < 1e-4

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["names"]) == list(CLASSES)
    assert json.loads(meta["leukedge.preprocess"])["imgsz"] == 32
    field = sorted((data / "test" / "Pro").iterdir())[0]
    probs = sess.run(None, {"images": classify_preprocess(read_field(field), 32)})[0]
    assert probs.shape == (1, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # The documented preprocessing reproduces Ultralytics' own predictor (resize + crop of 48x64).
    from ultralytics import YOLO

    result = YOLO(str(best)).predict(str(field), device="cpu", verbose=False)[0]
    np.testing.assert_allclose(result.probs.data.cpu().numpy(), probs[0], atol=1e-4)
