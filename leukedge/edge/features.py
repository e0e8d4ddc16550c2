"""Feature-space out-of-distribution score: how far a field's pooled features lie from the
training fields' (the manifest's ``trust.features``).

Confidence alone does not catch another lab's images: the classifier can be sure of a
field unlike anything it was trained on. The score is the Mahalanobis distance to the
nearest class mean under one covariance shared by the classes (Lee et al., 2018), from the
model's pooled features (``leukedge.export.features``) scaled to unit length first
(Mueller and Hein, "Mahalanobis++", 2025): the features' length varies with contrast and
cell size far more than between classes, and left in it swamps the covariance (on the
shipped models: 0-73% of another lab's lymphocytes flagged raw against 78-81% scaled, at
the same validation flag rate). The covariance of D = 1280 features is kept compact as a
probabilistic PCA: its ``k`` leading axes with their variances, and one variance for the
rest of the space, so the score still sees a feature vector that leaves the training
fields' subspace. Means and statistics come from the training fields through the bundle's
preprocessing; the threshold is a high percentile of held-out fields' distances
(``leukedge.export.trust``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from .bundle import BundleError


def encode_array(a: np.ndarray) -> dict:
    """A float32 array as JSON: {"shape", "dtype", "base64"} (little-endian bytes)."""
    a = np.ascontiguousarray(a, "<f4")
    return {"shape": list(a.shape), "dtype": "float32", "base64": base64.b64encode(a).decode()}


def decode_array(d: dict) -> np.ndarray:
    """The inverse of ``encode_array``; ``ValueError`` if the bytes do not fit the shape."""
    a = np.frombuffer(base64.b64decode(d["base64"], validate=True), "<f4")
    return a.reshape(d["shape"]).astype(np.float32)


@dataclass(frozen=True)
class FeatureStats:
    """Class means and a shared covariance of pooled features, and the flagging threshold.

    Statistics are of unit-length features (``unit_length``).
    means : float32 (C, D); axes : float32 (D, k) orthonormal principal axes of the
    within-class covariance; variances : float32 (k,) along them; residual : the variance
    per dimension off those axes; threshold : distances above it are out of distribution.
    """

    means: np.ndarray
    axes: np.ndarray
    variances: np.ndarray
    residual: float
    threshold: float = float("inf")
    percentile: float | None = None
    n: int = 0

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """float32 (N, D) features -> float32 (N,) Mahalanobis distance to the nearest mean."""
        f = unit_length(np.asarray(features, np.float32))
        if f.shape[1] != self.dim:
            raise ValueError(f"features have {f.shape[1]} dimensions, the statistics {self.dim}")
        d = f[:, None, :] - self.means[None]  # (N, C, D)
        proj = d @ self.axes  # (N, C, k)
        along = np.square(proj)
        off = np.maximum(np.square(d).sum(-1) - along.sum(-1), 0.0)
        m = (along / self.variances).sum(-1) + off / self.residual
        return np.sqrt(m.min(axis=1)).astype(np.float32)

    def flag(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bool (N,) out of distribution, float32 (N,) distances) of float32 (N, D) features."""
        dist = self.distances(features)
        return dist > self.threshold, dist

    def with_threshold(self, distances: np.ndarray, percentile: float) -> FeatureStats:
        """These statistics with the threshold at ``percentile`` of held-out distances."""
        t = float(np.percentile(np.asarray(distances, np.float64), percentile))
        return FeatureStats(self.means, self.axes, self.variances, self.residual, t,
                            percentile, self.n)  # fmt: skip

    def to_dict(self) -> dict:
        """The manifest's ``trust.features`` entry."""
        return {
            "statistic": "Mahalanobis distance of the unit-length pooled features to the "
            "nearest class mean, shared covariance as a probabilistic PCA",
            "output": "features",
            "dim": self.dim,
            "n": self.n,
            "means": encode_array(self.means),
            "axes": encode_array(self.axes),
            "variances": self.variances.astype(float).tolist(),
            "residual_variance": self.residual,
            "threshold": self.threshold,
            "threshold_percentile": self.percentile,
        }

    @classmethod
    def from_manifest(cls, d: dict, where: str) -> FeatureStats:
        """Parse ``trust.features``; ``BundleError`` naming ``where`` (the manifest path)."""
        try:
            stats = cls(
                decode_array(d["means"]),
                decode_array(d["axes"]),
                np.asarray(d["variances"], np.float32),
                float(d["residual_variance"]),
                float(d["threshold"]),
                d.get("threshold_percentile"),
                int(d.get("n", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{where}: unreadable trust.features ({exc!r}); re-run leukedge bundle add-trust"
            ) from exc
        k = stats.variances.shape
        if (
            stats.axes.shape != (stats.dim, *k)
            or not (stats.variances > 0).all()
            or not (stats.residual > 0)
        ):
            raise BundleError(
                f"{where}: trust.features has inconsistent shapes or non-positive variances; "
                "re-run leukedge bundle add-trust"
            )
        return stats


def unit_length(features: np.ndarray) -> np.ndarray:
    """float (N, ...) features -> float (N, D), each row scaled to unit Euclidean length."""
    f = np.asarray(features).reshape(len(features), -1)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def fit_feature_stats(
    features: np.ndarray, labels: np.ndarray, n_classes: int, k: int = 32
) -> FeatureStats:
    """Class means and the shared covariance (``k`` axes + residual) of training features,
    scaled to unit length.

    features : float (N, D) as the model gives them;
    labels : int (N,) class indices in [0, n_classes).
    The threshold is left at infinity: set it with ``with_threshold`` on validation fields.
    """
    f = unit_length(np.asarray(features, np.float64))
    y = np.asarray(labels)
    missing = sorted(set(range(n_classes)) - set(y.tolist()))
    if missing:
        raise ValueError(f"no training features for class index(es) {missing}")
    means = np.stack([f[y == c].mean(axis=0) for c in range(n_classes)])
    centred = f - means[y]
    n, dim = centred.shape
    k = min(k, dim - 1, n - n_classes - 1)
    # Economy SVD of the centred features: the covariance's eigenvectors and eigenvalues.
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    eig = np.square(s) / (n - n_classes)
    floor = max(eig[0] * 1e-6, 1e-12)  # keeps constant (e.g. dead ReLU) dimensions finite
    residual = max(float(eig[k:].sum() / (dim - k)), floor)
    return FeatureStats(
        means.astype(np.float32),
        vt[:k].T.astype(np.float32),
        np.maximum(eig[:k], floor).astype(np.float32),
        residual,
        n=n,
    )
