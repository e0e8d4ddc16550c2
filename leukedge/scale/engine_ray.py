"""The Ray engine: Ray Data over the same tasks, on a local Ray or an existing cluster.

The tasks become a dataset, ``map_batches`` runs ``_Scorer`` actors (one core each, one
bundle load per actor) and the driver streams the scored batches back, so OUT can be a
local folder of the driver. The bundle travels through Ray's object store: each actor
writes it to a private folder and loads it with ``load_model``, which verifies its
SHA-256s on that node. Field files are read by the actors: their paths must be readable
on every node (shared storage mounted at the same path).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import StepFailed, UsageError
from .rows import Task
from .store import arrow_schema
from .worker import Job


def bundle_files(bundle: Path) -> dict[str, bytes]:
    """Every file of a bundle folder: relative POSIX path -> bytes."""
    return {
        p.relative_to(bundle).as_posix(): p.read_bytes()
        for p in sorted(bundle.rglob("*"))
        if p.is_file()
    }


class _Scorer:
    """A Ray Data actor: the job started once (its bundle written from the object store),
    then batches of tasks -> a table of records."""

    def __init__(self, files: list, job: Job):
        import ray

        self._dir = tempfile.TemporaryDirectory(prefix="leukedge-bundle-")
        for rel, data in ray.get(files[0]).items():
            path = Path(self._dir.name, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.score = job.start(self._dir.name)
        self.schema = arrow_schema(job.columns)

    def __call__(self, batch):
        import pyarrow as pa

        tasks = [Task(**row) for row in batch.to_pylist()]
        return pa.Table.from_pylist(self.score(tasks), self.schema)


def _check_reachable(address: str) -> None:
    """``UsageError`` unless something listens at a ``HOST:PORT`` address (Ray itself
    would retry for minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(
            f"--address {address}: no Ray cluster answers there ({exc}); start one with "
            "'ray start --head' and give the address it prints"
        ) from exc


def start_ray(address: str | None, workers: int | None) -> bool:
    """Connect to the cluster at ``address``, else start a local Ray with ``workers``
    CPUs (default: this machine's), offline: no dashboard, no usage statistics.
    True when this call started or joined Ray (the caller shuts it down)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
    local = {} if address else {"num_cpus": workers or os.cpu_count()}
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            **local,
        )
    except ConnectionError as exc:
        raise UsageError(f"--address {address}: cannot join the Ray cluster ({exc})") from exc
    return True


def run_batches(
    batches: Sequence[list[Task]],
    job: Job,
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[list[dict]]:
    """Run ``job`` on ``batches`` with Ray Data: ``workers`` actors (default: one per CPU
    of the cluster); yields each batch's records as it finishes. A failure of the actors
    (e.g. a bundle that fails verification on a node) is ``StepFailed`` with the actor's
    own last error line."""
    import ray
    import ray.data
    from ray.exceptions import RayError

    started = start_ray(address, workers)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        workers = workers or int(ray.cluster_resources().get("CPU", 1))
        size = max(len(b) for b in batches)
        items = [asdict(t) for b in batches for t in b]
        dataset = ray.data.from_items(items, override_num_blocks=len(batches))
        scored = dataset.map_batches(
            _Scorer,
            fn_constructor_args=([ray.put(bundle_files(Path(job.bundle)))], job),
            batch_size=size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield table.to_pylist()
    except RayError as exc:
        cause = [line for line in str(exc).splitlines() if line.strip()][-1]
        raise StepFailed(f"the Ray engine failed: {cause}") from None
    finally:
        if started:
            ray.shutdown()
