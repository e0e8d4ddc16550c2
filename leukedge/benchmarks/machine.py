"""Facts about the machine a benchmark ran on: CPU, cores, memory, library versions, threads.

Library versions come from ``importlib.metadata``, so nothing heavy is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

#: CPU features that change inference speed: x86 SIMD and VNNI (INT8 dot products),
#: Arm NEON (``asimd`` on 64-bit) and its dot-product extension.
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
)

#: Library -> distribution names that provide it (the first one installed is reported).
LIBRARIES = {
    "numpy": ("numpy",),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-contrib-python",
    ),
    "onnxruntime": ("onnxruntime",),
    "ai-edge-litert": ("ai-edge-litert",),
    "tflite-runtime": ("tflite-runtime",),
    "onnx": ("onnx",),
    "torch": ("torch",),
    "ultralytics": ("ultralytics", "ultralytics-opencv-headless"),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "tf2onnx": ("tf2onnx",),
    "leukedge": ("leukedge",),
}

#: Environment variables that set thread pools of the numeric libraries.
THREAD_ENV_PREFIXES = ("OMP_", "OPENBLAS_", "MKL_", "TF_NUM_", "ORT_", "KMP_")


def cpuinfo(text: str) -> dict:
    """CPU model and feature flags from the text of ``/proc/cpuinfo`` (x86 or Arm)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("model") or fields.get("hardware")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": model, "flags": {f: f in flags for f in CPU_FLAGS}}


def library_versions() -> dict[str, str | None]:
    """Installed version of each library in ``LIBRARIES`` (None when absent)."""
    out: dict[str, str | None] = {}
    for name, dists in LIBRARIES.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def proc_kib(path: str, key: str) -> int | None:
    """The value of ``key:`` (kB) in a Linux ``/proc`` file such as ``/proc/meminfo``, or
    None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    kib = proc_kib("/proc/meminfo", "MemTotal")
    return None if kib is None else kib / 2**20


def machine_facts() -> dict:
    """CPU, cores, memory, load, Python, library versions and thread settings."""
    try:
        cpu = cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"model": None, "flags": {}}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu["model"] or platform.processor() or None,
        "cpu_flags": cpu["flags"],
        "arch": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "memory_gb": _memory_gb(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
        "thread_env": {
            k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)
        },
    }
