"""Fréchet distances (``frechet.py``): the maths, and features that do not depend on the batch size."""

from __future__ import annotations

import numpy as np
import pytest

from magicanimate_cli.errors import UserError
from magicanimate_cli.evaluate import extractors as X
from magicanimate_cli.evaluate.frechet import Batcher, fid_from_features, frechet_distance

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


