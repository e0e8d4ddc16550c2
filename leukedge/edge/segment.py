"""Blast-cell segmentation of smear fields (numpy + OpenCV only).

The reference pipeline (Hosseini et al. 2023): RGB -> LAB; K-means with K=2 on the a*
channel; keep the cluster with the higher mean a*; opening with a 3x3 ellipse, closing
with a 7x7 ellipse; drop connected components under 500 px; impose the mask on the field.
``segment(field, mode)`` runs it three ways:

``"reference"``
    The pipeline as published, with ``cv2.kmeans`` on every pixel and a Python loop over
    components. The publication fixes K=2; termination and restarts are ours:
    ``KMEANS_CRITERIA``, ``KMEANS_ATTEMPTS`` k-means++ restarts, OpenCV's RNG reseeded to 0
    so a field always gives the same mask.
``"fast"``
    The same result without K-means: 2-means on 1-D data is an optimal split of its
    histogram, i.e. Otsu's threshold (``cv2.threshold`` with ``THRESH_OTSU``); the
    small-component filter is one labelling and one lookup table.
``"robust"`` (the station default)
    Flat-fields and contrast-stretches the field first (``illumination``), excludes the
    scale-bar label, moves a split that lands on the background/red-cell shoulder into the
    valley below the cells, falls back when nothing survives, and keeps cells down to
    ``ROBUST_CLEANING`` (small lymphoblasts and hematogones are under 500 px).

Resolution: every size is defined for a 224x224 field. A field of H x W pixels is analysed
with kernels scaled by ``s = sqrt(H * W) / 224`` (rounded to odd sizes) and minimum areas
scaled by ``s**2``. Fields over ``MAX_WORK_PIXELS`` (4x the reference area) are first
halved by 2x2 averaging until they fit, segmented, and the mask is upscaled bilinearly
(threshold at half); a 2028x1520 camera frame is analysed at 507x380. Cells are always
measured on the final, full-resolution mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from .illumination import normalise_illumination
from .imageio import check_field

#: Side in px of the fields the segmentation parameters are defined for (the Taleqani
#: fields); kernels and areas scale with a field's size relative to it.
REFERENCE_SIZE = 224
MODES = ("reference", "fast", "robust")
#: Opening and closing ellipse sizes and minimum component area of the reference,
#: for a 224x224 field.
REFERENCE_CLEANING = (3, 7, 500)
#: The same for the robust mode: a 5 px opening removes the 2-3 px pink rims of red
#: cells; 80 px (a disc about 10 px across) keeps small lymphoblasts and hematogones.
ROBUST_CLEANING = (5, 7, 80)
#: Fields with more pixels are downscaled for analysis (4x the 224x224 reference).
MAX_WORK_PIXELS = 4 * REFERENCE_SIZE**2
KMEANS_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.2)
KMEANS_ATTEMPTS = 3
#: Robust split: a split whose upper class covers more than this fraction is implausible.
MAX_COVER = 0.5
#: Robust split: minimum a* difference between the cells and the background mode.
MIN_CONTRAST = 6
#: Scale-bar label window: bottom fraction of rows, right fraction of columns.
LABEL_WINDOW = (0.2, 0.35)


@dataclass(frozen=True)
class Cell:
    """One segmented cell (connected component), in field pixel coordinates."""

    bbox: tuple[int, int, int, int]  # x, y, width, height
    area: int  # pixels
    centroid: tuple[float, float]  # x, y


@dataclass(frozen=True, eq=False)
class Stages:
    """Intermediate images of one segmentation, at analysis resolution (h, w)."""

    analysed: np.ndarray  # uint8 (h, w, 3): the field as analysed (normalised when robust)
    lab: np.ndarray  # uint8 (h, w, 3): its LAB conversion
    split: np.ndarray  # bool (h, w): the cell cluster before cleaning
    cleaned: np.ndarray  # bool (h, w): after morphology and the area filter


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of ``segment``.

    ``mask`` is bool (H, W), True on cell pixels; ``cells`` lists its connected
    components; ``threshold`` is the a* value the cell cluster lies above; ``flags``
    names the robust-mode corrections applied (``"resplit"``, ``"fallback"``,
    ``"scale-bar"``, ``"no-contrast"``); ``stages`` is set only when requested.
    """

    mask: np.ndarray
    cells: tuple[Cell, ...]
    mode: str
    threshold: float
    scale: float  # analysis size / field size (1.0: analysed at full resolution)
    flags: tuple[str, ...] = ()
    stages: Stages | None = field(default=None, repr=False)

    def impose(self, rgb: np.ndarray) -> np.ndarray:
        """The field with everything but the cells set to black: uint8 (H, W, 3)."""
        return cv2.bitwise_and(rgb, rgb, mask=self.mask.view(np.uint8))


@lru_cache(maxsize=64)
def scaled_params(
    h: int, w: int, cleaning: tuple[int, int, int] = REFERENCE_CLEANING
) -> tuple[np.ndarray, np.ndarray, int]:
    """Opening and closing ellipses and minimum area for an h x w analysed field.

    ``cleaning`` gives (open size, close size, min area) for a 224x224 field. Kernel
    sizes scale with ``s = sqrt(h * w) / 224`` (odd, at least 1), the area with ``s**2``
    (at least 1 px). Returns (uint8 open kernel, uint8 close kernel, int min area).
    """
    s = np.sqrt(h * w) / REFERENCE_SIZE

    def ellipse(size: int) -> np.ndarray:
        k = max(1, 2 * int(round((size * s - 1) / 2)) + 1)
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))

    open_size, close_size, min_area = cleaning
    return ellipse(open_size), ellipse(close_size), max(1, int(round(min_area * s * s)))


def otsu_threshold(hist: np.ndarray) -> np.ndarray:
    """Otsu's threshold (the optimal 2-means split) of histograms, vectorized.

    Parameters
    ----------
    hist : (..., B) counts over bins 0..B-1.

    Returns
    -------
    int64 (...): t such that bins <= t form the lower class, maximising the between-class
    variance; ``B - 1`` (nothing above) where fewer than two bins are occupied.
    """
    hist = np.asarray(hist, np.float64)
    bins = np.arange(hist.shape[-1], dtype=np.float64)
    w0 = np.cumsum(hist, axis=-1)
    s0 = np.cumsum(hist * bins, axis=-1)
    w1 = w0[..., -1:] - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s0[..., -1:] - s0) / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    return np.where(between.max(axis=-1) < 0, hist.shape[-1] - 1, np.argmax(between, axis=-1))


def analysis_copy(rgb: np.ndarray, max_pixels: int = MAX_WORK_PIXELS) -> np.ndarray:
    """Halve ``rgb`` (2x2 averaging) until it has at most ``max_pixels`` pixels; uint8 (h, w, 3)."""
    while rgb.shape[0] * rgb.shape[1] > max_pixels and min(rgb.shape[:2]) >= 2:
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    return rgb


def _label_components(binary: np.ndarray):
    """8-connected components of a uint8 (H, W) image: (labels, int32 stats, centroids).

    Labels are uint16 where fewer than 2**16 components are possible, else int32.
    """
    ltype = cv2.CV_16U if binary.size < 2**17 else cv2.CV_32S
    _, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        binary, 8, ltype, cv2.CCL_GRANA
    )
    return labels, stats, centroids


def _kept(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels whose label (uint16/int32 (H, W)) is marked in ``keep`` (K,)."""
    if len(keep) > 256:
        return np.take(keep, labels)
    lut = np.zeros(256, np.uint8)
    lut[: len(keep)] = keep
    return cv2.LUT(labels.astype(np.uint8), lut).view(bool)


def _cells(stats: np.ndarray, centroids: np.ndarray, keep: np.ndarray) -> tuple[Cell, ...]:
    """Cells from OpenCV component stats (K, 5) and centroids (K, 2) where ``keep`` (K,)."""
    return tuple(
        Cell((x, y, w, h), a, (cx, cy))
        for (x, y, w, h, a), (cx, cy) in zip(stats[keep].tolist(), centroids[keep].tolist())
    )


def kmeans_split(a: np.ndarray) -> tuple[np.ndarray, float]:
    """Reference 2-means of a uint8 (H, W) a* channel with ``cv2.kmeans``.

    Returns (bool (H, W) mask of the cluster with the higher centre, the midpoint of the
    two centres). Reseeds OpenCV's global RNG to 0.
    """
    if a.min() == a.max():
        return np.zeros(a.shape, bool), 255.0
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(
        a.reshape(-1, 1).astype(np.float32),
        2,
        None,
        KMEANS_CRITERIA,
        KMEANS_ATTEMPTS,
        cv2.KMEANS_PP_CENTERS,
    )
    split = labels.reshape(a.shape) == int(np.argmax(centres))
    return split, float(centres.mean())


class _Parts(NamedTuple):
    """What a pipeline returns for an analysed (h, w) field."""

    mask: np.ndarray  # bool (h, w)
    stats: np.ndarray  # int32 (K, 5), as from cv2.connectedComponentsWithStats
    centroids: np.ndarray  # float64 (K, 2)
    keep: np.ndarray  # bool (K,): the components in ``mask``
    threshold: float
    flags: tuple[str, ...]
    stages: Stages | None


def _reference(work: np.ndarray, stages: bool) -> _Parts:
    """The published pipeline on a uint8 (h, w, 3) field."""
    lab = cv2.cvtColor(work, cv2.COLOR_RGB2LAB)
    split, t = kmeans_split(lab[:, :, 1])
    k_open, k_close, min_area = scaled_params(*work.shape[:2])
    mask = cv2.morphologyEx(split.astype(np.uint8) * 255, cv2.MORPH_OPEN, k_open)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k_close)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            mask[labels == i] = 0
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    st = Stages(work, lab, split, mask > 0) if stages else None
    return _Parts(mask > 0, stats, centroids, keep, t, (), st)


def clean(
    split: np.ndarray,
    cleaning: tuple[int, int, int] = REFERENCE_CLEANING,
    exclude: np.ndarray | None = None,
):
    """Opening, closing and the minimum-area filter of a 0/1 uint8 (h, w) split.

    ``cleaning`` (for 224x224) scales with the size, see ``scaled_params``; ``exclude``
    (bool (h, w)) is cleared after closing. Returns (bool (h, w) mask, int32 stats (K, 5),
    float64 centroids (K, 2), bool keep (K,)), stats and centroids as from
    ``cv2.connectedComponentsWithStats``, ``keep`` marking the components in the mask.
    """
    k_open, k_close, area = scaled_params(*split.shape, cleaning)
    opened = cv2.morphologyEx(split, cv2.MORPH_OPEN, k_open)
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, k_close)
    if exclude is not None:
        cv2.subtract(closed, exclude.view(np.uint8), dst=closed)  # 0 where excluded
    labels, stats, centroids = _label_components(closed)
    keep = stats[:, cv2.CC_STAT_AREA] >= area
    keep[0] = False
    return _kept(labels, keep), stats, centroids, keep


def _fast(work: np.ndarray, stages: bool) -> _Parts:
    """The reference pipeline with Otsu's split and a vectorized area filter."""
    lab = cv2.cvtColor(work, cv2.COLOR_RGB2LAB)
    a = cv2.extractChannel(lab, 1)
    lo, hi = cv2.minMaxLoc(a)[:2]
    if lo == hi:
        t, split = 255.0, np.zeros_like(a)
    else:
        t, split = cv2.threshold(a, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    mask, stats, centroids, keep = clean(split)
    st = Stages(work, lab, split.view(bool), mask) if stages else None
    return _Parts(mask, stats, centroids, keep, float(t), (), st)


def scale_bar_mask(lab: np.ndarray, window: tuple[float, float] = LABEL_WINDOW) -> np.ndarray:
    """Pixels of a scale-bar label in the bottom-right corner of a field.

    The label is black or red text (and bar) in a white box. In the corner window (bottom
    ``window[0]`` of rows, right ``window[1]`` of columns) of a uint8 (H, W, 3) LAB image,
    marks near-black neutral pixels (L* < 35, |a*|, |b*| < 20) and red ones (a* >= 12,
    b* >= 10; stained cells have b* < 0), grown by one pixel. Returns bool (H, W).
    """
    h, w = lab.shape[:2]
    r0, c0 = int(h * (1 - window[0])), int(w * (1 - window[1]))
    corner = lab[r0:, c0:]
    # a*, b* are offset by 128: |a*| < 20 is 109..147, a* >= 12 is 140.., b* >= 10 is 138..
    black = cv2.inRange(corner, (0, 109, 109), (89, 147, 147))
    red = cv2.inRange(corner, (0, 140, 138), (255, 255, 255))
    out = np.zeros((h, w), np.uint8)
    if not (cv2.countNonZero(black) or cv2.countNonZero(red)):
        return out.view(bool)
    # grown by one pixel: only the window and the row and column before it can change
    top, left = max(r0 - 1, 0), max(c0 - 1, 0)
    out[r0:, c0:] = cv2.bitwise_or(black, red) & 1
    out[top:, left:] = cv2.dilate(
        out[top:, left:], cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    )
    return out.view(bool)


def robust_thresholds(hist: np.ndarray, min_count: float) -> list[int]:
    """Candidate a* thresholds of a normalised field, the most plausible last.

    Starts at Otsu's threshold of ``hist`` (256,) and moves to Otsu's threshold of the
    upper class while the upper class covers over ``MAX_COVER`` of the field, or while the
    new threshold lies in a valley (under half the smoothed density of the old one) with a
    mode above it (over twice its density) holding at least ``min_count`` pixels. Empty
    when no class lies ``MIN_CONTRAST`` above the background mode (no stained cells).
    """
    hist = np.asarray(hist, np.float64)
    total = hist.sum()
    t = int(otsu_threshold(hist))
    if t >= hist.size - 1:
        return []
    smooth = np.convolve(hist, np.ones(5) / 5, mode="same")
    chain = [t]
    while hist[t + 1 :].sum() >= min_count and np.count_nonzero(hist[t + 1 :]) >= 2:
        t2 = t + 1 + int(otsu_threshold(hist[t + 1 :]))
        over = hist[t + 1 :].sum() > MAX_COVER * total
        valley = (
            smooth[t2] < 0.5 * smooth[t]
            and smooth[t2 + 1 :].max() > 2 * smooth[t2]
            and hist[t2 + 1 :].sum() >= min_count
        )
        if not (over or valley):
            break
        t = t2
        chain.append(t)
    bins = np.arange(hist.size)
    mode = int(np.argmax(hist))
    return [
        c
        for c in chain
        if (hist[c + 1 :] @ bins[c + 1 :]) / max(hist[c + 1 :].sum(), 1) - mode >= MIN_CONTRAST
    ]


def _robust(work: np.ndarray, stages: bool) -> _Parts:
    """Normalised field, scale bar excluded, plausibility-checked split with fallback."""
    norm = normalise_illumination(work)
    lab = cv2.cvtColor(norm, cv2.COLOR_RGB2LAB)
    a = cv2.extractChannel(lab, 1)
    label = scale_bar_mask(lab)
    has_label = bool(label.any())
    flags = ["scale-bar"] if has_label else []
    free = (~label).view(np.uint8) if has_label else None
    hist = cv2.calcHist([a], [0], free, [256], [0, 256]).ravel()
    _, _, min_area = scaled_params(*a.shape, ROBUST_CLEANING)
    chain = robust_thresholds(hist, min_area)
    if not chain:
        flags.append("no-contrast")
        chain = [255]
    elif len(chain) > 1:
        flags.append("resplit")
    for i, t in enumerate(reversed(chain)):
        split = cv2.threshold(a, t, 1, cv2.THRESH_BINARY)[1]  # 1 where a > t
        if has_label:
            cv2.subtract(split, label.view(np.uint8), dst=split)  # 0 on the label
        mask, stats, centroids, keep = clean(split, ROBUST_CLEANING, label if has_label else None)
        if keep.any():
            if i:
                flags.append("fallback")
            break
    st = Stages(norm, lab, split.view(bool), mask) if stages else None
    return _Parts(mask, stats, centroids, keep, float(t), tuple(flags), st)


_PIPELINES = {"reference": _reference, "fast": _fast, "robust": _robust}


def segment(
    rgb: np.ndarray,
    mode: str = "robust",
    *,
    max_pixels: int = MAX_WORK_PIXELS,
    stages: bool = False,
) -> Segmentation:
    """Segment the blast (nucleated) cells of a smear field.

    Parameters
    ----------
    rgb : uint8 (H, W, 3) RGB field, any size up to ``imageio.MAX_PIXELS``.
    mode : ``"reference"``, ``"fast"`` (same result, >15x faster) or ``"robust"``.
    max_pixels : larger fields are analysed on a downscaled copy (see module docs).
    stages : keep the intermediate images (``Segmentation.stages``) for QC.

    Returns
    -------
    Segmentation with a bool (H, W) ``mask`` and its ``cells``.

    Raises
    ------
    ValueError for a mode not in ``MODES`` or a field that is not uint8 (H, W, 3) RGB
    (grayscale, RGBA, 16-bit, float, empty, over-large), naming the problem.
    """
    if mode not in _PIPELINES:
        raise ValueError(f"unknown segmentation mode {mode!r}; choose one of {MODES}")
    rgb = check_field(rgb)
    work = analysis_copy(rgb, max_pixels)
    mask, stats, centroids, keep, t, flags, st = _PIPELINES[mode](work, stages)
    scale = work.shape[0] / rgb.shape[0]
    if work.shape != rgb.shape:
        h, w = rgb.shape[:2]
        up = cv2.resize(mask.view(np.uint8) * np.uint8(255), (w, h), interpolation=cv2.INTER_LINEAR)
        mask = cv2.threshold(up, 127, 1, cv2.THRESH_BINARY)[1]
        _, stats, centroids = _label_components(mask)
        keep = np.arange(len(stats)) > 0
        mask = mask.view(bool)
    return Segmentation(mask, _cells(stats, centroids, keep), mode, t, scale, flags, st)


def draw_outline(
    rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """A copy of an RGB uint8 (H, W, 3) image with the outline of a bool (H, W) mask drawn
    in ``colour``, about 1 px per 224 px of the short side thick."""
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {rgb.shape[:2]}")
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    out = np.ascontiguousarray(rgb, np.uint8).copy()
    thickness = max(1, round(min(mask.shape) / REFERENCE_SIZE))
    return cv2.drawContours(out, contours, -1, colour, thickness, cv2.LINE_AA)


QC_PANELS = ("raw", "LAB a*", "clusters", "threshold", "cleaned", "imposed")


def qc_strip(rgb: np.ndarray, result: Segmentation) -> np.ndarray:
    """Six-panel QC strip of a segmentation made with ``stages=True``.

    Panels (``QC_PANELS``), each at analysis resolution (h, w) under a 14 px title: the
    field, its a* channel (viridis), the two clusters in their mean colours, the cell
    cluster, the cleaned mask, the imposed field. Returns uint8 (h + 14, 6 * w + 10, 3).
    """
    st = result.stages
    if st is None:
        raise ValueError("the QC strip needs segment(..., stages=True)")
    h, w = st.split.shape
    raw = check_field(rgb)
    if raw.shape[:2] != (h, w):
        raw = cv2.resize(raw, (w, h), interpolation=cv2.INTER_AREA)
    a = cv2.normalize(st.lab[:, :, 1], None, 0, 255, cv2.NORM_MINMAX)
    a_view = cv2.cvtColor(cv2.applyColorMap(a, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    clusters = np.empty_like(st.analysed)
    for sel in (st.split, ~st.split):
        if sel.any():
            clusters[sel] = st.analysed[sel].mean(axis=0)
    panels = [
        raw,
        a_view,
        clusters,
        np.repeat(st.split[..., None] * np.uint8(255), 3, axis=2),
        np.repeat(st.cleaned[..., None] * np.uint8(255), 3, axis=2),
        raw * st.cleaned[..., None],
    ]
    strip = np.full((h + 14, 6 * w + 10, 3), 255, np.uint8)
    for i, (panel, title) in enumerate(zip(panels, QC_PANELS)):
        x = i * (w + 2)
        strip[14:, x : x + w] = panel
        cv2.putText(strip, title, (x + 2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 0, 1, cv2.LINE_AA)
    return strip
