"""How far correct runtimes differ on the shipped bundles: the basis of the self-test tolerance.

For each shipped bundle, the known-answer inputs (``leukedge.export.selftest``) and, when
the Taleqani data is there, ``--fields`` real fields run on the bundle's backend as loaded
(the reference) and on variants that are all correct implementations of the same model:

- ONNX Runtime: intra-op threads 1, 2, 4 x graph optimisation off, basic, extended, all
  (off runs the QDQ model as float DequantizeLinear -> op -> QuantizeLinear, all fuses it
  into integer kernels);
- LiteRT: threads 1, 2, 4 x op resolver: XNNPACK (the default), built-in kernels without
  XNNPACK, reference kernels;
- across runtimes: a .tflite bundle converted to ONNX with tf2onnx (when installed), on
  ONNX Runtime at each optimisation level.

Prints Markdown tables (max |difference| of probabilities, top-1 agreement and largest
feature difference relative to the largest reference feature, against the reference) and
the check's cost at start: the median over ``--repeats`` fresh loads of a bundle of the
self-test's first run, beside the load itself; ``--out`` writes them.

    python benchmarks/selftest_tolerance.py --fields 100 \
        --out benchmarks/results/selftest-tolerance-2026-12-01.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from leukedge.edge.model import load_model
from leukedge.edge.preprocess import view
from leukedge.edge.selftest import cpu_info, model_outputs, runtime_versions
from leukedge.export.selftest import known_answer_set

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "taleqani-all"
THREADS = (1, 2, 4)
ORT_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
LITERT_RESOLVERS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF")


def real_views(model, n: int) -> list[np.ndarray]:
    """uint8 (n, S, S, 3) views per model input of ``n`` fields spread over the data set."""
    from leukedge.edge.imageio import read_field

    paths = sorted((DATA / "Original").glob("*/*.jpg"))
    if not paths or n <= 0:
        return []
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, n).astype(int)]
    fields = [read_field(p) for p in picked]
    return [np.stack([view(f, spec) for f in fields]) for spec in model.input_specs]


def ort_session(path: Path, threads: int, level: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def litert_interpreter(path: Path, threads: int, resolver: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = getattr(OpResolverType, resolver)
    return Interpreter(
        model_path=str(path), num_threads=threads, experimental_op_resolver_type=kind
    )


class QuantizedIO:
    """An int8-in, int8-out ONNX session (tf2onnx of a full-integer .tflite), quantizing as
    the LiteRT backend does with the .tflite's own scales; outputs named as the .tflite's."""

    def __init__(self, session, litert_backend):
        self.session = session
        self.inp = litert_backend.interpreter.get_input_details()[0]["quantization"]
        self.outs = [d["quantization"] for d in litert_backend.interpreter.get_output_details()]
        self.output_names = litert_backend.output_names

    def outputs(self, x):
        x = x if isinstance(x, np.ndarray) else x[0]
        q = np.clip(np.round(x / self.inp[0] + self.inp[1]), -128, 127).astype(np.int8)
        ys = self.session.run(None, {self.session.get_inputs()[0].name: q})
        return {
            name: (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)
            for name, y, (scale, zero) in zip(self.output_names, ys, self.outs)
        }


def variants(model, tmp: Path):
    """(name, setup) pairs; ``setup()`` points ``model.backend`` at a variant runtime."""
    file = model.bundle / model.manifest["model"]["file"]
    backend = model.backend
    out = []
    if backend.name == "onnxruntime":
        for threads in THREADS:
            for level in ORT_LEVELS:

                def setup(t=threads, lv=level):
                    backend.session = ort_session(file, t, lv)

                out.append((f"onnxruntime threads={threads} {level}", setup))
        return out
    for threads in THREADS:
        for resolver in LITERT_RESOLVERS:

            def setup(t=threads, r=resolver):
                backend.interpreter = litert_interpreter(file, t, r)
                backend.interpreter.allocate_tensors()
                backend._details()
                backend._batch = backend.input_shape[0]

            out.append((f"litert threads={threads} {resolver}", setup))
    onnx_file = tmp / f"{model.bundle.name}.onnx"
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(file)]
    converted = subprocess.run(
        [*cmd, "--output", str(onnx_file), "--opset", "17"], capture_output=True
    )
    if converted.returncode != 0:
        print(f"# tf2onnx unavailable or failed: no cross-runtime rows for {file}", file=sys.stderr)
        return out
    reference = model.backend
    for level in ORT_LEVELS:

        def setup(lv=level):
            model.backend = QuantizedIO(ort_session(onnx_file, 1, lv), reference)

        out.append((f"onnxruntime (tf2onnx of the .tflite) threads=1 {level}", setup))
    return out


def compare(ref: dict, got: dict) -> list[float]:
    """[max |dp|, top-1 agreement, max |d features| / max |reference features| (NaN: none)]."""
    p, q = ref["probabilities"], got["probabilities"]
    row = [float(np.max(np.abs(q - p))), float(np.mean(q.argmax(1) == p.argmax(1)))]
    if "features" not in ref:
        return [*row, np.nan]
    scale = float(np.max(np.abs(ref["features"])))
    return [*row, float(np.max(np.abs(got["features"] - ref["features"]))) / scale]


def cost(names: list[str], repeats: int, threads: int | None) -> list[str]:
    """Markdown rows: median ms of ``load_model(self_test=False)``, of the self-test run right
    after it (the first inferences of a fresh session, as at a station's start) and of a
    second run (warm: the first inferences' one-off setup excluded), and the CPU time of the
    first (with one thread, about its wall time on an idle core)."""
    import time

    from leukedge.edge.selftest import run_self_test

    lines = [
        f"Cost at start, median of {repeats} fresh loads (threads: {threads or 'default'}):",
        "",
        "| bundle | load, verify + open (ms) | self-test at start (ms) | warm (ms) "
        "| CPU time at start (ms) | inputs |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        load, check, warm, cpu = [], [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model = load_model(name, threads=threads, self_test=False)
            load.append((time.perf_counter() - t0) * 1e3)
            c0 = time.process_time()
            check.append(run_self_test(model).ms)
            cpu.append((time.process_time() - c0) * 1e3)
            warm.append(run_self_test(model).ms)
        row = f"| {model.bundle.name} | {np.median(load):.0f} | {np.median(check):.1f} |"
        row += f" {np.median(warm):.1f} | {np.median(cpu):.0f} |"
        lines.append(f"{row} {model.manifest['self_test']['n']} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,mobilenetv2", help="Bundles (comma).")
    parser.add_argument("--fields", type=int, default=100, help="Real fields (0: none).")
    parser.add_argument("--repeats", type=int, default=7, help="Fresh loads timed (0: none).")
    parser.add_argument("--threads", type=int, help="Threads of the timed loads.")
    parser.add_argument("--skip-variants", action="store_true", help="Only the cost.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cpu = cpu_info()
    lines = [
        f"Machine: {cpu['machine']}, {cpu['cpu']}; features {' '.join(cpu['features'])}",
        f"Runtimes: {', '.join(f'{k} {v}' for k, v in runtime_versions().items())}",
        "",
    ]
    names = args.models.split(",")
    if args.repeats:
        lines += cost(names, args.repeats, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in [] if args.skip_variants else names:
            model = load_model(name, self_test=False)
            # The variants swap in runtimes of model.file, so that is the file to run here.
            model = load_model(name, self_test=False, route=model.manifest["model"]["file"])
            name = model.bundle.name
            _, arrays = known_answer_set(model)
            known = [arrays[f"view_{i}"] for i in model.manifest.get("inputs", ["field"])]
            real = real_views(model, args.fields)
            ref_known, ref_real = model_outputs(model, known), real and model_outputs(model, real)
            n_real = len(real[0]) if real else 0
            lines += [
                f"### {name} ({model.manifest['model']['file']}, reference: {model.backend.name} "
                "as loaded)",
                "",
                "| variant | known answers: max abs dp | top-1 agree | max rel. d features "
                f"| {n_real} real fields: max abs dp | top-1 agree | max rel. d features |",
                "|---|---|---|---|---|---|---|",
            ]
            for label, setup in variants(model, Path(tmp)):
                setup()
                row = compare(ref_known, model_outputs(model, known))
                row += compare(ref_real, model_outputs(model, real)) if real else [np.nan] * 3
                cells = [f"{v:.3f}" if i % 3 == 1 else f"{v:.2g}" for i, v in enumerate(row)]
                lines.append(f"| {label} | {' | '.join(cells)} |")
                print(lines[-1], file=sys.stderr)
            lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
