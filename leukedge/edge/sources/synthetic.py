"""Synthetic smear fields for demos and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import count as counter

from ..classes import CLASSES
from ..synth import synth_field
from .base import Frame, Source, as_size


class SyntheticSource(Source):
    """``n`` fields from ``synth_field`` (None: endless), cycling through the classes
    (or only ``label``); field i uses seed ``seed * 1_000_003 + i``, so the same
    arguments give the same frames. ``size`` is (width, height)."""

    def __init__(
        self,
        label: str | None = None,
        *,
        n: int | None = 8,
        seed: int = 0,
        size: int | Sequence[int] = 224,
    ):
        super().__init__()
        if label is not None and label not in CLASSES:
            raise ValueError(f"synthetic:{label}: unknown class; expected one of {CLASSES}")
        self.labels = (label,) if label else CLASSES
        self.n, self.seed, self.size = n, seed, as_size(size)

    def _generate(self) -> Iterator[Frame]:
        width, height = self.size
        for i in range(self.n) if self.n is not None else counter():
            if self.stopping:
                return
            label = self.labels[i % len(self.labels)]
            rgb, _ = synth_field(label, size=(height, width), seed=self.seed * 1_000_003 + i)
            yield Frame(f"synthetic:{label}#{i}", rgb=rgb)
