"""The station configuration file (``/etc/leukedge/station.toml``)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BACKENDS = ("auto", "onnxruntime", "litert")


class ConfigError(ValueError):
    """A config file that cannot be used; names the file and the key."""


@dataclass
class StationConfig:
    """What a station runs; ``leukedge run`` options override these values.

    source : a source URI for ``open_source`` (``picamera2``, ``usb:0``,
        ``folder:/path``, ``video:PATH``, image paths or globs, ``synthetic``).
    source_options : keyword options for that source, e.g. ``{"size": [2028, 1520]}``.
    slide_id : ``time.strftime`` pattern naming a new slide.
    model : model file (.onnx or .tflite); "" for the packaged default.
    backend : "auto", "onnxruntime" or "litert".
    threads : inference threads (>= 1).
    results_dir : results folder; "" for ``$LEUKEDGE_RESULTS`` or the user default.
    uncertain_threshold : fields whose top probability is below this (0..1) are uncertain.
    save_frames : also keep each frame as an image next to the results.

    ``~`` is expanded; relative ``model`` and ``results_dir`` paths are taken
    from the config file's folder.
    """

    source: str = "picamera2"
    source_options: dict[str, Any] = field(default_factory=dict)
    slide_id: str = "slide-%Y%m%d-%H%M%S"
    model: str = ""
    backend: str = "auto"
    threads: int = 4
    results_dir: str = ""
    uncertain_threshold: float = 0.6
    save_frames: bool = False

    def new_slide_id(self, when: float | None = None) -> str:
        """The ``slide_id`` pattern filled in for ``when`` (default now, local time)."""
        return time.strftime(self.slide_id, time.localtime(when))


def _check_type(path: Path, key: str, value: Any, default: Any) -> None:
    kind = type(default)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        expected = names.get(kind, "a table")
        raise ConfigError(f"{path}: key {key!r} must be {expected}, got {value!r}")


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station config; ``ConfigError`` names the file and the
    bad key (unknown keys, wrong types, out-of-range values)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    defaults = StationConfig()
    known = [f.name for f in fields(StationConfig)]
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(known)}")
        _check_type(path, key, value, getattr(defaults, key))
    config = StationConfig(**raw)
    if config.backend not in BACKENDS:
        raise ConfigError(
            f"{path}: key 'backend' must be one of {BACKENDS}, got {config.backend!r}"
        )
    if config.threads < 1:
        raise ConfigError(f"{path}: key 'threads' must be >= 1, got {config.threads}")
    if not 0.0 <= config.uncertain_threshold <= 1.0:
        raise ConfigError(
            f"{path}: key 'uncertain_threshold' must be in 0..1, got {config.uncertain_threshold}"
        )
    for key in ("model", "results_dir"):
        value = getattr(config, key)
        if value:
            setattr(config, key, str(path.parent / Path(value).expanduser()))
    config.uncertain_threshold = float(config.uncertain_threshold)
    return config
