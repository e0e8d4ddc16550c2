"""``open_source``: pick and configure a source from a URI-like string."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .base import Source
from .capture import UsbSource, VideoSource
from .files import FilesSource
from .hotfolder import FolderSource
from .picamera import Picamera2Source
from .synthetic import SyntheticSource

_URI = re.compile(r"^(picamera2|usb|folder|video|synthetic)(?::([^?]*))?(?:\?(.*))?$")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _value(text: str) -> Any:
    """A query value as int, float, bool, (width, height) for ``WxH``, or str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in _BOOLS:
        return _BOOLS[text.lower()]
    size = _SIZE.match(text)
    return (int(size[1]), int(size[2])) if size else text


def _index(uri: str, arg: str) -> int:
    try:
        return int(arg or 0)
    except ValueError:
        raise ValueError(f"{uri}: camera index must be a number, got {arg!r}") from None


def _build(cls: type[Source], uri: str, *args: Any, **options: Any) -> Source:
    params = inspect.signature(cls).parameters
    unknown = sorted(set(options) - {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY})
    if unknown:
        allowed = ", ".join(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise ValueError(f"{uri}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
    return cls(*args, **options)


def open_source(uri: str | Path | Sequence[str | Path], **options: Any) -> Source:
    """Open a frame source.

    ``uri`` is one of:

    * ``picamera2`` or ``picamera2:N``: Raspberry Pi camera N (``Picamera2Source``);
    * ``usb:N``: OpenCV camera N, reopened with back-off when it drops (``UsbSource``);
    * ``folder:PATH``: a hot folder, watched until stopped (``FolderSource``);
    * ``video:PATH``: the frames of a video file (``VideoSource``);
    * ``synthetic`` or ``synthetic:LABEL``: generated fields (``SyntheticSource``);
    * anything else: an image path, a folder of images or a glob, or a list of
      them (``FilesSource``).

    Options go to the source's keyword arguments; for the schemes above they may
    also be given as a query, ``synthetic:Pro?n=8&seed=1&size=224`` (values are
    read as numbers, ``true``/``false`` or ``WxH`` sizes; keyword arguments win).
    Sizes are (width, height) everywhere. An unknown option is a ``ValueError``.
    """
    if not isinstance(uri, (str, Path)):
        return _build(FilesSource, str(uri), list(uri), **options)
    text = str(uri)
    match = _URI.match(text) if isinstance(uri, str) else None
    if match is None:
        return _build(FilesSource, text, [uri], **options)
    scheme, arg, query = match[1], match[2] or "", match[3]
    options = {**{k: _value(v) for k, v in parse_qsl(query or "")}, **options}
    if scheme == "picamera2":
        return _build(Picamera2Source, text, _index(text, arg), **options)
    if scheme == "usb":
        return _build(UsbSource, text, _index(text, arg), **options)
    if scheme == "synthetic":
        return _build(SyntheticSource, text, arg or None, **options)
    if not arg:
        raise ValueError(f"{text}: a path is required, e.g. {scheme}:/path")
    cls = FolderSource if scheme == "folder" else VideoSource
    return _build(cls, text, arg, **options)
