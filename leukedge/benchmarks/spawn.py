"""Run a ``leukedge.benchmarks`` module in a fresh Python process and read its JSON result.

The child gets one argument, a JSON payload with ``result`` (the file it must write
its JSON result to) and ``spawned`` (``time.time()`` just before the process was
started, for cold-start timings). It imports leukedge as this process does (installed
or editable), so the benchmarks run wherever leukedge is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class SpawnError(RuntimeError):
    """A child that failed; the message ends with the tail of its stderr."""


def child_main(handler) -> None:
    """Entry point of a child module: ``handler(payload) -> dict`` written to ``result``."""
    payload = json.loads(sys.argv[1])
    result = handler(payload)
    Path(payload["result"]).write_text(json.dumps(result))


def run_module(module: str, payload: dict, timeout: float) -> dict:
    """Run ``python -m leukedge.benchmarks.<module> <payload>``; its result, or ``SpawnError``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = json.dumps({**payload, "result": str(result), "spawned": time.time()})
        try:
            proc = subprocess.run(
                [sys.executable, "-m", f"{__package__}.{module}", args],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SpawnError(f"{module} took over {timeout:.0f} s") from exc
        if proc.returncode != 0 or not result.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise SpawnError(f"{module} failed (exit {proc.returncode}): {tail}")
        return json.loads(result.read_text())
