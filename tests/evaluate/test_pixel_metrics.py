"""Pixel metrics (``frames.py``) against scikit-image, under the corrected protocol and with DisCo's bugs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from magicanimate_cli.evaluate import frames as F

from evaluate_helpers import pair

skimage_metrics = pytest.importorskip("skimage.metrics")


def test_corrected_pixel_metrics_match_scikit_image_for_uint8_and_float(rng):
    generated, truth = pair(rng)
    g, t = generated.astype(np.float64) / 255, truth.astype(np.float64) / 255

    expected_l1 = np.abs(generated.astype(float) - truth.astype(float)).mean() / 255
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(truth, generated)  # uint8: data_range 255
    expected_ssim = skimage_metrics.structural_similarity(truth, generated, channel_axis=2)
    for a, b in ((generated, truth), (g, t), (g.astype(np.float32), t.astype(np.float32))):
        assert F.l1(a, b) == pytest.approx(expected_l1, rel=1e-6)
        assert F.psnr(a, b) == pytest.approx(expected_psnr, rel=1e-6)
        assert F.ssim_rgb(a, b) == pytest.approx(expected_ssim, rel=1e-6)
    # the float path equals scikit-image on float input with data_range 1
    assert F.psnr(g, t) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(t, g, data_range=1.0), rel=1e-12)
    assert F.ssim_rgb(g, t) == pytest.approx(skimage_metrics.structural_similarity(t, g, channel_axis=2, data_range=1.0), rel=1e-12)
    # luma SSIM: BT.601 weights, float, data_range 1
    luma = lambda x: x @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert F.ssim_gray(generated, truth) == pytest.approx(
        skimage_metrics.structural_similarity(luma(t), luma(g), data_range=1.0), rel=1e-9
    )
    assert F.ssim_gray(generated, truth) != pytest.approx(F.ssim_rgb(generated, truth), rel=1e-6)
    assert math.isinf(F.psnr(truth, truth))


def test_disco_ssim_and_l1_are_disco_definitions(rng):
    cv2 = pytest.importorskip("cv2")
    generated, truth = pair(rng)
    gray_g, gray_t = cv2.cvtColor(generated, cv2.COLOR_RGB2GRAY), cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)
    assert F.disco_ssim(generated, truth) == pytest.approx(skimage_metrics.structural_similarity(gray_g, gray_t), rel=1e-12)
    height, width = truth.shape[:2]
    assert F.disco_l1(generated, truth) == pytest.approx(F.l1(generated, truth) * 255 / (height * width), rel=1e-12)
    with pytest.raises(TypeError):
        F.disco_psnr(generated.astype(np.float32), truth)


def test_disco_psnr_wraps_around_in_uint8():
    truth = np.zeros((8, 8, 3), np.uint8)
    # difference 16: 16**2 = 256 wraps to 0 in uint8, so DisCo sees a perfect frame (100 dB)
    generated = np.full_like(truth, 16)
    assert F.disco_psnr(generated, truth) == 100.0
    assert F.psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 16))
    # difference 17: 289 wraps to 33, the MSE drops from 289 to 33
    generated = np.full_like(truth, 17)
    assert F.disco_psnr(generated, truth) == pytest.approx(20 * math.log10(255 / math.sqrt(33)))
    assert F.psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 17))
    # truth above generated: 0 - 250 wraps to 6 before squaring; small differences (< 16) are exact
    generated, truth = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 250, np.uint8)
    assert F.disco_psnr(generated, truth) == pytest.approx(20 * math.log10(255 / 6))
    generated, truth = np.full((4, 4, 3), 3, np.uint8), np.full((4, 4, 3), 10, np.uint8)
    assert F.disco_psnr(generated, truth) == pytest.approx(F.psnr(generated, truth))


def test_disco_l1_divides_by_height_times_width():
    truth = np.zeros((2, 5, 3), np.uint8)
    generated = np.full_like(truth, 10)
    assert F.disco_l1(generated, truth) == pytest.approx(10 / (2 * 5))
    assert F.l1(generated, truth) == pytest.approx(10 / 255)


