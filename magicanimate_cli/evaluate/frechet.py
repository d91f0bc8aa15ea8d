"""Fréchet distance between two feature sets, and the batching that feeds it.

``frechet_distance`` is the formula every FID/FVD implementation uses (pytorch-fid, clean-fid,
DisCo): ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm``, an
``eps`` on the diagonals when the product is singular, and the imaginary round-off dropped.
Features are kept in float64 and the statistics are ``np.mean``/``np.cov`` over all of them, so
the result does not depend on how the frames were batched through the network.

The libraries that make the features take the real part without a look: torch-fidelity 0.4
(``fid_statistics_to_metric``: the square roots of the product's eigenvalues) and cd-fvd 0.1
(``compute_fvd_from_stats``: ``np.real`` of ``sqrtm``). pytorch-fid refuses a square root whose
diagonal has an imaginary part beyond ``IMAGINARY_ATOL``: the covariances were too ill-conditioned
(few samples for many dimensions, features of a large scale) for the number to mean much. Here
that is said (``fid_from_features``'s ``notes``: the result's ``notes``, in ``--json`` too) and
the real part kept, as everyone computes it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

EPS = 1e-6
"""What is added to the covariances' diagonals when their product is singular (pytorch-fid's)."""
IMAGINARY_ATOL = 1e-3
"""The largest imaginary part on the diagonal of ``sqrtm(S1 S2)`` taken for round-off (pytorch-fid's ``atol``)."""


@dataclass(frozen=True)
class Frechet:
    """A Fréchet distance, and how it was reached."""

    distance: float
    imaginary: float = 0.0  # the largest |imaginary part| on the diagonal of sqrtm(S1 S2), dropped
    offset: bool = False  # eps·I was added to both covariances: their product is singular


def frechet(mu1, sigma1, mu2, sigma2, eps: float = EPS) -> Frechet:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), with the imaginary part its
    matrix square root had on its diagonal and whether the covariances needed ``eps·I``: when
    SciPy finds their product singular (it warns since 1.16, and returned inf or nan before)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("feature dimensions differ")
    diff = mu1 - mu2
    covmean, singular = _sqrtm(linalg, sigma1.dot(sigma2))
    offset = singular or not np.isfinite(covmean).all()
    if offset:
        shift = np.eye(sigma1.shape[0]) * eps
        covmean, _ = _sqrtm(linalg, (sigma1 + shift).dot(sigma2 + shift))
    imaginary = float(np.abs(np.diagonal(covmean).imag).max(initial=0.0)) if np.iscomplexobj(covmean) else 0.0
    distance = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))
    return Frechet(distance, imaginary, offset)


def _sqrtm(linalg, matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """``linalg.sqrtm(matrix)``, and whether SciPy found ``matrix`` singular (its ``LinAlgWarning``,
    which is answered, not shown); its other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(matrix)
    singular = False
    for said in caught:
        if issubclass(said.category, linalg.LinAlgWarning) and "singular" in str(said.message).lower():
            singular = True
        else:
            warnings.warn_explicit(said.message, said.category, said.filename, said.lineno, source=said.source)
    return root, singular


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = EPS) -> float:
    """``frechet(...).distance``."""
    return frechet(mu1, sigma1, mu2, sigma2, eps).distance


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(generated: np.ndarray, truth: np.ndarray, notes: list[str] | None = None, metric: str = "fid") -> float:
    """The Fréchet distance of two feature sets (``N×D`` each); what makes it doubtful is appended
    to ``notes`` (the result's), named ``metric``: a matrix square root with an imaginary part
    beyond ``IMAGINARY_ATOL`` on its diagonal, covariances offset by ``eps·I``."""
    for label, feats in (("generated", generated), ("ground truth", truth)):
        if len(feats) < 2:
            raise UserError(f"{label}: {len(feats)} sample(s) for a Fréchet distance; it needs at least 2 (more frames or clips)")
    found = frechet(*statistics(generated), *statistics(truth))
    if notes is not None and found.imaginary > IMAGINARY_ATOL:
        notes.append(
            f"{metric}: the matrix square root of the covariances' product has imaginary parts up to {found.imaginary:.3g} on its "
            f"diagonal, beyond round-off (pytorch-fid refuses more than {IMAGINARY_ATOL:g}): the covariances are too ill-conditioned "
            "for a reliable distance, given as the real part; use more samples"
        )
    if notes is not None and found.offset:
        notes.append(f"{metric}: the covariances' product is singular; {EPS:g} was added to their diagonals, as pytorch-fid does")
    return found.distance


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
