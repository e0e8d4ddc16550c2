"""Run a ``benchmarks`` module in a fresh Python process and read back its JSON result.

The child gets one argument, a JSON payload with ``result`` (the file it must write
its JSON result to) and ``spawned`` (``time.time()`` just before the process was
started, for cold-start timings), and the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SpawnError(RuntimeError):
    """A child that failed; the message ends with the tail of its stderr."""


def child_main(handler) -> None:
    """Entry point of a child module: ``handler(payload) -> dict`` written to ``result``."""
    payload = json.loads(sys.argv[1])
    result = handler(payload)
    Path(payload["result"]).write_text(json.dumps(result))


def run_module(module: str, payload: dict, timeout: float) -> dict:
    """Run ``python -m benchmarks.<module> <payload>``; its result, or ``SpawnError``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = json.dumps({**payload, "result": str(result), "spawned": time.time()})
        try:
            proc = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{module}", args],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SpawnError(f"benchmarks.{module} took over {timeout:.0f} s") from exc
        if proc.returncode != 0 or not result.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise SpawnError(f"benchmarks.{module} failed (exit {proc.returncode}): {tail}")
        return json.loads(result.read_text())
