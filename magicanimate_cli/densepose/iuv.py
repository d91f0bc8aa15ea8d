"""DensePose you already have, as IUV images, turned into label maps (``densepose --from-iuv``; numpy only).

An IUV image holds, per pixel, the fine part index ``I`` (0 background, 1..24 the parts), and the
part's chart coordinates ``U·255`` and ``V·255``; the background is black (0, 0, 0). Two channel
orders are in use, told apart by the channel that never exceeds 24:

* ``I`` in **blue**, as read in RGB: the original DensePose (Detectron/Caffe2) ``infer_simple.py``
  stacks ``(I, U, V)`` and saves it with ``cv2.imwrite``, which writes BGR; the TikTok dataset's
  ``densepose/`` frames have this layout too;
* ``I`` in **red**: scripts that save detectron2's ``(labels, uv·255)`` with Pillow (RGB order).

The label map is the ``I`` channel itself, so ``render_labels(labels_from_iuv(iuv))`` is exactly the
render MagicAnimate wants. Only lossless IUV converts: a yuv video's colour conversion (h264 in an
mp4, even at ``-crf 0``) or a JPEG moves the small ``I`` values of most pixels onto other parts,
so ``check_iuv_video`` refuses a video that is not stored in RGB, and ``labels_from_iuv`` refuses
a frame whose background is not black or that has no channel within 0..24.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import UserError, shown
from .palette import N_LABELS, labels_from_render

I_MAX = N_LABELS - 1  # 24
CHANNELS = {"blue": 2, "red": 0}
"""Where ``I`` may be, by preference: blue (Caffe2 DensePose, the TikTok dataset) before red (RGB savers)."""


def iuv_channel(iuv: np.ndarray) -> int | None:
    """The channel of ``iuv`` (uint8 RGB ``H×W×3``) that holds ``I``: blue if none of its values
    exceeds 24, else red if none of its values does; None when neither does (not an IUV image).
    A frame where both qualify (a label map read as grey, a person too small for ``U·255`` or
    ``V·255`` to pass 24) is read from blue."""
    for channel in CHANNELS.values():
        if int(iuv[..., channel].max(initial=0)) <= I_MAX:
            return channel
    return None


def clip_channel(frames) -> int | None:
    """The channel that holds ``I`` in a clip of IUV images (uint8 RGB ``H×W×3`` each), as the first
    frame in which only one channel can tells it. ``iuv_channel`` reads a frame where both can from
    blue, which in a clip saved in RGB order is ``V·255``: a hand entering the picture, whose ``V``
    stays under 0.1, became other parts. None when no frame tells (each is then read from its own
    ``iuv_channel``)."""
    for frame in frames:
        fits = [channel for channel in CHANNELS.values() if int(frame[..., channel].max(initial=0)) <= I_MAX]
        if len(fits) == 1:
            return fits[0]
    return None


def labels_from_iuv(iuv: np.ndarray, channel: int | None = None) -> np.ndarray:
    """The label map (``H×W`` uint8, 0..24) of a DensePose IUV image (uint8 RGB ``H×W×3``): its ``I``
    channel, ``channel`` where given (a clip's, ``clip_channel``), else ``iuv_channel``. Raises
    ``ValueError`` saying why, and the fix, for what is not a lossless IUV image: a DensePose render
    in MagicAnimate's colours, a photo, a lossy copy, an IUV image with ``I`` in the other channel
    than ``channel``. A black frame (nobody) gives an all-background map."""
    iuv = np.asarray(iuv)
    if iuv.dtype != np.uint8 or iuv.ndim != 3 or iuv.shape[-1] != 3:
        raise ValueError("IUV images must be uint8 RGB arrays of shape H×W×3")
    if channel is not None and int(iuv[..., channel].max(initial=0)) > I_MAX:
        other, names = iuv_channel(iuv), {value: name for name, value in CHANNELS.items()}
        if other is not None:
            raise ValueError(
                f"its part indices are in the {names[other]} channel, but in the {names[channel]} one in the clip's "
                "frames before it: IUV images saved two ways (a BGR and an RGB writer) are mixed; convert each kind on its own"
            )
        channel = None  # not IUV at all: said below
    channel = channel if channel is not None else iuv_channel(iuv)
    if channel is None:
        try:
            labels_from_render(iuv)
        except ValueError:
            pass
        else:
            raise ValueError("already DensePose in MagicAnimate's colours, not IUV: use it as the motion as it is, without converting")
        raise ValueError(
            f"not a DensePose IUV image: neither its blue nor its red channel holds part indices 0..{I_MAX} (blue reaches "
            f"{int(iuv[..., 2].max())}, red {int(iuv[..., 0].max())}); --from-iuv takes the IUV images DensePose writes "
            "(I, U·255, V·255 on black), so for a video or photos of a person leave --from-iuv out"
        )
    labels = np.ascontiguousarray(iuv[..., channel])
    stray = int(((labels == 0) & iuv.any(axis=-1)).sum())
    if stray:
        raise ValueError(
            f"not a lossless DensePose IUV image: {stray} pixels of part 0 (the background) are not black, as in a JPEG or "
            "resized copy, whose blurred part indices would put pixels on the wrong parts; give the PNGs DensePose wrote"
        )
    return labels


#: ffmpeg pixel formats that store RGB as it is (no yuv conversion of the colours).
_RGB_FORMATS = re.compile(r"^(gbr|rgb|bgr|argb|abgr|0rgb|0bgr)")


def check_iuv_video(path: Path) -> None:
    """Refuse an IUV video that is not stored in RGB (``UserError``): a yuv conversion shifts the
    small ``I`` values. Measured on a TikTok-dataset IUV frame (256², 12,025 person pixels) through
    h264: yuv420p puts 85 % of the person's pixels on another part at ``-crf 23``, 81 % at
    ``-crf 0``; even lossless yuv444p 50 % (off by one: a right hand becomes a left one); RGB
    (``libx264rgb -qp 0``, ``ffv1``) 0 %."""
    from .. import media

    media.check_name_encoding(path)
    stored = media.pixel_format(path)
    if not _RGB_FORMATS.match(stored):
        raise UserError(
            f"{shown(path)}: an IUV video stored as {stored or 'an unknown pixel format'} has lost its part indices (a yuv "
            "conversion moves most pixels to another part, even lossless yuv444p by one); give --from-iuv the IUV frames "
            "as PNGs, or a video made from them in RGB (ffmpeg -c:v ffv1 -pix_fmt bgr0, or -c:v libx264rgb -qp 0)"
        )


#: How a motion that is IUV shows after ``animate`` fitted it (bicubic) or an mp4 blurred it: a
#: black background, and one channel (blue or red) within ``LOOKS_IUV_MAX`` on at least
#: ``LOOKS_IUV_SHARE`` of the other pixels. Measured fitted to 64²-512²: a TikTok-dataset IUV frame
#: 0.99-1.0 (PNG) and 0.96-1.0 (h264 yuv420p), photographs and the IUV-coloured parity fixture
#: (not IUV: all three channels span 0..245) at most 0.14.
LOOKS_IUV_MAX = I_MAX + 8
LOOKS_IUV_SHARE = 0.9


def looks_like_iuv(frames) -> str | None:
    """The colour (``"blue"`` or ``"red"``) of the channel that holds part indices when ``frames``
    (uint8 RGB ``...×H×W×3``, a black background) look like DensePose IUV images, else None."""
    frames = np.asarray(frames)
    drawn = frames.any(axis=-1)
    count = int(drawn.sum())
    if not count:
        return None
    for name, channel in CHANNELS.items():
        if int((frames[..., channel][drawn] <= LOOKS_IUV_MAX).sum()) >= LOOKS_IUV_SHARE * count:
            return name
    return None
