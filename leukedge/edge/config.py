"""The station configuration file (``/etc/leukedge/station.toml``)."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import LeukedgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BACKENDS = ("auto", "onnxruntime", "litert")
#: Kinds of source, as ``open_source`` tells them apart: the URI scheme, or "files" for
#: image paths, folders and globs. Each may have its own ``[source_options.KIND]`` table.
SOURCE_KINDS = ("picamera2", "usb", "folder", "video", "synthetic", "files")
_SCHEME = re.compile(r"^(picamera2|usb|folder|video|synthetic)(?=$|[:?])")
MODEL_SUFFIXES = (".onnx", ".tflite")


class ConfigError(LeukedgeError, ValueError):
    """A config file that cannot be used; names the file and the key."""


def max_threads() -> int:
    """The most inference threads allowed here: twice the CPU cores."""
    return 2 * (os.cpu_count() or 1)


#: The types of the config keys whose default is None (unset).
UNSET_KINDS = {"threads": int, "workers": int}


def station_threads() -> int:
    """A station's inference threads unless set: the CPU cores this process may use, less
    one, at least one. Capture, the gate and segmentation run beside the model (a folder's
    on a thread of their own), and inference threads on every core spin against them: on
    two cores, four threads halved a folder's fields per second."""
    return max(1, _cores() - 1)


def _cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def station_workers() -> int:
    """A station's worker processes unless set (``leukedge.edge.workers``): one per CPU
    core this process may use where there are two or more, else none."""
    cores = _cores()
    return cores if cores >= 2 else 0


def check_workers(workers: object, where: str = "workers") -> int:
    """``workers`` when it is an integer in 0..the CPU cores this process may use (as
    ``station_workers`` counts them); else ``ConfigError`` naming ``where``."""
    limit = _cores()
    if not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= limit:
        raise ConfigError(
            f"{where} must be an integer in 0..{limit} (the CPU cores here; 0: no worker "
            f"processes), got {workers!r}"
        )
    return workers


def check_threads(threads: object, where: str = "threads") -> int | None:
    """``threads`` when it is None (the runtime's default) or an integer in
    1..``max_threads()``; else ``ConfigError`` naming ``where``. Both backends and the
    config use this one rule."""
    if threads is None:
        return None
    limit = max_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= limit:
        raise ConfigError(
            f"{where} must be an integer in 1..{limit} (twice the {os.cpu_count()} CPU cores "
            f"here), got {threads!r}"
        )
    return threads


def source_kind(source: str) -> str:
    """The kind of a source URI (one of ``SOURCE_KINDS``): ``folder:/x`` -> "folder"."""
    m = _SCHEME.match(str(source))
    return m[1] if m else "files"


@dataclass
class StationConfig:
    """What a station runs; ``leukedge run`` options override these values.

    source : a source URI for ``open_source`` (``picamera2``, ``usb:0``,
        ``folder:/path``, ``video:PATH``, image paths or globs, ``synthetic``).
    source_options : options of the sources: a table per kind of source (``SOURCE_KINDS``),
        e.g. ``{"picamera2": {"size": [2028, 1520]}, "folder": {"poll": 1.0}}``, of which
        only the current source's is used (``options_for``); keys outside a table apply
        to whatever the source is.
    slide_id : ``time.strftime`` pattern naming a new slide.
    model : a model bundle: a shipped name ("default", "mobilenetv2") or a bundle folder
        (with ``leukedge.json``); "" for "default". Not a bare .onnx/.tflite file.
    backend : "auto", "onnxruntime" or "litert".
    threads : inference threads, 1..``max_threads()``; None (unset): ``station_threads()``.
    workers : processes that classify files read ahead (a folder, paths), one inference
        thread each, 0..the CPU cores; 0: none; None (unset): ``station_workers()``.
    results_dir : results folder; "" for ``$LEUKEDGE_RESULTS`` or the user default.
    uncertain_threshold : fields whose top probability is below this (0..1) are uncertain.
    save_frames : also keep each frame as an image next to the results.
    trusted_key : an Ed25519 public key (PEM); when set, only bundles signed with its
        private key load (``leukedge bundle sign``). "" accepts unsigned bundles.
    token : the web page's access token (``leukedge serve``), required on every request
        when set and needed to listen on an address other than 127.0.0.1 ("": none; the
        service gives it as ``$LEUKEDGE_TOKEN`` from a root-only file instead).

    ``~`` is expanded; relative ``model`` folders (a value with a ``/``, or naming a folder
    beside the config), ``results_dir`` and ``trusted_key`` are taken from the config
    file's folder.
    """

    source: str = "picamera2"
    source_options: dict[str, Any] = field(default_factory=dict)
    slide_id: str = "slide-%Y%m%d-%H%M%S"
    model: str = ""
    backend: str = "auto"
    threads: int | None = None
    workers: int | None = None
    results_dir: str = ""
    uncertain_threshold: float = 0.6
    save_frames: bool = False
    trusted_key: str = ""
    token: str = ""

    def new_slide_id(self, when: float | None = None) -> str:
        """The ``slide_id`` pattern filled in for ``when`` (default now, local time)."""
        return time.strftime(self.slide_id, time.localtime(when))

    def options_for(self, source: str | None = None) -> dict[str, Any]:
        """Keyword options for ``source`` (default ``self.source``): the keys of
        ``source_options`` that are not tables, then the table of the source's kind."""
        kind = source_kind(source if source is not None else self.source)
        common = {k: v for k, v in self.source_options.items() if k not in SOURCE_KINDS}
        return {**common, **self.source_options.get(kind, {})}


def _check_type(path: Path, key: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        expected = names.get(kind, "a table")
        raise ConfigError(f"{path}: key {key!r} must be {expected}, got {value!r}")


def _model(path: Path, value: str) -> str:
    """A shipped bundle name stays a name; a folder path is taken from the config's folder."""
    if Path(value).suffix.lower() in MODEL_SUFFIXES:
        raise ConfigError(
            f"{path}: key 'model' must be a bundle folder (with leukedge.json) or a shipped "
            f'name such as "default", not a model file ({value!r}); give the folder the '
            "file was exported into"
        )
    local = path.parent / Path(value).expanduser()
    if "/" in value or value.startswith((".", "~")) or local.is_dir():
        return str(local)
    return value


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
        _check_type(path, key, value, UNSET_KINDS.get(key, type(getattr(defaults, key))))
    config = StationConfig(**raw)
    if config.backend not in BACKENDS:
        raise ConfigError(
            f"{path}: key 'backend' must be one of {BACKENDS}, got {config.backend!r}"
        )
    check_threads(config.threads, f"{path}: key 'threads'")
    if config.workers is not None:
        check_workers(config.workers, f"{path}: key 'workers'")
    if not 0.0 <= config.uncertain_threshold <= 1.0:
        raise ConfigError(
            f"{path}: key 'uncertain_threshold' must be in 0..1, got {config.uncertain_threshold}"
        )
    for key, value in config.source_options.items():
        if isinstance(value, dict) and key not in SOURCE_KINDS:
            raise ConfigError(
                f"{path}: [source_options.{key}] is not a kind of source; "
                f"use one of {', '.join(SOURCE_KINDS)}"
            )
    if config.model:
        config.model = _model(path, config.model)
    for key in ("results_dir", "trusted_key"):
        value = getattr(config, key)
        if value:
            setattr(config, key, str(path.parent / Path(value).expanduser()))
    if config.trusted_key and not Path(config.trusted_key).is_file():
        raise ConfigError(
            f"{path}: key 'trusted_key': {config.trusted_key} is not a file; give the public "
            'key made by leukedge bundle keygen, or "" to accept unsigned bundles'
        )
    config.uncertain_threshold = float(config.uncertain_threshold)
    return config
