"""Worker processes that gate, segment and classify a station's files beside it.

A station reads a folder's fields ahead (``station``). Between its OpenCV calls the work
before the model holds Python's interpreter lock, so a second thread adds almost nothing to
it (1.04x on two cores, ``benchmarks/analysis_scaling.py``) while processes scale (2.09x).
So a station reading files hands whole groups of decoded frames to ``FieldWorkers``: each
process loads the station's model file (the same SHA-256) with one inference thread, runs
the station's ``FieldPipeline`` on a group in one model call and returns its
``FieldResult`` s; the station still admits, logs and counts every field itself, in the
source's order, so the results and the log are what one process would have made.

A worker is ``python -m leukedge.edge.workers``, talking pickles over its stdin and stdout,
rather than a ``multiprocessing`` child: those re-run the caller's main script (a script
without a ``__main__`` guard would run a second station against the same log), and forking a
process that runs a model runtime's and a web server's threads is not safe. A worker takes
about a second to import and load the model; ``ready`` says when one has, and until then the
station works on its own threads. A worker that cannot start, fails or dies fails its groups
with ``WorkerError``; the station then goes on in its own process.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO

from ..errors import LeukedgeError
from .pipeline import FieldPipeline, FieldResult
from .sources.base import Frame


class WorkerError(LeukedgeError, RuntimeError):
    """A worker process that could not start (why), failed on a group or died."""

    exit_code = 1


class _Worker:
    """One worker process: groups are written to it in order by a thread of their own (so
    ``submit`` never waits for a busy worker) and its answers read back in that order."""

    def __init__(self, init: tuple, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C is the station's to handle; EOF ends a worker
        )
        self.ready = threading.Event()
        self.failure: str | None = None
        self.pending: deque[Future] = deque()
        self._outbox: deque[object] = deque([init])
        self._lock = threading.Condition()
        threading.Thread(target=self._write, name="leukedge-worker-in", daemon=True).start()
        threading.Thread(target=self._read, name="leukedge-worker-out", daemon=True).start()

    def submit(self, frames: list[Frame]) -> Future:
        future: Future = Future()
        with self._lock:
            if self.failure is not None:
                future.set_exception(WorkerError(self.failure))
                return future
            self.pending.append(future)
            self._outbox.append(frames)
            self._lock.notify()
        return future

    def _write(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._outbox:
                        self._lock.wait()
                    message = self._outbox.popleft()
                if message is None:
                    break
                pickle.dump(message, self.proc.stdin, pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
        except (OSError, ValueError):  # the process died: its reader fails the groups
            pass
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        why = None
        try:
            kind, value = pickle.load(self.proc.stdout)
            if kind != "ready":
                why = f"a worker process could not load the model ({value})"
                return
            self.ready.set()
            while True:
                kind, value = pickle.load(self.proc.stdout)
                with self._lock:
                    future = self.pending.popleft()
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(
                        WorkerError(f"a worker process failed on a group ({value})")
                    )
        except (EOFError, OSError, pickle.UnpicklingError):
            code = self.proc.wait()
            why = why or f"a worker process ended (exit status {code})"
        finally:
            with self._lock:
                self.failure = why or "a worker process stopped"
                failed, self.pending = list(self.pending), deque()
                self._outbox.clear()
                self._outbox.append(None)
                self._lock.notify()
            for future in failed:
                future.set_exception(WorkerError(self.failure))

    def close(self) -> None:
        if not self.ready.is_set():  # still loading the model: nothing of it to wait for
            self.proc.kill()
        with self._lock:
            self._outbox.append(None)  # after the groups queued: EOF ends the process
            self._lock.notify()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class FieldWorkers:
    """``processes`` worker processes classifying groups of frames with ``pipeline``'s
    model file, seg mode and threshold (module doc). They start on construction; ``close``
    them when done."""

    def __init__(self, pipeline: FieldPipeline, processes: int):
        if processes < 1:
            raise ValueError(f"worker processes must be at least 1, got {processes}")
        model = pipeline.model
        init = (
            str(model.bundle),
            model.backend.name,
            model.route.file,
            model.sha256,
            pipeline.seg_mode,
            pipeline.threshold,
        )
        env = dict(os.environ)  # the workers import this leukedge, however it was found
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._workers: list[_Worker] = []
        try:
            for _ in range(processes):
                self._workers.append(_Worker(init, env))
        except OSError as exc:  # no interpreter to start, no processes left
            self.close()
            raise WorkerError(f"cannot start a worker process ({exc})") from exc

    @property
    def ready(self) -> bool:
        """Whether a worker has loaded the model (``failure`` tells if none ever will)."""
        return any(w.ready.is_set() and w.failure is None for w in self._workers)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a worker to be ``ready`` (or all to fail)."""
        deadline = time.monotonic() + timeout
        while not self.ready and self.failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.02))
        return self.ready

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (to watch their memory or CPU)."""
        return [w.proc.pid for w in self._workers]

    @property
    def failure(self) -> str | None:
        """Why no worker can classify (all failed or died), else None."""
        if all(w.failure is not None for w in self._workers):
            return self._workers[0].failure
        return None

    def submit(self, frames: list[Frame]) -> Future:
        """A future of ``frames``' ``FieldResult`` s, in order, from the ready worker with
        the fewest groups queued; it raises ``WorkerError`` if that worker fails. Frames
        travel decoded, without their encoded bytes (their SHA-256 is taken first)."""
        light = []
        for f in frames:
            _ = f.sha256  # cached on the frame, so it travels without ``data``
            c = copy.copy(f)
            c.data = None
            light.append(c)
        usable = [w for w in self._workers if w.ready.is_set() and w.failure is None]
        return min(usable or self._workers, key=lambda w: len(w.pending)).submit(light)

    def close(self) -> None:
        """End the processes once their queued groups are done."""
        for w in self._workers:
            w.close()


def _serve(inbox: BinaryIO, outbox: BinaryIO) -> None:
    """A worker's loop: the model from the first message, then a group per message."""
    import cv2

    from .model import load_model

    def send(message: tuple) -> None:
        pickle.dump(message, outbox, pickle.HIGHEST_PROTOCOL)
        outbox.flush()

    bundle, backend, file, sha256, mode, threshold = pickle.load(inbox)
    try:
        cv2.setNumThreads(1)
        # the station ran the self-test on this file with this runtime
        model = load_model(bundle, backend, 1, self_test=False, route=file)
        if model.sha256 != sha256:
            raise WorkerError(
                f"{model.model_file}: changed on disk since the station loaded it "
                f"(SHA-256 {str(model.sha256)[:12]}, station {str(sha256)[:12]}); restart it"
            )
        pipe = FieldPipeline(model, seg_mode=mode, threshold=threshold)
    except Exception as exc:  # noqa: BLE001 - the station reports it
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", None))
    while True:
        try:
            frames = pickle.load(inbox)
        except EOFError:
            return
        try:
            results: list[FieldResult] = pipe.classify([pipe.analyse(f) for f in frames])
        except Exception as exc:  # noqa: BLE001 - the station redoes the group itself
            send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        send(("ok", results))


if __name__ == "__main__":
    # the pickles travel on the original stdout; anything a library prints goes to stderr
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(sys.stdin.buffer, channel)
    except (BrokenPipeError, KeyboardInterrupt):  # the station has gone: nothing to answer
        pass
