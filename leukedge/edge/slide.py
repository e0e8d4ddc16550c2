"""Per-slide tally and the slide-level call.

The rule (decision support, never a diagnosis):
1. Fields with an error are counted but carry no evidence.
2. Evidence, not copies: a field identical to an earlier field of the slide (same SHA-256)
   or near-identical (perceptual hashes within ``NEAR_DUPLICATE_BITS`` bits) is a
   ``duplicate``: counted as flagged, never as evidence.
3. Uncertain fields are counted with their reasons and excluded from the vote.
4. Flagged fields (uncertain or duplicate) making up more than ``MAX_UNCERTAIN`` of the
   classified fields: "refer to a haematologist: image quality / outside the model's
   training", with the most frequent reasons.
5. No confident field: "refer to a haematologist" (insufficient evidence).
6. Otherwise the class with most confident fields is the call when it holds at least
   ``MIN_AGREEMENT`` of them and there are at least ``MIN_FIELDS`` distinct confident
   fields; else the evidence is mixed or too little: "refer to a haematologist".
7. Any call other than Benign also says "refer to a haematologist to confirm".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .classes import DESCRIPTIONS
from .phash import NEAR_DUPLICATE_BITS, distances

MAX_UNCERTAIN = 0.25
MIN_AGREEMENT = 0.8
MIN_FIELDS = 3
#: How many of the most frequent reasons a referral names.
TOP_REASONS = 3
NOTICE = "Decision support for research use only; not a diagnosis."
REFER = "refer to a haematologist"
REFER_FLAGGED = f"{REFER}: image quality / outside the model's training"


def _phash_bytes(phash: str | bytes | np.ndarray | None) -> np.ndarray | None:
    """A perceptual hash (hex string, bytes or uint8 (8,)) as uint8 (8,), or None."""
    if phash is None:
        return None
    if isinstance(phash, str):
        phash = bytes.fromhex(phash)
    return np.frombuffer(bytes(phash), np.uint8) if not isinstance(phash, np.ndarray) else phash


@dataclass
class SlideTally:
    """Running counts for one slide."""

    slide_id: str
    fields: int = 0
    errors: int = 0
    uncertain: int = 0
    duplicates: int = 0
    confident: Counter = field(default_factory=Counter)
    all_labels: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    _sha256: set = field(default_factory=set, repr=False)
    #: uint8 (n, 8): the perceptual hashes counted so far, one array (no per-field stacking)
    _phashes: np.ndarray = field(default_factory=lambda: np.zeros((0, 8), np.uint8), repr=False)

    def _seen(self, sha256: str | None, phash: np.ndarray | None) -> bool:
        if sha256 is not None and sha256 in self._sha256:
            return True
        if phash is not None and len(self._phashes):
            return bool(distances(self._phashes, phash).min() <= NEAR_DUPLICATE_BITS)
        return False

    def add(
        self,
        label: str | None,
        uncertain: bool,
        error: bool,
        *,
        sha256: str | None = None,
        phash: str | bytes | np.ndarray | None = None,
        reasons: tuple[str, ...] | list[str] = (),
    ) -> bool:
        """Count one field's outcome; True when it is a duplicate of an earlier field.

        ``sha256`` (hex) and ``phash`` (hex string, bytes or uint8 (8,), as in
        ``FieldResult``) identify copies; ``reasons`` (``pipeline.REASONS``) are tallied.
        """
        self.fields += 1
        if error:
            self.errors += 1
            return False
        self.all_labels[label] += 1
        ph = _phash_bytes(phash)
        if self._seen(sha256, ph):
            self.duplicates += 1
            self.reasons["duplicate"] += 1
            return True
        if sha256 is not None:
            self._sha256.add(sha256)
        if ph is not None:
            self._phashes = np.concatenate([self._phashes, ph.reshape(1, 8)])
        if uncertain:
            self.uncertain += 1
            self.reasons.update(reasons)
        else:
            self.confident[label] += 1
        return False

    def top_reasons(self) -> list[tuple[str, int]]:
        """The ``TOP_REASONS`` most frequent reasons with their counts."""
        return self.reasons.most_common(TOP_REASONS)

    def call(self) -> tuple[str | None, str]:
        """(called class or None, one-line explanation) by the rule in the module doc."""
        classified = self.fields - self.errors
        flagged = self.uncertain + self.duplicates
        n = sum(self.confident.values())
        if classified == 0:
            return None, f"no classified field: {REFER}"
        if flagged > MAX_UNCERTAIN * classified:
            detail = f"{flagged}/{classified} fields flagged"
            if self.reasons:
                detail += ": " + ", ".join(f"{r} {c}" for r, c in self.top_reasons())
            return None, f"{REFER_FLAGGED} ({detail})"
        if n == 0:
            return None, f"no confident field: {REFER}"
        label, top = self.confident.most_common(1)[0]
        if n < MIN_FIELDS or top < MIN_AGREEMENT * n:
            return None, f"mixed or too little evidence ({top}/{n} fields {label}): {REFER}"
        text = f"consistent with {DESCRIPTIONS.get(label, label)} ({top}/{n} confident fields)"
        if label != "Benign":
            text += f"; {REFER} to confirm"
        return label, text

    def summary(self) -> dict:
        """JSON-ready summary: counts, the call, whether to refer, the most frequent reasons
        and the decision-support notice."""
        label, text = self.call()
        return {
            "slide": self.slide_id,
            "fields": self.fields,
            "errors": self.errors,
            "uncertain": self.uncertain,
            "duplicates": self.duplicates,
            "counts": dict(self.all_labels),
            "confident_counts": dict(self.confident),
            "call": label,
            "explanation": text,
            "refer": label != "Benign",
            "top_reasons": dict(self.top_reasons()),
            "notice": NOTICE,
        }
