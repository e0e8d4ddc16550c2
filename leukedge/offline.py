"""Keep Ultralytics, Hugging Face and Keras off the network.

Call ``ensure_offline()`` before the first ``import ultralytics``: Ultralytics
8.4 reads its environment once, at import. What it would otherwise reach:

* ``ultralytics.utils.ONLINE``: DNS probes of one.one.one.one and dns.google at
  import; ``YOLO_OFFLINE=1`` skips them, which also disables the PyPI update
  check (pypi.org), pip/uv AutoUpdate and the usage events (google-analytics).
* ``check_requirements`` AutoUpdate (pip/uv install): ``YOLO_AUTOINSTALL=0``.
* settings ``sync`` (usage events, Sentry), the logger integrations (ClearML,
  Comet, DVC, MLflow, Ray Tune, TensorBoard, W&B) and the Platform callback
  (platform.ultralytics.com): off in a private ``settings.json``, Platform API
  key empty, ``ULTRALYTICS_API_KEY`` removed from the environment.
* ``check_font``: ``requests.head``/``get`` of Arial.ttf from
  github.com/ultralytics/assets whenever a plot or annotated image is drawn,
  even with ``YOLO_OFFLINE`` set. A local TTF copied into the config dir as
  ``Arial.ttf`` and ``Arial.Unicode.ttf`` satisfies it; with no TTF at hand
  ``OfflineEnv.font`` is None and callers must train with ``plots=False``.
* Hugging Face Hub (some Ultralytics models): ``HF_HUB_OFFLINE=1``.

No environment switch stops these; ``leukedge.training.yolo`` avoids them:
weight files named but missing locally (``attempt_download_asset`` fetches
``yolo11n-cls.pt`` & co.), the CUDA AMP check (``check_amp`` fetches
``yolo26n.pt``; ``amp="bf16"`` or ``False`` skips it) and datasets given by
name or URL. Keras downloads ImageNet weights unless models are built with
``weights=None``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

#: Environment set by ``ensure_offline``.
OFFLINE_ENV: dict[str, str] = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "HF_HUB_OFFLINE": "1"}

#: Ultralytics settings forced by ``ensure_offline``.
OFFLINE_SETTINGS: dict[str, object] = {
    "sync": False,
    "api_key": "",
    **dict.fromkeys(
        ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb"), False
    ),
    "vscode_msg": False,
    "openvino_msg": False,
}

#: System font folders searched when matplotlib is missing.
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")

#: File names under which Ultralytics' ``check_font`` looks for its fonts.
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


class OfflineEnv(NamedTuple):
    """Where Ultralytics keeps its settings, and the font placed there (None: none found)."""

    config_dir: Path  # YOLO_CONFIG_DIR; Ultralytics uses config_dir / "Ultralytics"
    font: Path | None


def _default_config_dir() -> Path:
    """``$YOLO_CONFIG_DIR`` if set, else ``$XDG_CACHE_HOME/leukedge/ultralytics`` (or ~/.cache)."""
    if env := os.environ.get("YOLO_CONFIG_DIR"):
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "leukedge" / "ultralytics"


def _ttf_candidates():
    """Matplotlib's DejaVuSans first, then system fonts (DejaVuSans preferred)."""
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations if spec else None) or []:
        yield Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    for root in FONT_DIRS:
        if Path(root).is_dir():
            yield from sorted(Path(root).rglob("DejaVuSans.ttf"))
            yield from sorted(Path(root).rglob("*.ttf"))


def find_ttf() -> Path | None:
    """A TrueType font available offline, or None."""
    return next((p for p in _ttf_candidates() if p.is_file()), None)


def _atomic_write(dst: Path, data: bytes) -> None:
    """Replace ``dst`` in one step, so concurrent readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)


def _place_fonts(ul_dir: Path, font: Path) -> None:
    """Copy ``font`` into Ultralytics' config dir under the names ``check_font`` looks for."""
    for name in FONT_NAMES:
        dst = ul_dir / name
        if not dst.is_file() or dst.stat().st_size != font.stat().st_size:
            _atomic_write(dst, font.read_bytes())


def _write_settings(ul_dir: Path) -> None:
    """Merge ``OFFLINE_SETTINGS`` into ``settings.json`` (Ultralytics fills in the other keys)."""
    file = ul_dir / "settings.json"
    try:
        settings = json.loads(file.read_text())
    except (OSError, ValueError):
        settings = {}
    if not isinstance(settings, dict):
        settings = {}
    if any(settings.get(k) != v for k, v in OFFLINE_SETTINGS.items()):
        _atomic_write(file, json.dumps({**settings, **OFFLINE_SETTINGS}, indent=2).encode())


def _patch_loaded_ultralytics(font: Path | None) -> None:
    """Ultralytics is already imported: give its config dir the font and, if it was
    imported before ``ensure_offline``, switch off in memory the flags it froze."""
    utils = sys.modules["ultralytics.utils"]
    if font is not None:
        _place_fonts(Path(utils.USER_CONFIG_DIR), font)
    settings = utils.SETTINGS
    if not (utils.ONLINE or utils.AUTOINSTALL) and all(
        settings.get(k) == v for k, v in OFFLINE_SETTINGS.items()
    ):
        return
    warnings.warn(
        "ultralytics was imported before leukedge.offline.ensure_offline(); patching it in memory",
        RuntimeWarning,
        stacklevel=3,
    )
    for name, module in list(sys.modules.items()):
        if name.startswith("ultralytics") and module is not None:
            for flag in ("ONLINE", "AUTOINSTALL"):
                if hasattr(module, flag):
                    setattr(module, flag, False)
    dict.update(settings, OFFLINE_SETTINGS)  # in memory only: never rewrite a foreign file
    if events := sys.modules.get("ultralytics.utils.events"):
        events.events.enabled = False


def ensure_offline(workdir: str | Path | None = None) -> OfflineEnv:
    """Make Ultralytics, Hugging Face Hub and Keras safe to use without a network.

    Sets ``OFFLINE_ENV``, removes ``ULTRALYTICS_API_KEY``, and points
    ``YOLO_CONFIG_DIR`` at ``workdir`` (default: an existing ``YOLO_CONFIG_DIR``,
    else ``$XDG_CACHE_HOME/leukedge/ultralytics``), whose ``Ultralytics/``
    folder gets ``OFFLINE_SETTINGS`` and a local TTF as ``Arial.ttf`` and
    ``Arial.Unicode.ttf``. Idempotent; call it before importing ultralytics.
    """
    os.environ.update(OFFLINE_ENV)
    os.environ.pop("ULTRALYTICS_API_KEY", None)
    config_dir = Path(workdir).expanduser() if workdir is not None else _default_config_dir()
    ul_dir = config_dir / "Ultralytics"
    try:
        ul_dir.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: a private temp dir
        config_dir = Path(tempfile.gettempdir()) / f"leukedge-{os.getuid()}" / "ultralytics"
        ul_dir = config_dir / "Ultralytics"
        ul_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    _write_settings(ul_dir)
    font = find_ttf()
    if font is not None:
        _place_fonts(ul_dir, font)
    if "ultralytics.utils" in sys.modules:
        _patch_loaded_ultralytics(font)
    return OfflineEnv(config_dir, ul_dir / FONT_NAMES[0] if font else None)
