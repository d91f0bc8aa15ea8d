"""Fréchet distance between two feature sets, and the batching that feeds it.

``frechet_distance`` is the formula every FID/FVD implementation uses (pytorch-fid, clean-fid,
DisCo): ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm``, an
``eps`` on the diagonals when the product is singular, and the imaginary round-off dropped.
Features are kept in float64 and the statistics are ``np.mean``/``np.cov`` over all of them, so
the result does not depend on how the frames were batched through the network.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("feature dimensions differ")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(generated: np.ndarray, truth: np.ndarray) -> float:
    for label, feats in (("generated", generated), ("ground truth", truth)):
        if len(feats) < 2:
            raise UserError(f"{label}: {len(feats)} sample(s) for a Fréchet distance; it needs at least 2 (more frames or clips)")
    return frechet_distance(*statistics(generated), *statistics(truth))


class Batcher:
    """Collect prepared samples and run ``extractor`` on full batches; keep the features.

    ``group`` tags each sample (e.g. the clip it came from) so that features can later be
    averaged per group, as DisCo does per video.
    """

    def __init__(self, extractor, batch_size: int) -> None:
        self.extractor = extractor
        self.batch_size = max(1, int(batch_size))
        self._pending: list[np.ndarray] = []
        self._pending_groups: list = []
        self.features: list[np.ndarray] = []
        self.groups: list = []

    def add(self, sample: np.ndarray, group=None) -> None:
        self._pending.append(sample)
        self._pending_groups.append(group)
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        out = np.asarray(self.extractor(np.stack(self._pending)), dtype=np.float64)
        self.features.extend(out.reshape(len(self._pending), -1))
        self.groups.extend(self._pending_groups)
        self._pending, self._pending_groups = [], []

    def result(self, average_groups: bool = False) -> np.ndarray:
        self.flush()
        if not self.features:
            return np.zeros((0, 0))
        feats = np.stack(self.features)
        if not average_groups:
            return feats
        order = list(dict.fromkeys(self.groups))
        index = np.asarray([order.index(g) for g in self.groups])
        return np.stack([feats[index == i].mean(axis=0) for i in range(len(order))])
