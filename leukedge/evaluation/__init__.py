"""Evaluation: metrics, the shift suite and reports over labelled fields (above edge and data)."""
