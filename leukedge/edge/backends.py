"""Inference backends: ONNX Runtime and LiteRT (falling back to tflite-runtime).

Each backend takes a float32 batch in the model's own layout (a list of them,
in the model's input order, for a multi-input model; ``input_names`` lists that
order). ``outputs`` returns every model output, name -> float32 (N, ...), in one
inference (``output_names`` lists them in the file's order); ``run`` returns the
first (the class scores). Integer-quantized inputs and outputs are (de)quantized
here with the model's own scale and zero point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bundle import BundleError
from .config import check_threads

BACKENDS = ("onnxruntime", "litert")
FORMAT_BACKEND = {".onnx": "onnxruntime", ".tflite": "litert"}


def available_backends() -> list[str]:
    """Backends whose runtime package is importable here."""
    import importlib.util

    found = []
    if importlib.util.find_spec("onnxruntime"):
        found.append("onnxruntime")
    if importlib.util.find_spec("ai_edge_litert") or importlib.util.find_spec("tflite_runtime"):
        found.append("litert")
    return found


def _input_list(x: np.ndarray | Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    """One contiguous float32 batch per model input."""
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    if len(xs) != len(names):
        raise BundleError(f"the model takes {len(names)} input(s) {list(names)}, got {len(xs)}")
    return [np.ascontiguousarray(a, np.float32) for a in xs]


class OnnxRuntimeBackend:
    """An ONNX model on ONNX Runtime's CPU provider."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def outputs(self, x: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """float32 (N, ...) batch(es) -> {output name: float32 (N, ...)}; a fixed batch-1 model
        runs row by row."""
        xs = _input_list(x, self.input_names)
        if self.input_shape[0] == 1 and len(xs[0]) != 1:
            rows = [self.outputs([a[i : i + 1] for a in xs]) for i in range(len(xs[0]))]
            return {k: np.concatenate([r[k] for r in rows]) for k in self.output_names}
        ys = self.session.run(None, dict(zip(self.input_names, xs)))
        return {k: np.asarray(y, np.float32) for k, y in zip(self.output_names, ys)}

    def run(self, x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, ...) batch(es) -> float32 (N, C): the first output."""
        return self.outputs(x)[self.output_names[0]]


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise BundleError(
                "the litert backend needs ai-edge-litert (or tflite-runtime): "
                "pip install 'leukedge[edge]'"
            ) from exc
    return Interpreter


class LiteRTBackend:
    """A TFLite model on LiteRT (ai-edge-litert), or tflite-runtime where only that exists."""

    name = "litert"

    def __init__(self, path: str | Path, threads: int | None = None):
        self.interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self._details()
        self.input_names = [d["name"] for d in self._inps]
        self.input_shape = tuple(int(d) for d in self._inps[0]["shape"])
        self.output_names = [d["name"] for d in self._outs]
        self._batch = self.input_shape[0]

    def _details(self) -> None:
        self._inps = self.interpreter.get_input_details()
        self._outs = self.interpreter.get_output_details()

    def _invoke(self, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
        if xs[0].shape[0] != self._batch:
            for inp, x in zip(self._inps, xs):
                self.interpreter.resize_tensor_input(inp["index"], x.shape)
            self.interpreter.allocate_tensors()
            self._details()
            self._batch = xs[0].shape[0]
        for inp, x in zip(self._inps, xs):
            dtype = inp["dtype"]
            if dtype != np.float32:
                scale, zero = inp["quantization"]
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
            self.interpreter.set_tensor(inp["index"], x)
        self.interpreter.invoke()
        get = self.interpreter.get_tensor
        return {out["name"]: _dequantize(get(out["index"]), out) for out in self._outs}

    def outputs(self, x: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """float32 (N, ...) batch(es) -> {output name: float32 (N, ...)}."""
        return self._invoke(_input_list(x, self.input_names))

    def run(self, x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, ...) batch(es) -> float32 (N, C): the first output."""
        return self.outputs(x)[self.output_names[0]]


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """An integer output tensor -> float32 with its scale and zero point (a copy: LiteRT reuses
    its buffers on the next invoke)."""
    if y.dtype == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def open_backend(path: str | Path, backend: str = "auto", threads: int | None = None):
    """Open a model file on a backend ("auto" picks the one matching the file format) with
    ``threads`` inference threads (``check_threads``; None: the runtime's default)."""
    path, threads = Path(path), check_threads(threads)
    wanted = FORMAT_BACKEND.get(path.suffix.lower())
    if wanted is None:
        raise BundleError(f"{path}: unknown model format (expected .onnx or .tflite)")
    if backend not in ("auto", *BACKENDS):
        raise BundleError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if backend != "auto" and backend != wanted:
        raise BundleError(f"{path}: a {path.suffix} model runs on {wanted}, not {backend}")
    cls = OnnxRuntimeBackend if wanted == "onnxruntime" else LiteRTBackend
    try:
        return cls(path, threads)
    except BundleError:
        raise
    except Exception as exc:  # the runtimes raise their own exception types
        raise BundleError(f"{path}: {wanted} cannot load this model ({exc})") from exc
