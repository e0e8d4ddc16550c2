"""Why the model decided: occlusion sensitivity over what the model was given.

Occlusion sensitivity (Zeiler & Fergus 2014) is model-agnostic, so it works on INT8 ONNX
and TFLite files with no gradients: the model's view of a field (``preprocess.view``: the
white-balanced, centre-cropped S x S image) is covered, one square patch at a time, with
the view's background colour, and the drop in the predicted class's probability is
credited to where the patch was. A patch over the cell that drove the decision makes the
probability fall; a patch over background changes nothing.

Two passes keep the cost modest: ``GRID`` x ``GRID`` overlapping patches, each ``PATCH`` of
the view's side, over the whole view (on a 224 px view: 56 px patches 28 px apart, coarser
than a small blast); then ``REFINE`` x ``REFINE`` half-size patches over the area of one
patch around the first map's peak, which locate the evidence inside it. 75 inferences
with the defaults. Each pass's drops, given at its patch centres, are interpolated
bilinearly to every pixel; the second is added to the first, tapering to 0 at the edge of
its area.

Limits: when several cells each suffice for the decision, covering one changes little and
the map is flat (all drops near 0); the map then says that no single region decided.
"""

from __future__ import annotations

import cv2
import numpy as np

from .illumination import white_point
from .model import Model
from .preprocess import Preprocess, scale_view, view
from .segment import draw_outline, segment

#: Patch positions per side of the model's view, and patch side as a share of it.
GRID = 7
PATCH = 0.25
REFINE = 5
#: An overlay shows a map in full colour only where it reaches this probability drop.
FULL_COLOUR = 0.1


def _mask(field: np.ndarray, model: Model, mask: np.ndarray | None) -> np.ndarray | None:
    """The blast mask when some model input needs it (computed if not given), else ``mask``."""
    needs = any(s.input_mode == "mask" for s in model.input_specs)
    if mask is None and needs:
        return segment(field, model.preprocess.segmentation).mask
    return mask


def preprocessed_view(field: np.ndarray, model: Model, mask: np.ndarray | None = None):
    """What the model was given for an RGB uint8 (H, W, 3) field: uint8 (S, S, 3).

    The white-balanced (input mode "field-wb"), masked ("mask") or plain ("field") field,
    resized and centre-cropped as the bundle says, before scaling to floats. ``mask``
    (bool (H, W)) is the blast mask for the "mask" mode; computed when not given.
    """
    return view(field, model.preprocess, _mask(field, model, mask))


def _fill(v: np.ndarray, spec: Preprocess) -> np.ndarray:
    """The background colour of a view: black for a masked view, else its white point."""
    return np.zeros(3, np.uint8) if spec.input_mode == "mask" else white_point(v).astype(np.uint8)


def _windows(size: int, grid: int, patch: float) -> list[tuple[int, int]]:
    """(start, end) of ``grid`` evenly spaced, overlapping windows along a side of ``size``."""
    side = max(1, min(size, round(patch * size)))
    starts = np.linspace(0, size - side, grid).round().astype(int)
    return [(int(s), int(s) + side) for s in starts]


def crop_box(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the part of an (H, W) field the model sees (the centre
    square that ``preprocess.resize_crop`` keeps)."""
    h, w = shape[:2]
    k = min(h, w)
    return (h - k) // 2, (w - k) // 2, k, k


def _occlude(views, fills, boxes) -> list[np.ndarray]:
    """Per model input, uint8 (len(boxes), S, S, 3): copies of its view, each with one box
    ((y0, y1), (x0, x1)) filled with the view's background colour."""
    stacks = []
    for v, fill in zip(views, fills):
        copies = np.repeat(v[None], len(boxes), axis=0)
        for c, ((y0, y1), (x0, x1)) in zip(copies, boxes):
            c[y0:y1, x0:x1] = fill
        stacks.append(copies)
    return stacks


def _probabilities(model: Model, stacks: list[np.ndarray]) -> np.ndarray:
    """float32 (N, C) probabilities of uint8 (N, S, S, 3) view stacks, one per model input."""
    batches = [scale_view(stack, spec) for stack, spec in zip(stacks, model.input_specs)]
    return model.probabilities(batches[0] if len(batches) == 1 else batches)


def _weights(size: int, centres: np.ndarray, ends: tuple[float, float] | None) -> np.ndarray:
    """float64 (size, n) linear-interpolation weights from ``centres`` (float (n,) pixel
    positions) to pixels 0..size-1: constant beyond the outer centres, or, with ``ends``,
    falling to 0 at those positions and 0 beyond."""
    if ends is not None:
        centres = np.concatenate([[ends[0]], centres, [ends[1]]])
    eye = np.eye(len(centres))
    xs = np.arange(size, dtype=np.float64)
    w = np.stack([np.interp(xs, centres, e, left=e[0], right=e[-1]) for e in eye], axis=1)
    return w[:, 1:-1] if ends is not None else w


def _interpolate(size: int, ys, xs, values: np.ndarray, box=None) -> np.ndarray:
    """float32 (size, size): ``values`` (float (len(ys), len(xs))) given at patch centres
    (pixel rows ``ys``, columns ``xs``), bilinearly interpolated to every pixel; with
    ``box`` ((top, left, side)), tapered to 0 at the box's edges and 0 outside it."""
    ends = (None, None) if box is None else [(b - 0.5, b + box[2] - 0.5) for b in box[:2]]
    wy = _weights(size, np.asarray(ys, np.float64), ends[0])
    wx = _weights(size, np.asarray(xs, np.float64), ends[1])
    return (wy @ values @ wx.T).astype(np.float32)


def occlusion_map(
    field: np.ndarray,
    model: Model,
    *,
    grid: int = GRID,
    patch: float = PATCH,
    refine: int = REFINE,
    mask: np.ndarray | None = None,
    target: int | None = None,
) -> np.ndarray:
    """Occlusion sensitivity of a field's prediction.

    Parameters
    ----------
    field : RGB uint8 (H, W, 3).
    model : a loaded bundle (any backend, any precision).
    grid : patch positions per side of the first pass (``grid**2`` inferences).
    patch : its patch side as a share of the view's side (0.25: 56 px of 224).
    refine : positions per side of the half-size patches of the second pass
        (``refine**2`` more inferences; 0: no second pass).
    mask : bool (H, W) blast mask for models with a "mask"/"masked" input (else computed).
    target : class index to explain; default the predicted class.

    Returns
    -------
    float32 (H, W): the drop in the target class's probability when a patch centred near
    the pixel is covered (positive: the region supports the prediction; interpolated
    between patch centres, both passes added); 0 outside the centre crop the model sees.
    """
    if grid < 1 or refine < 0 or not 0 < patch <= 1:
        raise ValueError(
            f"need grid >= 1, refine >= 0, 0 < patch <= 1; got {grid}, {refine}, {patch}"
        )
    mask = _mask(field, model, mask)
    views = [view(field, spec, mask) for spec in model.input_specs]
    fills = [_fill(v, spec) for v, spec in zip(views, model.input_specs)]
    size = views[0].shape[0]
    sides = _windows(size, grid, patch)
    boxes = [(y, x) for y in sides for x in sides]
    probs = _probabilities(
        model, [np.concatenate([v[None], s]) for v, s in zip(views, _occlude(views, fills, boxes))]
    )
    k = int(np.argmax(probs[0])) if target is None else int(target)
    centres = [(a + b - 1) / 2 for a, b in sides]
    heat = _interpolate(size, centres, centres, (probs[0, k] - probs[1:, k]).reshape(grid, grid))
    if refine:
        side = sides[0][1] - sides[0][0]
        cy, cx = np.unravel_index(int(np.argmax(heat)), heat.shape)
        top, left = (int(np.clip(c - side // 2, 0, size - side)) for c in (cy, cx))
        fine = _windows(side, refine, 0.5)
        fboxes = [((top + a, top + b), (left + c, left + d)) for a, b in fine for c, d in fine]
        drops = probs[0, k] - _probabilities(model, _occlude(views, fills, fboxes))[:, k]
        fc = np.array([(a + b - 1) / 2 for a, b in fine])
        box = (top, left, side)
        heat += _interpolate(size, top + fc, left + fc, drops.reshape(refine, refine), box)
    out = np.zeros(field.shape[:2], np.float32)
    top, left, h, w = crop_box(field.shape)
    out[top : top + h, left : left + w] = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def overlay(
    field: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.6
) -> np.ndarray:
    """An occlusion map drawn over its field: RGB uint8 (H, W, 3).

    ``heat`` (float (H, W), from ``occlusion_map``) is divided by its largest value, or by
    ``FULL_COLOUR`` when that is smaller, coloured with the jet map and blended in
    proportion (up to ``alpha``): regions that do not support the prediction show the field
    unchanged, and a flat map (no patch mattered) leaves the whole field nearly so. On a
    field that is not square, a white frame marks the centre square the model saw. ``mask``
    (bool (H, W)) adds the blast-mask outline.
    """
    if heat.shape != field.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the field {field.shape[:2]}")
    strength = np.clip(heat / max(float(heat.max()), FULL_COLOUR), 0, 1)
    colour = cv2.applyColorMap((strength * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * strength)[..., None]
    out = (field.astype(np.float32) * (1 - a) + colour * a + 0.5).astype(np.uint8)
    top, left, h, w = crop_box(field.shape)
    if (h, w) != field.shape[:2]:
        thick = max(1, round(min(h, w) / 224))
        cv2.rectangle(out, (left, top), (left + w - 1, top + h - 1), (255, 255, 255), thick)
    return out if mask is None else draw_outline(out, mask)
