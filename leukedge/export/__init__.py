"""Model export (ONNX, TFLite): import the submodules, e.g. ``leukedge.export.onnx_yolo``.

This package file stays free of heavy imports.
"""
