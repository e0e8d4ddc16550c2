"""Evaluation of classifiers on labelled fields (above ``edge`` and ``data``).

- ``metrics``: accuracy, per-class figures, calibration and their intervals (numpy only);
- ``shifts``: the colour-shift suite and the shortcut audit, on the raw field;
- ``evaluate``: ``Predictor``, the one interface every evaluator runs a model through, and
  ``evaluate`` (clean, every shift, the shortcut audit);
- ``render`` and ``plots``: ``report.json``, ``report.md`` and the PNGs (matplotlib).
"""
