"""Synthetic smear fields with exact ground-truth blast masks.

The generator draws a pale, slightly blue background with an illumination
gradient, grey-lilac red blood cells with central pallor, and purple blast
cells whose size, colour and chromatin texture depend on the class. It feeds
tests, the demo and the segmentation-quality benchmark; it is not a stand-in
for real smears in any accuracy claim.

Fields are defined at a 224x224 reference; other sizes show the same field of
view at a higher (or lower) resolution, so every length scales with
``sqrt(H * W / 224**2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classes import CLASSES
from .segment import REFERENCE_SIZE


@dataclass(frozen=True)
class BlastLook:
    """Class-dependent appearance of a blast cell (at the 224 px reference)."""

    radius: tuple[float, float]  # min, max radius in px
    rgb: tuple[int, int, int]  # mean nucleus colour
    texture_scale: float  # chromatin blob size in px
    texture_amp: float  # chromatin contrast, grey levels
    count: tuple[int, int]  # min, max blasts per field


LOOKS: dict[str, BlastLook] = {
    "Benign": BlastLook((7.0, 10.0), (95, 55, 170), 1.5, 26.0, (2, 5)),
    "Early": BlastLook((10.0, 13.0), (120, 80, 200), 2.5, 16.0, (3, 7)),
    "Pre": BlastLook((12.0, 15.0), (135, 95, 205), 3.5, 12.0, (2, 6)),
    "Pro": BlastLook((14.0, 18.0), (190, 120, 215), 5.0, 8.0, (2, 4)),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise, float32 (H, W)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    if scale > 0.5:
        noise = cv2.GaussianBlur(noise, (0, 0), scale)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _ellipse_mask(shape, center, axes, angle) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    c = (int(round(center[0] * 16)), int(round(center[1] * 16)))
    a = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
    cv2.ellipse(mask, c, a, angle, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.astype(bool)


def synth_field(
    label: str,
    *,
    size: tuple[int, int] = (REFERENCE_SIZE, REFERENCE_SIZE),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic smear field.

    Parameters
    ----------
    label : one of ``CLASSES`` ("Benign", "Early", "Pre", "Pro").
    size : (H, W) of the field in pixels.
    seed : the same (label, size, seed) always gives the same field.

    Returns
    -------
    rgb : uint8 (H, W, 3) RGB field.
    mask : bool (H, W), True exactly on blast-cell pixels.
    """
    if label not in LOOKS:
        raise ValueError(f"unknown class {label!r}; expected one of {list(LOOKS)}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"field size must be positive, got {size}")
    rng = np.random.default_rng([seed, CLASSES.index(label), h, w])
    s = float(np.sqrt(h * w) / REFERENCE_SIZE)
    look = LOOKS[label]

    # Background: pale blue-white with a low-frequency lamp gradient.
    base = np.array([212, 220, 242], np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.06, 0.06, 2)
    gain = 1.0 + gx * (xx / max(w, 1) - 0.5) + gy * (yy / max(h, 1) - 0.5)
    img = base[None, None, :] * gain[..., None]

    # Red blood cells: grey-lilac discs with a paler centre, may overlap.
    n_rbc = int(rng.integers(18, 40) * (w * h) / (REFERENCE_SIZE**2) / max(s * s, 1e-6))
    rbc_rgb = np.array([178, 172, 205], np.float32)
    for _ in range(n_rbc):
        r = rng.uniform(8.0, 10.5) * s
        c = (rng.uniform(0, w), rng.uniform(0, h))
        disc = _ellipse_mask((h, w), c, (r, r * rng.uniform(0.85, 1.0)), rng.uniform(0, 180))
        pallor = _ellipse_mask((h, w), c, (r * 0.45, r * 0.45), 0)
        img[disc] = 0.25 * img[disc] + 0.75 * (rbc_rgb + rng.uniform(-10, 10, 3))
        img[pallor] = 0.5 * img[pallor] + 0.5 * base

    # Blasts: purple, class-dependent size, colour and chromatin texture.
    mask = np.zeros((h, w), bool)
    n_blast = int(rng.integers(look.count[0], look.count[1] + 1))
    texture = _smooth_noise(rng, (h, w), look.texture_scale * s)
    for _ in range(n_blast):
        r = rng.uniform(*look.radius) * s
        margin = min(r, w / 2, h / 2)
        c = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
        cell = _ellipse_mask((h, w), c, (r, r * rng.uniform(0.8, 1.0)), rng.uniform(0, 180))
        colour = np.array(look.rgb, np.float32) + rng.uniform(-8, 8, 3)
        img[cell] = colour + look.texture_amp * texture[cell][:, None]
        mask |= cell

    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask


def write_synth_dataset(
    out: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (REFERENCE_SIZE, REFERENCE_SIZE),
    classes: tuple[str, ...] = CLASSES,
    ext: str = ".png",
) -> list[Path]:
    """Write ``n`` fields per class in the Taleqani layout.

    Fields go to ``out/Original/<class>/synth-<class>-NNNN<ext>`` and their
    ground-truth masks (0/255 PNG) to ``out/Masks/<class>/synth-<class>-NNNN.png``.
    Returns the field paths.
    """
    out = Path(out)
    paths = []
    for label in classes:
        (out / "Original" / label).mkdir(parents=True, exist_ok=True)
        (out / "Masks" / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rgb, mask = synth_field(label, size=size, seed=seed * 1_000_003 + i)
            stem = f"synth-{label}-{i:04d}"
            path = out / "Original" / label / f"{stem}{ext}"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "Masks" / label / f"{stem}.png"), mask.astype(np.uint8) * 255)
            paths.append(path)
    return paths
