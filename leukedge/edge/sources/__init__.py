"""Frame sources: cameras, a hot folder, video, image files and synthetic fields.

Every source is an iterator and context manager of ``Frame`` objects; bad
input comes as frames with ``error`` set, never as an exception. To log each
field exactly once, even across a SIGKILL, a consumer keeps its done-state in
the results log: it skips frames the log already holds and counts a field only
once its row is committed (``leukedge.edge.station.Station`` does this)::

    with open_source("folder:/srv/scans") as source:
        source.already_done = lambda f: "logged" if log.has(slide, f.source_id, f.sha256) else None
        for frame in source:
            if not log.has(slide, frame.source_id, frame.sha256):
                ...  # classify, then log.log_result(...) or log.log_error(...)
"""

from .base import Frame, Source
from .capture import UsbSource, VideoSource
from .files import FilesSource, is_image_name
from .hotfolder import FolderSource
from .picamera import Picamera2Source
from .synthetic import SyntheticSource
from .uri import open_source

__all__ = [
    "FilesSource",
    "FolderSource",
    "Frame",
    "Picamera2Source",
    "Source",
    "SyntheticSource",
    "UsbSource",
    "VideoSource",
    "is_image_name",
    "open_source",
]
