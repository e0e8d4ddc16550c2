"""Class names and the class schemes shared by every part of leukedge."""

from __future__ import annotations

#: The four classes of the Taleqani set, in model output order.
CLASSES: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")

#: Human-readable names for reports and the station display.
DESCRIPTIONS: dict[str, str] = {
    "Benign": "Benign (hematogones)",
    "Early": "Malignant early pre-B",
    "Pre": "Malignant pre-B",
    "Pro": "Malignant pro-B",
    "Malignant": "Malignant (B-ALL)",
}

#: Class schemes: scheme name -> {source class: target class}; classes not in
#: the map are dropped. Target order is the order of first appearance.
SCHEMES: dict[str, dict[str, str]] = {
    "4": {"Benign": "Benign", "Early": "Early", "Pre": "Pre", "Pro": "Pro"},
    "3": {"Benign": "Benign", "Pre": "Pre", "Pro": "Pro"},
    "2": {"Benign": "Benign", "Early": "Malignant", "Pre": "Malignant", "Pro": "Malignant"},
}


def scheme_classes(scheme: str) -> tuple[str, ...]:
    """Target class names of a scheme, in model output order."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown class scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    return tuple(dict.fromkeys(SCHEMES[scheme].values()))
