"""The station: a model, the field pipeline, the results log and the open slides.

``leukedge run``, ``leukedge demo`` and the web page all drive a ``Station``;
none of them has station logic of its own. A field is processed exactly once
per slide: the results log is the done-state (a field already logged for the
slide is skipped, before decoding when the source reads files), and a field
counts only once its row is committed. Ending a slide computes its call with
``SlideTally`` and stores it with the slide. Methods are safe to call from
several threads (a web server's handlers and a capture loop).

``run`` on files (a folder, paths) reads ahead: one thread reads and decodes the
next fields and groups them, up to ``batch`` fields for one model call and one
commit. With ``workers`` the groups are gated, segmented and classified by worker
processes (``workers``: threads share Python's interpreter lock, processes scale)
in a long run (``WORKERS_BACKLOG``); until they are ready, and without them, that
thread gates and segments (``FieldPipeline.analyse``) while the model classifies
the current group here. A group ends early when the source has nothing more for
now (a hot folder between scans) or a slide ends, so a field that arrives alone
is logged at once.
Results are admitted, logged and reported here, in the source's order, each only
after its group's commit: a crash loses at most the uncommitted group, whose
fields are not in the log and so are processed again on restart.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import StationConfig, check_threads, check_workers, station_threads, station_workers
from .imageio import FieldError, write_field
from .model import Model, load_model
from .pipeline import Analysis, FieldPipeline, FieldResult
from .results_log import (
    ResultsLog,
    SlideError,
    SlideInfo,
    default_results_dir,
    validate_slide_id,
)
from .scale import MAX_TILES
from .slide import MAX_UNCERTAIN, MIN_AGREEMENT, MIN_FIELDS, SlideTally
from .sources.base import Frame, Source
from .workers import FieldWorkers, WorkerError

logger = logging.getLogger(__name__)

#: Default ``slide_pattern``: a ``time.strftime`` pattern naming a new slide.
SLIDE_PATTERN = "slide-%Y%m%d-%H%M%S"
#: Default ``batch``: fields of a read-ahead source classified in one model call and
#: logged in one commit.
BATCH = 16
#: Decoded frames the read-ahead thread may hold queued, in bytes (at least one frame):
#: large camera frames (36 MB at 12 MP) are read one or two ahead, 224 px fields 32.
READ_AHEAD_BYTES = 64 << 20
#: Fields a finite source (a folder read once, file paths) must still hold when its first
#: group is full for the worker processes to start: each takes about half a second of a
#: core to start, more than they save on a few hundred fields (``workers``). A watched
#: folder (``Source.endless``) starts them with its first full group.
WORKERS_BACKLOG = 1000
#: What ``run`` may know of a frame before it is logged: its ``FieldResult`` (classified by
#: a worker process), its ``Analysis`` (analysed on the reading thread) or nothing yet.
Prepared = FieldResult | Analysis | None


def _nbytes(frames: list[Frame]) -> int:
    """Bytes of the decoded pixels of ``frames`` (what ``READ_AHEAD_BYTES`` bounds)."""
    return sum(0 if f.rgb is None else f.rgb.nbytes for f in frames)


@dataclass(frozen=True)
class LoggedField:
    """A field the station processed: its slide, its row ``id`` in the results log
    (None if the row could not be added, e.g. logged meanwhile) and the result."""

    slide: str
    id: int | None
    result: FieldResult


def tally_from_rows(
    slide_id: str, rows: Iterable[dict[str, Any]], repair: ResultsLog | None = None
) -> SlideTally:
    """A slide's ``SlideTally`` rebuilt from its logged rows (``ResultsLog.outcomes``, or
    ``results``).

    With ``repair``, a copy whose row lacks "duplicate" (a crash came between logging it
    and storing its reasons) gets it in that log.
    """
    tally = SlideTally(slide_id)
    for r in rows:
        reasons = r["reasons"] or ()
        copy = tally.add(
            r["label"],
            bool(r["uncertain"]),
            r["error"] is not None,
            sha256=r["image_sha256"],
            phash=r["phash"],
            reasons=reasons,
        )
        if copy and repair is not None and "duplicate" not in reasons:
            repair.set_reasons(r["id"], (*reasons, "duplicate"))
    return tally


#: ``SlideTally.summary`` keys that ``call_record`` keeps outside its figures.
_NOT_FIGURES = ("slide", "call", "explanation", "refer", "notice")


def call_record(tally: SlideTally) -> dict[str, Any]:
    """The call stored with an ended slide: ``label`` (None: no call), ``text``,
    ``refer`` (refer to a haematologist), the rule's ``figures`` and ``notice``."""
    summary = tally.summary()
    figures = {k: v for k, v in summary.items() if k not in _NOT_FIGURES}
    figures["rule"] = {
        "max_uncertain": MAX_UNCERTAIN,
        "min_agreement": MIN_AGREEMENT,
        "min_fields": MIN_FIELDS,
    }
    return {
        "label": summary["call"],
        "text": summary["explanation"],
        "refer": summary["refer"],
        "figures": figures,
        "notice": summary["notice"],
    }


def end_logged_slide(log: ResultsLog, slide_id: str) -> dict[str, Any]:
    """End ``slide_id`` in ``log``: compute its call from its logged fields, store it
    with the slide and return it (``call_record``). An ended slide's stored call is
    returned as it is; ``KeyError`` if there is no such slide. A running station
    notices the end before its next field of that slide."""
    info = log.slide(slide_id)
    if info.state == "ended":
        return info.call or {}
    call = call_record(tally_from_rows(slide_id, log.outcomes(slide_id), log))
    log.end_slide(slide_id, call)
    return call


class Station:
    """Classify fields into slides and keep every result.

    model : a loaded ``Model``; log : the ``ResultsLog`` (``":memory:"`` for a demo).
    threshold, seg_mode : passed to ``FieldPipeline`` (None: the model's threshold).
    frames_dir : when set, camera/video/synthetic frames are saved as
        ``frames_dir/SLIDE/<sha256[:16]>.png`` so reports can show them (files
        read from disk are referred to by their own path).
    slide_pattern : ``time.strftime`` pattern naming a new slide in ``run``.
    batch : fields of a read-ahead source (``Source.read_ahead``) per group in
        ``run`` (module doc); 1 turns reading ahead off.
    workers : processes that classify a read-ahead source's groups (``workers``),
        started when a run's first full group comes from a watched folder or a source
        with ``WORKERS_BACKLOG`` fields to go (``start_workers``: at once), and kept
        until ``close``; 0: the reading thread and this process only.
    """

    def __init__(
        self,
        model: Model,
        log: ResultsLog,
        *,
        threshold: float | None = None,
        seg_mode: str = "robust",
        frames_dir: str | Path | None = None,
        slide_pattern: str = SLIDE_PATTERN,
        batch: int = BATCH,
        workers: int = 0,
    ):
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if workers < 0:
            raise ValueError(f"workers must be at least 0, got {workers}")
        self.model, self.log = model, log
        self.pipeline = FieldPipeline(model, seg_mode=seg_mode, threshold=threshold)
        self.frames_dir = Path(frames_dir) if frames_dir is not None else None
        self.slide_pattern = slide_pattern
        self.batch, self.workers = batch, workers
        self._workers: FieldWorkers | None = None  # started by the first read-ahead run
        self._workers_failed = False
        self.current: str | None = None  # the slide ``process`` uses by default
        self._tallies: dict[str, SlideTally] = {}  # open slides this station works on
        self._lock = threading.RLock()  # slides, tallies and the log
        self._infer_lock = threading.Lock()  # the pipeline
        self._default: str | None = None  # run(): the slide of frames without one
        self._fixed: str | None = None  # run(): that slide, when the caller named it
        self._source: Source | None = None

    @classmethod
    def from_config(
        cls,
        config: StationConfig,
        config_threshold: bool = True,
        *,
        frames_dir: str | Path | None = None,
        batch: int = BATCH,
    ) -> Station:
        """A station as ``config`` describes it: its model, backend, threads, worker
        processes, results folder, slide pattern, trusted key, frames (``save_frames``, or
        ``frames_dir``) and, if ``config_threshold``, its ``uncertain_threshold`` (else the
        model's); ``batch`` as in ``Station``.
        Raises ``ValueError`` (``ConfigError``, ``BundleError``) or ``ResultsError``
        naming the problem."""
        threads = check_threads(config.threads) or station_threads()
        model = load_model(
            config.model or "default",
            config.backend,
            threads,
            trusted_key=config.trusted_key or None,
        )
        log = ResultsLog(config.results_dir or default_results_dir())
        if frames_dir is None and config.save_frames:
            frames_dir = log.path.parent / "frames"
        return cls(
            model,
            log,
            threshold=config.uncertain_threshold if config_threshold else None,
            frames_dir=frames_dir,
            slide_pattern=config.slide_id,
            batch=batch,
            workers=(
                station_workers() if config.workers is None else check_workers(config.workers)
            ),
        )

    # -- slides -----------------------------------------------------------------

    def open_slide(
        self,
        slide_id: str,
        operator: str | None = None,
        notes: str | None = None,
        *,
        reopen: bool = False,
        **meta: Any,
    ) -> SlideInfo:
        """Start ``slide_id`` or continue it if open, and make it ``current``.

        ``SlideError`` for an invalid id, an ended slide (unless ``reopen``), or
        a slide started with another model.
        """
        with self._lock:
            info = self._open(slide_id, operator, notes, reopen=reopen, **meta)
            self.current = slide_id
            return info

    def _open(
        self,
        slide_id: str,
        operator: str | None = None,
        notes: str | None = None,
        *,
        reopen: bool = False,
        **meta: Any,
    ) -> SlideInfo:
        self._check_model(slide_id)
        info = self.log.start_slide(
            slide_id,
            model_sha256=self.model.sha256,
            model=self.model.name,
            operator=operator,
            notes=notes,
            reopen=reopen,
            **meta,
        )
        self._tallies[slide_id] = tally_from_rows(slide_id, self.log.outcomes(slide_id), self.log)
        return info

    def end_slide(self, slide_id: str) -> dict[str, Any]:
        """End ``slide_id`` and return its stored call (``end_logged_slide``)."""
        with self._lock:
            self._tallies.pop(slide_id, None)
            if self.current == slide_id:
                self.current = None
            return end_logged_slide(self.log, slide_id)

    def slide(self, slide_id: str) -> dict[str, Any]:
        """A slide as plain dicts: ``slide`` (info and stored call), ``tally`` (the
        running counts and call, ``SlideTally.summary``) and ``fields``."""
        with self._lock:
            record = self.log.record(slide_id)
            tally = self._tallies.get(slide_id) or tally_from_rows(slide_id, record["fields"])
            record["tally"] = tally.summary()
            return record

    def new_slide_id(self) -> str:
        """A new slide id from ``slide_pattern`` and the time now (``-2``, ``-3``...
        appended if that id is taken)."""
        base = validate_slide_id(time.strftime(self.slide_pattern))
        candidate, n = base, 1
        while self.log.find_slide(candidate) is not None:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def resume_slide(self, origin: str = "run") -> str | None:
        """The latest open slide with this model that ``origin`` started ("run": for
        frames without a slide of their own; "web": the web page), if any (a restart
        continues it)."""
        for info in reversed(self.log.slides()):
            same = info.meta.get("origin") == origin
            if info.state == "open" and same and info.model_sha256 == self.model.sha256:
                return info.id
        return None

    # -- fields -----------------------------------------------------------------

    def process(self, frame: Frame, slide_id: str | None = None) -> LoggedField | None:
        """Classify ``frame`` into ``slide_id`` (default ``current``), log it, count it.

        Returns None, doing nothing, if the slide already holds this field (same
        source and content). A slide this station has not opened is opened (or
        continued) first. ``SlideError`` for no slide or an ended one;
        ``ResultsError`` if the log cannot be written (the field is then not
        counted and is processed again next time).
        """
        with self._lock:
            slide = self._admit(frame, slide_id or self.current)
        if slide is None:
            return None
        (logged,) = self._classify_and_log([(frame, slide, None)])
        if isinstance(logged, SlideError):
            raise logged
        return logged

    def _admit(self, frame: Frame, slide: str | None) -> str | None:
        """The slide ``frame`` goes to, opened (or continued) if this station has not
        opened it; None if it already holds the field. Call with ``_lock`` held."""
        if slide is None:
            raise SlideError("no open slide: start a slide first")
        state, logged = self.log.field_state(slide, frame.source_id, frame.sha256)
        if state == "ended":  # perhaps by another process
            self._tallies.pop(slide, None)
        if slide not in self._tallies:
            self._open(slide)
        return None if logged else slide

    def _classify_and_log(
        self, items: list[tuple[Frame, str, Prepared]]
    ) -> list[LoggedField | SlideError]:
        """Classify admitted frames (frame, slide, what is done of it: ``Prepared``) in
        one model call and log them in one commit; per frame its ``LoggedField``, or the
        ``SlideError`` that kept it out (its slide ended meanwhile). ``ResultsError`` if
        the log cannot be written: none of them is then logged or counted."""
        results = [p if isinstance(p, FieldResult) else None for _, _, p in items]
        todo = [i for i, r in enumerate(results) if r is None]
        with self._infer_lock:  # one model call at a time (LiteRT is not thread-safe), and
            if todo:  # reads go on
                analyses = [items[i][2] or self.pipeline.analyse(items[i][0]) for i in todo]
                for i, res in zip(todo, self.pipeline.classify(analyses)):
                    results[i] = res
            images = [self._image_file(slide, f) for f, slide, _ in items]
        out: list[LoggedField | SlideError] = []
        with self._lock:
            try:
                with self.log.transaction():
                    for (_, slide, _), res, image in zip(items, results, images):
                        try:
                            out.append(self._record(slide, res, image))
                        except SlideError as exc:
                            out.append(exc)
            except BaseException:
                for _, slide, _ in items:  # counted, not committed: recount from the log
                    self._tallies.pop(slide, None)
                raise
        return out

    def _record(self, slide: str, res: FieldResult, image: str | None) -> LoggedField:
        """Log and count one classified field (inside a transaction, ``_lock`` held)."""
        if slide not in self._tallies:
            raise SlideError(f"slide {slide!r} ended while this field was classified")
        if res.error is None:
            field_id = self.log.log_result(slide, {**res.log_record(), "frame": image})
        else:
            field_id = self.log.log_error(
                slide, res.source, res.error, res.image_sha256, when=res.time, frame=image
            )
        if field_id is None:
            return LoggedField(slide, field_id, res)
        copy = self._tallies[slide].add(
            res.label,
            res.uncertain,
            res.error is not None,
            sha256=res.image_sha256,
            phash=res.phash,
            reasons=res.reasons,
        )
        if copy:  # a copy of an earlier field: counted, never as evidence
            res.reasons = (*res.reasons, "duplicate")
            self.log.set_reasons(field_id, res.reasons)
        return LoggedField(slide, field_id, res)

    @contextmanager
    def model_in_use(self) -> Iterator[Model]:
        """The model, held for a use outside ``process`` (e.g. an explanation): one user at
        a time, like the fields (LiteRT is not thread-safe)."""
        with self._infer_lock:
            yield self.model

    def _image_file(self, slide: str, frame: Frame) -> str | None:
        """Where the field's image is kept: its source file, or a frame saved in
        ``frames_dir`` (None if neither)."""
        if frame.path is not None:
            path = os.path.abspath(frame.path)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:  # a name that is not UTF-8: source_id has it escaped
                return None
            return path
        if self.frames_dir is None or frame.rgb is None:
            return None
        path = self.frames_dir / slide / f"{frame.sha256[:16]}.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_field(path, frame.rgb)
        except (OSError, FieldError) as exc:
            logger.warning("%s: frame not saved (%s); the result is still logged", path, exc)
            return None
        return str(path)

    def _already_done(self, frame: Frame) -> str | None:
        """Why a source need not decode ``frame``: its slide has ended, or the field is
        logged (in its slide; for a top-level file of a run without a fixed slide, in
        any slide, so the files of an ended slide never flow into the next one)."""
        with self._lock:
            if frame.slide is None and self._fixed is None:
                held = self.log.slide_of(frame.source_id, frame.sha256)
                return None if held is None else f"already logged in slide {held}"
            slide = frame.slide or self._default
            if not slide:
                return None
            state, logged = self.log.field_state(slide, frame.source_id, frame.sha256)
            if state == "ended":
                return f"slide {slide} has ended (a new slide needs a new name)"
            return f"already logged in slide {slide}" if logged else None

    # -- the loop ---------------------------------------------------------------

    def run(
        self,
        source: Source | Iterable[Frame],
        *,
        slide_id: str | None = None,
        on_result: Callable[[LoggedField], None] | None = None,
        on_slide_end: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> list[str]:
        """Process every frame of ``source`` until it ends or is stopped (``stop()``,
        or ``source.stop()`` from a signal handler); return the slides that got
        fields or ended, in order.

        A frame goes to its own ``slide`` (a hot folder's subfolder), else to the
        run's slide: ``slide_id``, else the open slide a previous run left (a
        restart continues it), else a new one from ``slide_pattern``. The run's
        slide is created with its first field, so a run that processes nothing
        leaves no empty slide. Frames that end a slide (end marker, idle time)
        end it (``on_slide_end(slide, call)``); after the run's slide ends, later
        frames go to a new one unless ``slide_id`` was given. When a finite
        source is exhausted (not stopped, not a failed camera) the run's slide
        ends; stopped, it stays open for the next run. ``SlideError`` before
        any frame if ``slide_id`` is invalid, ended, or of another model.
        """
        with self._lock:
            if slide_id is not None:
                self._check_usable(slide_id)
            self._default = slide_id or self.resume_slide() or self.new_slide_id()
            self._fixed = slide_id
            self._source = source if isinstance(source, Source) else None
        touched: list[str] = []
        if isinstance(source, Source):
            source.already_done = self._already_done
        ahead = isinstance(source, Source) and source.read_ahead and self.batch > 1
        with source if isinstance(source, Source) else nullcontext():
            groups = self._read_ahead(source) if ahead else ([(f, None)] for f in source)
            with closing(groups):  # the reading thread stops before the source closes
                for group in groups:
                    frame = group[0][0]
                    if frame.ends_slide is not None:
                        slide = frame.slide or self._default
                        self._end_from_source(frame, slide, on_slide_end, touched)
                        continue
                    for frame, logged in self._process_group(group, slide_id):
                        if isinstance(logged, SlideError):
                            logger.warning("%s: not processed: %s", frame.source_id, logged)
                            continue
                        if logged.slide not in touched:
                            touched.append(logged.slide)
                        if on_result is not None:
                            on_result(logged)
            stopped = isinstance(source, Source) and (source.stopping or source.failed)
        with self._lock:
            self._source = None
            info = self.log.find_slide(self._default)
            if not stopped and info is not None and info.state == "open":
                call = self.end_slide(self._default)
                if on_slide_end is not None:
                    on_slide_end(self._default, call)
        return touched

    def _process_group(
        self, group: list[tuple[Frame, Prepared]], fixed: str | None
    ) -> list[tuple[Frame, LoggedField | SlideError]]:
        """``process`` a group of ``run``'s frames (each with what is done of it),
        each into its slide (``_route``), with one model call and one commit; the
        frames already logged are left out."""
        admitted, out, seen = [], [], set()
        with self._lock:
            for frame, prepared in group:
                try:
                    slide = self._admit(frame, self._route(frame, fixed))
                except SlideError as exc:
                    out.append((frame, exc))
                    continue
                key = (slide, frame.source_id, frame.sha256)
                if slide is None or (frame.sha256 is not None and key in seen):
                    continue  # logged before, or earlier in this group
                seen.add(key)
                admitted.append((frame, slide, prepared))
        if admitted:
            logged = self._classify_and_log(admitted)
            out += [(frame, x) for (frame, _, _), x in zip(admitted, logged)]
        return out

    def _route(self, frame: Frame, fixed: str | None) -> str:
        """The slide of a frame of ``run``: its own, or the run's slide, which, once
        ended (by a marker, or from outside), gives way to a new one unless it was
        ``fixed``. Call with ``_lock`` held."""
        if frame.slide is not None:
            if frame.slide not in self._tallies:
                self._open(frame.slide, origin="folder")
            return frame.slide
        if fixed is None and self.log.state(self._default) == "ended":
            self._default = self.new_slide_id()
        if self._default not in self._tallies:
            self._open(self._default, origin="run")
        return self._default

    def _read_ahead(self, source: Source) -> Iterator[list[tuple[Frame, Prepared]]]:
        """``source``'s frames in groups of about ``batch`` fields (module doc), made on a
        thread of its own: a group is classified by the worker processes when they are
        ready (each frame then comes with its ``FieldResult``), else analysed on that
        thread (each frame with its ``Analysis``; ``None``: to be done here). That thread
        reads at most a few groups and ``READ_AHEAD_BYTES`` ahead; a frame that ends a
        slide is a group of its own. Stops that thread on leaving."""
        ready: queue.Queue = queue.Queue(maxsize=2 + self.workers)
        quit_, room = threading.Event(), threading.Condition()
        held = [0]  # bytes of the frames queued
        end = object()
        group: list[tuple[Frame, Analysis | None]] = []  # being made, on the reading thread
        fields = [0]
        pooled: list[FieldWorkers | None] = [None]  # the workers classifying ``group``

        def put(item: object, size: int = 0) -> None:
            with room:
                while held[0] and held[0] + size > READ_AHEAD_BYTES and not quit_.is_set():
                    room.wait(0.1)
                held[0] += size
            while not quit_.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def flush() -> None:
            if not group:
                return
            frames = [f for f, _ in group]
            work: Future | list[Prepared] = [a for _, a in group]
            if pooled[0] is not None:
                work = pooled[0].submit(frames)
            group.clear()
            fields[0] = 0
            put((frames, work), _nbytes(frames))

        def read() -> None:
            try:
                for frame in source:
                    if frame.ends_slide is not None:
                        flush()
                        put(([frame], [None]))
                    else:
                        if not group:
                            pooled[0] = self._ready_workers()
                        analysis = None if pooled[0] else self.pipeline.analyse(frame)
                        group.append((frame, analysis))
                        gate = analysis.gate if analysis is not None else None
                        fields[0] += self._fields_of(frame) if gate is None else len(gate.fields)
                        if fields[0] >= self.batch:
                            if source.endless or (source.backlog or 0) >= WORKERS_BACKLOG:
                                self.start_workers()  # a long run: worth their start
                            flush()
                    if quit_.is_set():
                        return
                flush()
            except BaseException as exc:  # raised again in the consumer
                flush()
                put(exc)
            finally:
                put(end)

        def taken(frames: list[Frame]) -> None:
            with room:
                held[0] -= _nbytes(frames)
                room.notify()

        source.idle = flush  # on the reading thread: a field that arrives alone goes on
        reader = threading.Thread(target=read, name="leukedge-read-ahead", daemon=True)
        reader.start()
        finished = False
        try:
            while True:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                if item is end:
                    finished = True
                    return
                frames, work = item
                taken(frames)
                if source.stopping:  # stop() before the next frame: the frames read
                    continue  # ahead are not logged, so the next run does them
                if isinstance(work, Future):
                    try:
                        work = work.result()
                    except WorkerError as exc:
                        self._drop_workers(str(exc))
                        work = [None] * len(frames)
                yield list(zip(frames, work))
        finally:
            quit_.set()
            if not finished:
                source.stop()
            reader.join()
            source.idle = None

    def _fields_of(self, frame: Frame) -> int:
        """The fields a frame not yet gated will likely be classified as: its area in
        training fields, at most ``MAX_TILES`` (a camera frame's worth), so a group of
        large frames stays a few frames."""
        if frame.rgb is None:
            return 1
        h, w = frame.rgb.shape[:2]
        return min(MAX_TILES, max(1, h * w // self.pipeline.field_px**2))

    def start_workers(self, wait: float = 0.0) -> bool:
        """Start the worker processes now rather than with the first read-ahead run (a
        station that will read files), waiting up to ``wait`` seconds for one to load the
        model; True when one has. False, doing nothing, with ``workers`` 0 or after they
        failed."""
        with self._lock:
            if self.workers and self._workers is None and not self._workers_failed:
                try:
                    self._workers = FieldWorkers(self.pipeline, self.workers)
                except WorkerError as exc:
                    self._workers_failed = True
                    logger.warning("%s; fields are classified in this process", exc)
            workers = self._workers
        return workers is not None and workers.wait_ready(wait)

    def _ready_workers(self) -> FieldWorkers | None:
        """The worker processes if they can take a group now; dropped with a warning if
        they could not start."""
        workers = self._workers
        if workers is None:
            return None
        why = workers.failure
        if why is not None:
            self._drop_workers(why)
            return None
        return workers if workers.ready else None

    def _drop_workers(self, why: str) -> None:
        """Stop the worker processes after a failure; this station goes on without them."""
        with self._lock:
            workers, self._workers = self._workers, None
            self._workers_failed = True
        if workers is not None:
            logger.warning(
                "worker processes stopped (%s); fields are classified in this process", why
            )
            workers.close()

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the worker processes running now (none: [])."""
        workers = self._workers
        return [] if workers is None else workers.pids

    def close(self) -> None:
        """Stop the worker processes, if any were started (the log stays open)."""
        with self._lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            workers.close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_model(self, slide_id: str) -> SlideInfo | None:
        """The slide's info (None if new); ``SlideError`` if invalid or of another model."""
        info = self.log.find_slide(validate_slide_id(slide_id))
        if info is not None and info.model_sha256 not in (None, self.model.sha256):
            raise SlideError(
                f"slide {slide_id!r} was started with model {info.model} "
                f"({info.model_sha256[:12]}); this station runs {self.model.name} "
                f"({(self.model.sha256 or '')[:12]}): end it there, or use a new slide id"
            )
        return info

    def _check_usable(self, slide_id: str) -> None:
        info = self._check_model(slide_id)
        if info is not None and info.state == "ended":
            raise SlideError(
                f"slide {slide_id!r} has ended; use a new slide id, or reopen it to add fields"
            )

    def _end_from_source(self, frame, slide, on_slide_end, touched) -> None:
        with self._lock:
            info = self.log.find_slide(slide)
            if info is None or info.state == "ended":
                return
            if frame.slide is None and frame.time < info.started:
                return  # an end marker left from an earlier slide
            logger.info("slide %s ends: %s", slide, frame.ends_slide)
            call = self.end_slide(slide)
            if slide not in touched:
                touched.append(slide)
        if on_slide_end is not None:
            on_slide_end(slide, call)

    def stop(self) -> None:
        """Stop a running ``run`` before its next frame (thread-safe)."""
        source = self._source
        if source is not None:
            source.stop()
