"""Benchmarks shipped with the package, so ``leukedge bench`` runs on an installed station.

``run_all.run`` runs every part: ``segmentation`` (quality and speed of the three modes),
``latency`` (each model x format x precision x backend x thread count, each configuration
in a fresh process, ``worker``), ``end_to_end`` (the station's stages), ``accuracy`` (the
evaluation report of every trained bundle) and ``machine`` (the facts of the machine).
``models`` collects what to measure; ``build`` makes the architecture-only models and
PyTorch/Keras baselines in a child process and needs the train and export extras, which
``--on-device`` runs never touch: they need only the edge extra (plots: matplotlib).
"""
