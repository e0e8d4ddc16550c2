"""Per-slide tally and the slide-level call.

The rule (decision support, never a diagnosis):
1. Fields with an error are counted but carry no evidence; uncertain fields are
   counted and excluded from the vote.
2. No confident field, or uncertain fields making up more than ``MAX_UNCERTAIN``
   of the classified fields: "refer to a haematologist" (insufficient evidence).
3. Otherwise the class with most confident fields is the call when it holds at
   least ``MIN_AGREEMENT`` of them and at least ``MIN_FIELDS`` fields; else the
   evidence is mixed: "refer to a haematologist".
4. Any call other than Benign also says "refer to a haematologist to confirm".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .classes import DESCRIPTIONS

MAX_UNCERTAIN = 0.25
MIN_AGREEMENT = 0.8
MIN_FIELDS = 3
NOTICE = "Decision support for research use only; not a diagnosis."
REFER = "refer to a haematologist"


@dataclass
class SlideTally:
    """Running counts for one slide."""

    slide_id: str
    fields: int = 0
    errors: int = 0
    uncertain: int = 0
    confident: Counter = field(default_factory=Counter)
    all_labels: Counter = field(default_factory=Counter)

    def add(self, label: str | None, uncertain: bool, error: bool) -> None:
        """Count one field's outcome."""
        self.fields += 1
        if error:
            self.errors += 1
            return
        self.all_labels[label] += 1
        if uncertain:
            self.uncertain += 1
        else:
            self.confident[label] += 1

    def call(self) -> tuple[str | None, str]:
        """(called class or None, one-line explanation) by the rule in the module doc."""
        classified = self.fields - self.errors
        n = sum(self.confident.values())
        if n == 0:
            return None, f"no confident field: {REFER}"
        if self.uncertain > MAX_UNCERTAIN * classified:
            return None, f"{self.uncertain}/{classified} fields uncertain: {REFER}"
        label, top = self.confident.most_common(1)[0]
        if n < MIN_FIELDS or top < MIN_AGREEMENT * n:
            return None, f"mixed or too little evidence ({top}/{n} fields {label}): {REFER}"
        text = f"consistent with {DESCRIPTIONS.get(label, label)} ({top}/{n} confident fields)"
        if label != "Benign":
            text += f"; {REFER} to confirm"
        return label, text

    def summary(self) -> dict:
        """JSON-ready summary: counts, the call and the decision-support notice."""
        label, text = self.call()
        return {
            "slide": self.slide_id,
            "fields": self.fields,
            "errors": self.errors,
            "uncertain": self.uncertain,
            "counts": dict(self.all_labels),
            "confident_counts": dict(self.confident),
            "call": label,
            "explanation": text,
            "notice": NOTICE,
        }
