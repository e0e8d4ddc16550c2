"""Inference backends: ONNX Runtime and LiteRT (falling back to tflite-runtime).

Each backend takes a batch per model input (a list of them, in the model's input order,
for a multi-input model; ``input_names`` lists that order): float32 in the layout of the
float input the model was exported with, or, for an input that takes integers
(``integer_inputs``), those integers themselves, which is cheaper
(``leukedge.edge.preprocess.integer_lut`` makes them from pixels without a float copy).
A float batch for an integer input is quantized here exactly as the runtime's own first
step would: LiteRT files carry their input's scale and zero point; an ONNX file whose
QuantizeLinear on the input was moved out (``leukedge.export.routes.integer_input``) says
what it was in its ``leukedge.input`` metadata. ``outputs`` returns every model output,
name -> float32 (N, ...), in one inference (``output_names`` lists them in the file's
order); ``run`` returns the first (the class scores). Integer outputs are dequantized here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
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


#: ONNX metadata key of the integer inputs of a file made by ``export.routes.integer_input``.
INPUT_METADATA = "leukedge.input"


@dataclass(frozen=True)
class IntegerInput:
    """A model input that takes integers (``dtype``) where the model was exported with a float
    input, and how a float value becomes one: ``round(x / scale) + zero_point`` (ONNX
    QuantizeLinear, ``shift_after_rounding``) or ``round(x / scale + zero_point)`` (how this
    module has always fed LiteRT), ties to even, clipped to ``dtype``.

    ``layout`` is the file's ("NCHW" or "NHWC"), ``float_layout`` the float input's it
    replaces; ``block`` > 1: the file takes each ``block x block`` patch of an NHWC image as
    one position of ``block * block * C`` channels (patch row, column, channel order: a
    space-to-depth), (N, S / block, S / block, block * block * C). An ONNX route takes NHWC
    pixels in 2 x 2 patches (``leukedge.export.routes``): ONNX Runtime's INT8 convolutions run
    NHWC, and it runs the network's first convolution twice as fast on 12 channels as on 3."""

    dtype: np.dtype
    scale: float
    zero_point: int
    layout: str
    float_layout: str
    shift_after_rounding: bool
    block: int = 1

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 values -> ``dtype`` values, elementwise (no layout change)."""
        info = np.iinfo(self.dtype)
        if self.shift_after_rounding:
            y = np.rint(x / np.float32(self.scale)) + np.float32(self.zero_point)
        else:
            y = np.round(x / self.scale + self.zero_point)
        return np.clip(y, info.min, info.max).astype(self.dtype)

    def arrange(self, q: np.ndarray, layout: str) -> np.ndarray:
        """``dtype`` (N, ...) batch in ``layout`` -> the contiguous batch the file takes."""
        if layout != self.layout:
            q = np.moveaxis(q, -3, -1) if self.layout == "NHWC" else np.moveaxis(q, -1, -3)
        if self.block > 1:
            return space_to_depth(q, self.block)
        return np.ascontiguousarray(q)

    def from_float(self, x: np.ndarray) -> np.ndarray:
        """float32 batch in ``float_layout`` -> the batch the file takes."""
        return self.arrange(self.quantize(x), self.float_layout)


def space_to_depth(x: np.ndarray, block: int) -> np.ndarray:
    """(N, H, W, C) -> contiguous (N, H / block, W / block, block * block * C): each patch's
    rows, each row's pixels, each pixel's channels (OpenCV merges a patch row's pixels, which
    lie side by side in memory, without numpy's element-wise transpose)."""
    n, h, w, c = x.shape
    if h % block or w % block:
        raise BundleError(f"a {h}x{w} input does not split into {block}x{block} patches")
    rows = x.reshape(n, h // block, block, w // block, block * c)
    out = np.empty((n, h // block, w // block, block * block * c), x.dtype)
    for r, o in zip(rows, out):
        cv2.merge([r[:, k] for k in range(block)], dst=o)
    return out


def _feeds(
    x: np.ndarray | Sequence[np.ndarray],
    names: Sequence[str],
    integer: Sequence[IntegerInput | None],
) -> list[np.ndarray]:
    """One contiguous batch per model input, of the type it takes: float32, or an integer
    input's ``dtype`` (passed as it is, or quantized from float32)."""
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    if len(xs) != len(names):
        raise BundleError(f"the model takes {len(names)} input(s) {list(names)}, got {len(xs)}")
    feeds = []
    for a, name, q in zip(xs, names, integer):
        if q is None:
            feeds.append(np.ascontiguousarray(a, np.float32))
        elif a.dtype == q.dtype:
            feeds.append(np.ascontiguousarray(a))
        elif a.dtype.kind == "f":
            feeds.append(q.from_float(np.ascontiguousarray(a, np.float32)))
        else:
            raise BundleError(
                f"model input {name!r} takes float32 or {np.dtype(q.dtype).name}, got {a.dtype}"
            )
    return feeds


_ORT_INTEGER_TYPES = {"tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def _onnx_integer_inputs(path: Path, inputs, metadata: dict) -> list[IntegerInput | None]:
    """Each ONNX input's ``IntegerInput`` (None for a float one), from ``leukedge.input``."""
    try:
        described = json.loads(metadata.get(INPUT_METADATA, "{}"))
    except ValueError as exc:
        raise BundleError(f"{path}: unreadable {INPUT_METADATA} metadata ({exc})") from exc
    found = []
    for inp in inputs:
        dtype = _ORT_INTEGER_TYPES.get(inp.type)
        if dtype is None:
            found.append(None)
            continue
        d = described.get(inp.name) if isinstance(described, dict) else None
        try:
            found.append(
                IntegerInput(
                    np.dtype(dtype),
                    float(d["scale"]),
                    int(d["zero_point"]),
                    str(d["layout"]),
                    str(d["float_layout"]),
                    shift_after_rounding=True,
                    block=int(d.get("block", 1)),
                )
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise BundleError(
                f"{path}: input {inp.name!r} takes {inp.type} but the file's {INPUT_METADATA} "
                "metadata does not say how pixels become it; re-make it with "
                "leukedge bundle add-route"
            ) from exc
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
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shapes = [
            tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in inputs
        ]
        self.input_shape = self.input_shapes[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        #: Per input: how it takes integers (None: float32).
        self.integer_inputs = _onnx_integer_inputs(Path(path), inputs, self.metadata)

    def outputs(self, x: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Batch(es) (N, ...) -> {output name: float32 (N, ...)}; a fixed batch-1 model
        runs row by row."""
        xs = _feeds(x, self.input_names, self.integer_inputs)
        if self.input_shape[0] == 1 and len(xs[0]) != 1:
            rows = [self.outputs([a[i : i + 1] for a in xs]) for i in range(len(xs[0]))]
            return {k: np.concatenate([r[k] for r in rows]) for k in self.output_names}
        ys = self.session.run(None, dict(zip(self.input_names, xs)))
        return {k: np.asarray(y, np.float32) for k, y in zip(self.output_names, ys)}

    def run(self, x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Batch(es) (N, ...) -> float32 (N, C): the first output."""
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
        self.input_shapes = [tuple(int(d) for d in i["shape"]) for i in self._inps]
        self.input_shape = self.input_shapes[0]
        self.output_names = [d["name"] for d in self._outs]
        self._batch = self.input_shape[0]
        #: Per input: how it takes integers (None: float32); no layout change in LiteRT.
        self.integer_inputs = [_tflite_integer_input(d) for d in self._inps]

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
            self.interpreter.set_tensor(inp["index"], x)
        self.interpreter.invoke()
        get = self.interpreter.get_tensor
        return {out["name"]: _dequantize(get(out["index"]), out) for out in self._outs}

    def outputs(self, x: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Batch(es) (N, ...) -> {output name: float32 (N, ...)}."""
        return self._invoke(_feeds(x, self.input_names, self.integer_inputs))

    def run(self, x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Batch(es) (N, ...) -> float32 (N, C): the first output."""
        return self.outputs(x)[self.output_names[0]]


def _tflite_integer_input(detail: dict) -> IntegerInput | None:
    """A LiteRT input's ``IntegerInput`` from its quantization (None for a float input)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    scale, zero = detail["quantization"]
    layout = "NHWC" if int(detail["shape"][-1]) in (1, 3) else "NCHW"
    return IntegerInput(dtype, scale, zero, layout, layout, shift_after_rounding=False)


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
