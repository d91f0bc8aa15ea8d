"""Fréchet distances (``frechet.py``): the maths, and features that do not depend on the batch size."""

from __future__ import annotations

import numpy as np
import pytest

from magicanimate_cli.errors import UserError
from magicanimate_cli.evaluate import extractors as X
from magicanimate_cli.evaluate.frechet import Batcher, fid_from_features, frechet_distance, statistics

from factories import tiny_frame_net


def test_frechet_distance_matches_direct_scipy_computation(rng):
    from scipy import linalg

    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 0.3
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    # the symmetric form Tr((S1^1/2 S2 S1^1/2)^1/2) equals Tr((S1 S2)^1/2)
    root1 = linalg.sqrtm(s1).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(root1 @ s2 @ root1).real))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-8)
    assert fid_from_features(a, b) == pytest.approx(direct, rel=1e-8)
    # closed form for diagonal covariances: |mu1-mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(1 + 4 + 1 + 1, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(UserError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_a_square_root_with_an_imaginary_diagonal_is_said_not_dropped_silently(rng):
    # the imaginary part was dropped without a word; pytorch-fid refuses more than 1e-3 on the diagonal
    from magicanimate_cli.evaluate.frechet import IMAGINARY_ATOL, frechet

    found = frechet(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-4.0, 1.0]))  # crafted: sqrtm(diag(-4, 1)) = diag(2i, 1)
    assert found.imaginary == pytest.approx(2.0) and not found.offset
    assert found.distance == pytest.approx(2 - 3 - 2 * 1)  # the real part, as torch-fidelity and cd-fvd take it
    assert frechet(np.zeros(2), np.eye(2), np.zeros(2), np.diag([4.0, 1.0])).imaginary == 0.0

    few = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 0.5  # 10 samples of 64-d features: rank-deficient covariances
    notes: list[str] = []
    small = fid_from_features(*few, notes, "fvd")
    assert notes == []  # at this scale the imaginary part is round-off (about 1e-8)
    large = fid_from_features(few[0] * 100, few[1] * 100, notes, "fvd")  # the same at 100 times the scale: 1e4 times the distance
    assert large == pytest.approx(small * 1e4, rel=1e-6)
    assert len(notes) == 1 and notes[0].startswith("fvd: the matrix square root of the covariances' product has imaginary parts up to ")
    assert "beyond round-off (pytorch-fid refuses more than 0.001)" in notes[0] and notes[0].endswith("given as the real part; use more samples")
    assert frechet(*statistics(few[0] * 100), *statistics(few[1] * 100)).imaginary > IMAGINARY_ATOL


def test_a_singular_product_gets_eps_on_the_diagonals_and_is_said_without_a_scipy_warning(rng):
    # SciPy >= 1.16 finds it singular and warns (LinAlgWarning, shown as a traceback-like line) where it returned inf or nan before
    import warnings

    from magicanimate_cli.evaluate.frechet import EPS, frechet

    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    a[:, 3] = b[:, 3] = 0.0  # a feature that never fires (a dead ReLU): a zero row and column in both covariances
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fid_from_features(a, b, notes)
    assert notes == [f"fid: the covariances' product is singular; {EPS:g} was added to their diagonals, as pytorch-fid does"]
    kept = [i for i in range(8) if i != 3]
    assert value == pytest.approx(fid_from_features(a[:, kept], b[:, kept]), abs=1e-4)  # the dead feature adds (almost) nothing
    assert frechet(*statistics(a), *statistics(b)).offset


def test_features_do_not_depend_on_batch_size(rng):
    extractor = X.FrameExtractor(tiny_frame_net(), "tiny", size=16)
    frames = rng.integers(0, 256, (11, 20, 28, 3), dtype=np.uint8)
    prepared = [extractor.prepare(f) for f in frames]
    results = []
    for batch_size in (1, 3, 11, 32):
        batcher = Batcher(extractor, batch_size)
        for p in prepared:
            batcher.add(p)
        results.append(batcher.result())
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-6)
    assert results[0].shape == (11, 5)
    # and so the Fréchet distance
    half = len(frames) // 2
    fids = [fid_from_features(r[:half], r[half:]) for r in results]
    assert max(fids) - min(fids) < 1e-6 * max(1.0, abs(fids[0]))


def test_group_averaging_is_per_clip():
    batcher = Batcher(lambda batch: batch.reshape(len(batch), -1)[:, :2], batch_size=2)
    for value, group in ((1.0, "a"), (3.0, "a"), (10.0, "b"), (5.0, "a"), (20.0, "b")):
        batcher.add(np.full((2,), value), group=group)
    np.testing.assert_allclose(batcher.result(average_groups=True), [[3.0, 3.0], [15.0, 15.0]])
    assert batcher.result().shape == (5, 2)


def test_clean_resize_is_float_bicubic_per_channel(rng):
    from PIL import Image

    frame = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out = X.clean_resize(frame, 17)
    assert out.dtype == np.float32 and out.shape == (17, 17, 3)
    red = np.asarray(Image.fromarray(frame[:, :, 0].astype(np.float32), mode="F").resize((17, 17), Image.BICUBIC))
    np.testing.assert_array_equal(out[:, :, 0], red)
    assert not np.allclose(out, np.round(out))  # not quantized


