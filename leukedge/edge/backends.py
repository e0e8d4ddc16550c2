"""Inference backends: ONNX Runtime and LiteRT (falling back to tflite-runtime).

Each backend takes a float32 batch in the model's own layout and returns
float32 (N, C) outputs; integer-quantized inputs and outputs are (de)quantized
here with the model's own scale and zero point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle import BundleError

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
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, ...) batch -> float32 (N, C); a fixed batch-1 model runs row by row."""
        if self.input_shape[0] == 1 and len(x) != 1:
            return np.concatenate([self.run(x[i : i + 1]) for i in range(len(x))])
        return np.asarray(self.session.run(None, {self.input_name: x})[0], np.float32)


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
        self._inp = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._inp["shape"])
        self._batch = self.input_shape[0]

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._inp["index"], x.shape)
            self.interpreter.allocate_tensors()
            self._inp = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
            self._batch = x.shape[0]
        dtype = self._inp["dtype"]
        if dtype != np.float32:
            scale, zero = self._inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self._inp["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])
        if y.dtype != np.float32:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, ...) batch -> float32 (N, C)."""
        return self._invoke(np.ascontiguousarray(x, np.float32))


def open_backend(path: str | Path, backend: str = "auto", threads: int | None = None):
    """Open a model file on a backend ("auto" picks the one matching the file format)."""
    path = Path(path)
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
