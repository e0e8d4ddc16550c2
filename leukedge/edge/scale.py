"""Magnification: red cells as a ruler, and bringing a frame to the training fields' scale.

Red blood cells are about 7.5 um across on every microscope, so their typical diameter in pixels
says how a frame's magnification compares with the training fields'. ``cell_diameter`` measures
it without segmenting single cells (in smears they touch, stack into rouleaux and have a pale
centre):

1. stained pixels: the green channel's darkness, clipped at its ``CLIP_QUANTILE`` so dark nuclei
   weigh no more than red cells, split from the background by Otsu's threshold; holes enclosed by
   stained pixels (pale centres) are filled;
2. a granulometry of that mask in one Fourier transform: its scale-normalised
   Laplacian-of-Gaussian energy over a ladder of scales ``SIGMAS``; the smallest scale with a
   local maximum holding at least ``PEAK_SHARE`` of the largest is the objects' typical size
   (a disc of diameter d peaks at sigma = d / (2 sqrt 2)). Red cells outnumber every other
   object, so this is their diameter.

Where cells crowd, the mask merges touching cells into larger objects, and more so at a lower
magnification, where the gaps between them shrink below a pixel. So a second ruler,
``texture``, reads the same energy of the grey image itself (the green channel's darkness, no
threshold): the scale at which it is largest. Grey levels keep the pale lines between touching
cells that a threshold loses.

Each ruler alone misjudges about one training field in two hundred, and a frame under either
band added those errors up (about 1% of clean fields). A lower magnification is therefore
judged on the shape of both energy curves at once (``_spectrum``): a linear discriminant
stored in the bundle (``trust.scale.lower``, fitted at export between the training fields and
mosaics of them at half the magnification: ``leukedge.export.magnification``). On the
Taleqani training and validation fields it flags 0.5% / 0% of clean fields, and passes 0.6% /
1.8% of 0.5x frames (the two rulers: 0.9-1.1% and 1.0-1.8%). Bundles without it, and frames
not read at the training fields' resolution, are judged by the rulers' bands. A frame whose
texture ruler is above its band while the mask ruler reads inside it (but over
``DISAGREE_FACTOR`` times the training median) is flagged too: the rulers disagree, and
another laboratory's single-cell images at a higher magnification do this.

Frames larger than ``WORK_SIDE`` are measured on a downscaled copy, and again on a central crop
at a finer resolution when the cells turn out small on that copy.

``normalise`` brings a frame to the training scale: a frame whose cells fall inside the training
band (``scale_reference``) is left as it is; one at a higher magnification is shrunk so its cells
match the training median, and ``tiles`` then cuts it into training-size fields (each is
classified; ``pipeline`` combines them). A frame at a lower magnification is not enlarged
(resampling cannot restore the detail it never recorded) and is flagged ``scale``, as is one
whose cells cannot be measured, or one that at the training scale covers less than
``MIN_FIELD_SHARE`` of a training field (too high a magnification for its size).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..errors import DataError
from .bundle import BundleError
from .segment import otsu_threshold

#: Scales of the granulometry (Gaussian sigma, px): a disc of diameter 2 sqrt(2) sigma peaks
#: at sigma, so diameters of about 3 to 180 px are measurable.
SIGMAS = np.geomspace(1.0, 64.0, 61)
#: Radial frequency bins per 1/size step of the discrete Fourier transform.
RADIAL_BINS = 4
#: Grey levels above the background's darkness from which a pixel may be stained.
BACKGROUND_NOISE = 8
#: The stained signal is clipped at this quantile of the darkness of such pixels.
CLIP_QUANTILE = 0.5
#: The mask is area-averaged by this factor before its spectrum is taken.
SPECTRUM_STEP = 2
#: A local maximum of the energy counts when it holds this share of the largest.
PEAK_SHARE = 0.3
#: Holes are left unfilled where filling them would cover more than this share of the frame
#: (a dense smear: its holes are the gaps between touching cells, not pale centres).
MAX_COVER = 0.75
#: A stained/background split under this many grey levels apart is no split (a blank frame).
MIN_CONTRAST = 6
#: Frames are measured at most this many pixels on a side (larger ones are downscaled).
WORK_SIDE = 256
#: On a downscaled copy, cells smaller than this (px) are re-measured at a finer resolution.
FINE_PX = 12.0
#: Below this many pixels on its short side a frame is too small to measure.
MIN_SIDE_PX = 48
#: The band of training diameters runs from their 0.5th percentile (below it a frame is flagged:
#: a lower magnification cannot be corrected) to their 99.5th widened by this factor (above it
#: a frame is shrunk to the training scale, and flagged only when too little of it remains).
BAND_MARGIN = 1.1
#: With the discriminant, a ruler under this share of its band's low end still flags a frame
#: (no training field of the Taleqani set is that far under: a guard for magnifications far
#: lower than the discriminant was fitted on).
BACKSTOP = 0.5
#: A frame whose texture ruler is above its band (``texture_max_px``) while the mask ruler
#: reads inside it but over this many times the training median is flagged: the rulers
#: disagree on a higher magnification (a large-cell image whose merged mask under-reads).
DISAGREE_FACTOR = 2.0
#: A frame at the training scale must cover this share of a training field's side.
MIN_FIELD_SHARE = 0.75
#: At most this many training-size tiles are classified per frame (spread evenly).
MAX_TILES = 9

#: Built-in figures for bundles without ``trust.scale``: measured with ``scale_reference`` on the
#: training fields of the Taleqani set (224 x 224 px; ``leukedge data split``, seed 0).
DEFAULT_SCALE = {
    "statistic": "typical red-cell diameter (px), granulometry of the stained mask; texture: "
    "the scale of the grey image's strongest blobs",
    "diameter_px": 17.97,
    "band_px": [12.55, 53.27],
    "texture_min_px": 14.28,
    "texture_max_px": 62.12,
    "field_px": 224,
    "n": 0,
}


def _histogram_quantile(hist: np.ndarray, q: float) -> int:
    """The q-quantile bin of a histogram."""
    c = np.cumsum(hist)
    return int(np.searchsorted(c, q * c[-1]))


@lru_cache(maxsize=16)
def _spectral_weights(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Hann window float32 (h, w), radial bin int (h * n,) of each coefficient that
    ``_power`` returns, LoG energy weights float32 (len(SIGMAS), bins)) for an h x w image."""
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fx = np.arange(1, (w - 1) // 2 + 1) / w
    f2 = (np.fft.fftfreq(h)[:, None] ** 2 + fx[None, :] ** 2).ravel()
    bins = np.rint(np.sqrt(f2) * RADIAL_BINS * max(h, w)).astype(np.int64)
    f2 = np.bincount(bins, f2) / np.maximum(np.bincount(bins), 1)  # mean f^2 of each bin
    a = (2 * np.pi) ** 2 * f2[None, :] * SIGMAS[:, None] ** 2
    return win, bins, (a**2 * np.exp(-a)).astype(np.float32)


def _power(image: np.ndarray) -> np.ndarray:
    """Power spectrum float32 (h, (w - 1) // 2) of a real float32 (h, w) image: the
    coefficients with horizontal frequency 1 .. (w - 1) // 2 of w, every vertical one (read
    from OpenCV's packed CCS layout; the half plane suffices for a radial spectrum)."""
    x = cv2.dft(image)
    n = (image.shape[1] - 1) // 2
    return x[:, 1 : 2 * n : 2] ** 2 + x[:, 2 : 2 * n + 1 : 2] ** 2


def stained_mask(rgb: np.ndarray) -> np.ndarray:
    """Stained pixels (red cells and nuclei) with enclosed holes filled: uint8 (H, W) 0/1.

    The green channel's darkness is clipped at the ``CLIP_QUANTILE`` of the pixels darker
    than the background (its histogram's mode) by ``BACKGROUND_NOISE``, then split by Otsu's
    threshold; ranks and Otsu's split do not change with a lamp's brightness. Empty when the
    split is under ``MIN_CONTRAST`` grey levels (a blank frame). Holes are left unfilled where
    filling them would cover over ``MAX_COVER`` of the frame.
    """
    dark = cv2.bitwise_not(cv2.extractChannel(rgb, 1))
    hist = cv2.calcHist([dark], [0], None, [256], [0, 256]).ravel()
    mode = int(np.argmax(np.convolve(hist, np.ones(5), mode="same")))  # the background
    start = min(255, mode + BACKGROUND_NOISE)
    clip = start + _histogram_quantile(hist[start:], CLIP_QUANTILE) if hist[start:].any() else 255
    clipped = hist[: clip + 1].copy()
    clipped[-1] += hist[clip + 1 :].sum()
    t = int(otsu_threshold(clipped))
    below, above = hist[: t + 1], hist[t + 1 :]
    if not above.any() or not below.any():
        return np.zeros(dark.shape, np.uint8)
    levels = np.arange(256)
    contrast = above @ levels[t + 1 :] / above.sum() - below @ levels[: t + 1] / below.sum()
    if contrast < MIN_CONTRAST:
        return np.zeros(dark.shape, np.uint8)
    fg = cv2.threshold(dark, t, 1, cv2.THRESH_BINARY)[1]
    padded = cv2.copyMakeBorder(fg, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(padded, None, (0, 0), 2)  # the background reachable from the border
    filled = (padded[1:-1, 1:-1] != 2).view(np.uint8)  # stained, or a hole
    return fg if cv2.countNonZero(filled) > MAX_COVER * fg.size else filled


def _energy(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(scale-normalised LoG energy float (len(SIGMAS),), k) of a float32 (H, W) image,
    taken of the image area-averaged by k = ``SPECTRUM_STEP`` (objects keep their size; only
    detail finer than any measurable cell is lost; k = 1 for a small image)."""
    h, w = image.shape
    k = SPECTRUM_STEP if min(h, w) >= SPECTRUM_STEP * MIN_SIDE_PX else 1
    m = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
    win, bins, weights = _spectral_weights(*m.shape)
    power = _power((m - np.float32(m.mean())) * win)
    return weights @ np.bincount(bins, power.ravel(), minlength=weights.shape[1]), k


def _peak_diameter(e: np.ndarray, i: int, k: int) -> float:
    """The diameter (px) of the energy ``e``'s peak at scale index ``i`` (0 < i < last),
    refined by a parabola through its neighbours in log scale, for an image shrunk by k."""
    lo, mid, hi = np.log(np.maximum(e[i - 1 : i + 2], 1e-30))
    offset = 0.5 * (lo - hi) / (lo - 2 * mid + hi) if lo - 2 * mid + hi < 0 else 0.0
    step = np.log(SIGMAS[1] / SIGMAS[0])
    return float(SIGMAS[i] * np.exp(offset * step) * 2 * np.sqrt(2)) * k


def _mask_energy(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """``_energy`` of a uint8 (H, W) 0/1 mask; (None, 1) for an empty one."""
    return _energy(mask.astype(np.float32)) if mask.any() else (None, 1)


def _grey_energy(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """``_energy`` of an RGB uint8 (H, W, 3) image's green-channel darkness."""
    return _energy(np.float32(255) - cv2.extractChannel(rgb, 1).astype(np.float32))


def _granulometry_diameter(e: np.ndarray | None, k: int) -> float:
    """Typical object diameter (px) from a mask's energy ``e`` (``_mask_energy``, taken at
    k): its smallest local maximum holding ``PEAK_SHARE`` of the largest; NaN if none."""
    if e is None:
        return float("nan")
    peaks = np.flatnonzero(
        (e[1:-1] >= e[:-2]) & (e[1:-1] > e[2:]) & (e[1:-1] >= PEAK_SHARE * e.max())
    )
    return float("nan") if len(peaks) == 0 else _peak_diameter(e, int(peaks[0]) + 1, k)


def _texture_diameter(e: np.ndarray, k: int) -> float:
    """The diameter (px) at which the grey image's energy ``e`` (``_grey_energy``, taken at
    k) is largest (module doc); NaN for a flat image."""
    if not e.max() > 0:
        return float("nan")
    return _peak_diameter(e, min(max(int(np.argmax(e)), 1), len(e) - 2), k)


def _spectrum(mask_energy: np.ndarray | None, grey_energy: np.ndarray) -> np.ndarray | None:
    """float32 (2 * len(SIGMAS),): both energies' logarithms, each relative to its largest
    (the discriminant's input: shape, not contrast); None when either is empty or flat."""
    if mask_energy is None or not grey_energy.max() > 0:
        return None
    logs = [np.log(np.maximum(e, 1e-30) / e.max()) for e in (mask_energy, grey_energy)]
    return np.concatenate(logs).astype(np.float32)


def _shrunk(rgb: np.ndarray, k: int) -> np.ndarray:
    """``rgb`` area-averaged by an integer factor ``k``."""
    if k <= 1:
        return rgb
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class CellMeasures:
    """The rulers of one frame (module doc), in the frame's pixels: ``diameter`` (red cells,
    from the stained mask) and ``texture`` (the grey image's blob scale), NaN when not
    measurable; ``stained``: the share of stained pixels; ``spectrum``: both energies as
    the lower-magnification discriminant reads them (``_spectrum``; None when there is
    nothing to measure), taken of the frame area-averaged by ``spectrum_step``."""

    diameter: float
    texture: float
    stained: float
    spectrum: np.ndarray | None = None
    spectrum_step: int = 0


def measure_cells(rgb: np.ndarray) -> CellMeasures:
    """The rulers of an RGB uint8 (H, W, 3) frame (module doc). The diameter is NaN when it
    cannot be measured: a frame under ``MIN_SIDE_PX``, no stained objects, or objects too
    small to resolve; both rulers read the same (shrunk, or centrally cropped) image."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        return CellMeasures(float("nan"), float("nan"), float("nan"))
    k = max(1, int(np.ceil(max(h, w) / WORK_SIDE)))
    work = _shrunk(rgb, k)
    mask = stained_mask(work)
    stained = cv2.countNonZero(mask) / mask.size
    mask_energy, step = _mask_energy(mask)
    d = _granulometry_diameter(mask_energy, step) * k
    if k > 1 and not d / k >= FINE_PX:  # small on that copy, or too small to measure there
        k = max(1, int(d // (2 * FINE_PX))) if np.isfinite(d) else 1
        side = WORK_SIDE * k
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        work = _shrunk(rgb[top : top + side, left : left + side], k)
        mask_energy, step = _mask_energy(stained_mask(work))
        d = _granulometry_diameter(mask_energy, step) * k
    grey_energy, step = _grey_energy(work)
    texture = _texture_diameter(grey_energy, step) * k
    return CellMeasures(d, texture, stained, _spectrum(mask_energy, grey_energy), k * step)


def cell_diameter(rgb: np.ndarray) -> float:
    """Typical red-cell diameter in pixels of an RGB uint8 (H, W, 3) frame; NaN if
    unmeasurable (``measure_cells``)."""
    return measure_cells(rgb).diameter


def scale_reference(fields) -> dict:
    """The manifest's ``trust.scale`` from training fields (RGB uint8 (H, W, 3) each).

    ``diameter_px`` is the median red-cell diameter, ``band_px`` the range left as it is
    (0.5th percentile to 99.5th widened by ``BAND_MARGIN``), ``texture_min_px`` and
    ``texture_max_px`` the texture ruler's band (the same percentiles and margin),
    ``field_px`` the median short side of the fields.
    """
    d, texture, sides = [], [], []
    for f in fields:
        m = measure_cells(f)
        d.append(m.diameter)
        texture.append(m.texture)
        sides.append(min(f.shape[:2]))
    d, texture = np.asarray(d), np.asarray(texture)
    ok = d[np.isfinite(d)]
    if len(ok) == 0:
        raise DataError("no field with measurable red cells; cannot compute trust.scale")
    lo, hi = np.quantile(ok, [0.005, 0.995])
    t_lo, t_hi = np.quantile(texture[np.isfinite(texture)], [0.005, 0.995])
    return {
        "statistic": DEFAULT_SCALE["statistic"],
        "diameter_px": round(float(np.median(ok)), 2),
        "band_px": [round(float(lo), 2), round(float(hi * BAND_MARGIN), 2)],
        "texture_min_px": round(float(t_lo), 2),
        "texture_max_px": round(float(t_hi * BAND_MARGIN), 2),
        "field_px": int(np.median(sides)),
        "n": int(len(d)),
        "unmeasured": int(len(d) - len(ok)),
    }


def parse_scale_reference(manifest: dict, where: str = "leukedge.json") -> tuple[dict, str | None]:
    """(``trust.scale`` of a manifest, None), or (``DEFAULT_SCALE``, a note) when it has none;
    ``BundleError`` naming ``where`` when the entry is malformed."""
    ref = (manifest.get("trust") or {}).get("scale")
    if ref is None:
        return DEFAULT_SCALE, (
            f"{where}: no trust.scale; judging magnification with the built-in Taleqani figures "
            "(add them with 'leukedge bundle add-trust')"
        )
    try:
        d = float(ref["diameter_px"])
        lo, hi = (float(v) for v in ref["band_px"])
        field = int(ref["field_px"])
        texture = float(ref.get("texture_min_px", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{where}: trust.scale needs diameter_px, band_px [lo, hi] and field_px ({exc}); "
            "recompute it with 'leukedge bundle add-trust'"
        ) from exc
    if not (0 < lo <= d <= hi and field > 0 and texture >= 0):
        raise BundleError(f"{where}: trust.scale is inconsistent (need 0 < lo <= diameter <= hi)")
    if "texture_min_px" not in ref:  # made before the texture ruler: the mask ruler alone
        return ref, (
            f"{where}: trust.scale has no texture_min_px; lower magnifications are judged on "
            "the red-cell mask alone (add it with 'leukedge bundle add-trust')"
        )
    if "lower" not in ref:  # made before the discriminant: the two rulers
        return ref, (
            f"{where}: trust.scale has no lower-magnification discriminant; lower "
            "magnifications are judged on the two rulers alone, which flag more clean fields "
            "(add it with 'leukedge bundle add-trust')"
        )
    try:
        weights = np.asarray(ref["lower"]["weights"], np.float32)
        threshold = float(ref["lower"]["threshold"])
        step = int(ref["lower"]["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{where}: trust.scale.lower needs weights, a threshold and a step ({exc}); "
            "recompute it with 'leukedge bundle add-trust'"
        ) from exc
    if weights.shape != (2 * len(SIGMAS),) or not np.isfinite([*weights, threshold]).all():
        raise BundleError(
            f"{where}: trust.scale.lower needs {2 * len(SIGMAS)} finite weights and a finite "
            "threshold; recompute it with 'leukedge bundle add-trust'"
        )
    lower = {**ref["lower"], "weights": weights, "threshold": threshold, "step": step}
    return {**ref, "lower": lower}, None


def lower_magnification(m: CellMeasures, ref: dict) -> bool:
    """Whether a frame's measures (``measure_cells``) put it at a lower magnification than
    ``ref``'s (``trust.scale``) training fields. With the bundle's discriminant
    (``ref["lower"]``) and a spectrum read as the training fields' were (a frame read
    coarser had cells of at least ``FINE_PX`` there): its score under the threshold, or
    either ruler under ``BACKSTOP`` of its band's low end (further than any training
    field). Otherwise either ruler under its band."""
    lo, texture_min = ref["band_px"][0], float(ref.get("texture_min_px", 0.0))
    lower = ref.get("lower")
    if lower is None or m.spectrum is None or m.spectrum_step != lower["step"]:
        return m.diameter < lo or m.texture < texture_min
    if m.diameter < BACKSTOP * lo or m.texture < BACKSTOP * texture_min:
        return True
    return float(m.spectrum @ lower["weights"]) < lower["threshold"]


@dataclass(frozen=True)
class ScaleCheck:
    """How a frame compares with the training scale.

    ``diameter`` is the measured red-cell diameter (px, NaN if unmeasured), ``factor`` the
    frame's pixels per training pixel applied by ``normalise`` (1.0: left as it is),
    ``reason`` is ``"scale"`` or ``"too-small"`` when the frame cannot be brought to the
    training scale, else None; ``stained`` is the share of stained pixels (``measure_cells``).
    """

    diameter: float
    factor: float
    reason: str | None = None
    stained: float = float("nan")


def check_scale(rgb: np.ndarray, ref: dict) -> ScaleCheck:
    """Compare an RGB uint8 (H, W, 3) frame's red cells with ``ref`` (``trust.scale``)."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        return ScaleCheck(float("nan"), 1.0, "too-small")
    m = measure_cells(rgb)
    d, stained = m.diameter, m.stained
    if not np.isfinite(d) or lower_magnification(m, ref):
        return ScaleCheck(d, 1.0, "scale", stained)
    hi = ref["band_px"][1]
    texture_max = float(ref.get("texture_max_px", np.inf))
    if DISAGREE_FACTOR * float(ref["diameter_px"]) < d <= hi and m.texture > texture_max:
        return ScaleCheck(d, 1.0, "scale", stained)
    factor = 1.0 if d <= hi else d / float(ref["diameter_px"])
    if min(h, w) / factor < MIN_FIELD_SHARE * float(ref["field_px"]):
        return ScaleCheck(d, factor, "scale" if factor > 1.0 else "too-small", stained)
    return ScaleCheck(d, factor, None, stained)


def normalise(rgb: np.ndarray, factor: float) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame shrunk by ``factor`` (>= 1; 1.0 returns it unchanged)."""
    if factor <= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _starts(length: int, size: int, n: int) -> list[int]:
    """``n`` tile offsets spread evenly over ``length`` (one tile: centred)."""
    if n == 1:
        return [max(0, length - size) // 2]
    return [round(s) for s in np.linspace(0, max(0, length - size), n)]


def tiles(rgb: np.ndarray, size: int, max_tiles: int = MAX_TILES) -> list[np.ndarray]:
    """Training-size fields (views) of an RGB frame at the training scale.

    About ``length / size`` tiles (rounded, at least one) along each side, ``size`` px square
    (or the frame's side where shorter), spread evenly from edge to edge so they overlap or
    leave narrow gaps (one along a side: centred); at most ``max_tiles`` in all (the grid is
    thinned evenly).
    """
    h, w = rgb.shape[:2]
    ny, nx = max(1, round(h / size)), max(1, round(w / size))
    while ny * nx > max_tiles:
        if ny >= nx:
            ny -= 1
        else:
            nx -= 1
    th, tw = min(h, size), min(w, size)
    return [rgb[y : y + th, x : x + tw] for y in _starts(h, th, ny) for x in _starts(w, tw, nx)]
