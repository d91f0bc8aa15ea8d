"""Per-frame metrics (L1, PSNR, SSIM) in the two protocols.

``corrected``: float computation; frames are uint8 RGB or float RGB in [0, 1] (both give the
same numbers). L1 is the mean absolute error in [0, 1]; PSNR is scikit-image's
``peak_signal_noise_ratio`` (float MSE); SSIM is scikit-image's ``structural_similarity`` on the
RGB channels (``ssim``) and on BT.601 luma computed in float (``ssim_gray``).

``disco``: DisCo's ``tool/metrics/ssim_l1_lpips_psnr.py`` bug for bug, on uint8 frames: L1 is
the mean absolute difference on 0-255 values divided by H*W; PSNR squares the uint8 difference
so it wraps modulo 256 (magic-animate#146, DisCo#86, Champ#8) and returns 100 for a zero MSE;
SSIM runs on OpenCV grayscale with scikit-image's defaults. Generated frames of another size are
resized to the ground truth's with OpenCV's default (bilinear) interpolation, as DisCo does.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UserError

LUMA_BT601 = (0.299, 0.587, 0.114)  # the weights of OpenCV's RGB2GRAY and Pillow's "L"


def as_unit_float(frame: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] frame -> float64 in [0, 1]."""
    if frame.dtype == np.uint8:
        return frame.astype(np.float64) / 255.0
    if np.issubdtype(frame.dtype, np.floating):
        return frame.astype(np.float64, copy=False)
    raise TypeError(f"frames must be uint8 or float in [0, 1], got {frame.dtype}")


# ----------------------------------------------------------------------------- corrected


def l1(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over all pixels and channels, in [0, 1]."""
    return float(np.mean(np.abs(as_unit_float(generated) - as_unit_float(truth))))


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB computed on float values (``inf`` for identical frames)."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(as_unit_float(truth), as_unit_float(generated), data_range=1.0))


def ssim_rgb(generated: np.ndarray, truth: np.ndarray) -> float:
    """SSIM over the three RGB channels (scikit-image defaults: 7x7 uniform window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(as_unit_float(truth), as_unit_float(generated), channel_axis=-1, data_range=1.0))


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma in float, [0, 1] (OpenCV's grayscale weights, without its rounding)."""
    return as_unit_float(frame) @ np.asarray(LUMA_BT601)


def ssim_gray(generated: np.ndarray, truth: np.ndarray) -> float:
    """SSIM on float BT.601 luma (scikit-image defaults)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(luma(truth), luma(generated), data_range=1.0))


def resize_corrected(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 RGB frame to ``(height, width)`` with Pillow's bicubic (antialiased)."""
    from PIL import Image

    height, width = size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))


# ----------------------------------------------------------------------------- disco


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise UserError(
            "--protocol disco: needs OpenCV for DisCo's resize and grayscale; pip install opencv-python-headless"
        ) from exc
    return cv2


def _uint8(frame: np.ndarray, what: str) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise TypeError(f"the disco protocol works on uint8 frames as DisCo read them; got {frame.dtype} for {what}")
    return frame


def disco_l1(generated: np.ndarray, truth: np.ndarray) -> float:
    """DisCo ``l1_eval`` averaged: mean |g - t| on 0-255 values, divided by H*W."""
    generated, truth = _uint8(generated, "generated"), _uint8(truth, "ground truth")
    error = np.absolute(generated.astype("float") - truth.astype("float"))
    error /= float(generated.shape[0] * generated.shape[1])
    return float(np.mean(error))


def disco_psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """DisCo ``psnr_eval``: the squared difference is taken in uint8 and wraps modulo 256."""
    generated, truth = _uint8(generated, "generated"), _uint8(truth, "ground truth")
    mse = np.mean((generated - truth) ** 2)  # uint8 arithmetic on purpose: this is the published bug
    if mse == 0:
        return 100.0
    return 20 * math.log10(255.0 / math.sqrt(mse))


def disco_ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """DisCo: scikit-image SSIM (defaults) on OpenCV grayscale of the uint8 frames."""
    from skimage.metrics import structural_similarity

    cv2 = _cv2()
    generated, truth = _uint8(generated, "generated"), _uint8(truth, "ground truth")
    gray_g = cv2.cvtColor(np.ascontiguousarray(generated), cv2.COLOR_RGB2GRAY)
    gray_t = cv2.cvtColor(np.ascontiguousarray(truth), cv2.COLOR_RGB2GRAY)
    score, _ = structural_similarity(gray_g, gray_t, full=True)
    return float(score)


def resize_disco(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """DisCo: ``cv2.resize(generated, (W, H))`` with the default bilinear interpolation."""
    cv2 = _cv2()
    height, width = size
    return cv2.resize(np.ascontiguousarray(frame), (width, height))


# ----------------------------------------------------------------------------- registry

# metric name -> (column, function), per protocol. Each reports under its column name.
FRAME_METRICS = {
    "corrected": {
        "l1": [("l1", l1)],
        "psnr": [("psnr", psnr)],
        "ssim": [("ssim", ssim_rgb), ("ssim_gray", ssim_gray)],
    },
    "disco": {
        "l1": [("l1", disco_l1)],
        "psnr": [("psnr", disco_psnr)],
        "ssim": [("ssim", disco_ssim)],
    },
}

DEFINITIONS = {
    ("corrected", "l1"): "mean |g-t| over RGB, float, in [0,1]",
    ("corrected", "psnr"): "skimage PSNR on float (data_range 1), mean over frames",
    ("corrected", "ssim"): "skimage SSIM on RGB (7x7 uniform window), mean over frames",
    ("corrected", "ssim_gray"): "skimage SSIM on float BT.601 luma (7x7 uniform window)",
    ("disco", "l1"): "DisCo: mean |g-t| on 0-255 divided by H*W",
    ("disco", "psnr"): "DisCo: uint8 squared difference (wraps mod 256), 100 when MSE is 0",
    ("disco", "ssim"): "DisCo: skimage SSIM on OpenCV grayscale (uint8)",
}
