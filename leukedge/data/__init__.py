"""The data layer: labelled fields on disk and leak-safe splits of them (above ``edge``).

- ``layouts``: the folder layouts leukedge reads (Taleqani, Kaggle, class-per-folder);
- ``dedup``: exact and near-duplicate groups;
- ``split``: stratified, deterministic train/val/test splits and k-fold columns (``split.csv``);
- ``balance``: train-time class balancing by flips.

numpy and OpenCV only, so an edge install can split and evaluate.
"""
