"""DensePose you already have, as IUV images, turned into label maps (``densepose --from-iuv``; numpy,
and OpenCV for a 16-bit colour file).

An IUV image holds, per pixel, the fine part index ``I`` (0 background, 1..24 the parts), and the
part's chart coordinates ``U·255`` and ``V·255``; the background is black (0, 0, 0). Two channel
orders are in use, told apart by the channel that never exceeds 24:

* ``I`` in **blue**, as read in RGB: the original DensePose (Detectron/Caffe2) ``infer_simple.py``
  stacks ``(I, U, V)`` and saves it with ``cv2.imwrite``, which writes BGR; the TikTok dataset's
  ``densepose/`` frames have this layout too;
* ``I`` in **red**: scripts that save detectron2's ``(labels, uv·255)`` with Pillow (RGB order).

``read_iuv`` reads an IUV image file with the values it stores (16 bits, transparency, grey),
where ``media.read_image`` shows a photo, and ``iuv_frames`` a clip of them (a 16-bit video too). The label map is the ``I`` channel itself, so
``render_labels(labels_from_iuv(iuv))`` is exactly the render MagicAnimate wants. Only lossless IUV converts: a yuv video's colour conversion (h264 in an
mp4, even at ``-crf 0``) or a JPEG moves the small ``I`` values of most pixels onto other parts,
so ``check_iuv_video`` refuses a video that is not stored in RGB, and ``labels_from_iuv`` refuses
a frame whose background is not black or that has no channel within 0..24.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from ..errors import UserError, shown
from .palette import N_LABELS, judged_frames, labels_from_render

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


def read_iuv(path: Path) -> np.ndarray:
    """An IUV image file as uint8 RGB ``H×W×3`` holding the values it stores, for ``labels_from_iuv``.
    ``media.read_image`` reads a photo as viewers show it, which loses the part indices of IUV
    images saved in other ways than 8-bit RGB:

    * **16 bits** per channel (OpenCV's ``imwrite`` of a ``uint16`` array; a grey ``I;16`` PNG from
      numpy through Pillow): the values as stored when none exceeds 255, else the 8-bit values
      scaled to 16 bits (all multiples of 257, or of 256) scaled back; anything else is refused
      (``UserError``), as its part indices are unclear. Pillow reads a colour one's high bytes
      (all 0 for values 0..255) and ``read_image`` scales a grey one down (0..24 to 0), so they
      read as black. A 16-bit colour file is read through OpenCV, which reads its values as they are.
    * **transparency**: a transparent pixel is background, black (``read_image`` puts it on white),
      an opaque one keeps its values; a partly transparent one (a blended or resized copy) is refused.
    * **grey**: the part indices alone (``I``, as a label map), in every channel.
    * no colour profile is applied (the values are numbers, not colours); an EXIF turn is (but
      OpenCV reads a 16-bit colour file as stored).

    A JPEG is refused: its lossy compression moves the part indices onto other parts."""
    from .. import media

    path = Path(path)
    with media.open_image(path) as image:
        if image.format == "JPEG":
            raise UserError(f"{shown(path)}: a JPEG, whose lossy compression moves part indices onto other parts; give --from-iuv "
                            "the IUV images as PNGs, as DensePose writes them")  # fmt: skip
        if media.is_16bit_colour(path):
            values, alpha = _read_16bit_colour(path)
        else:
            values, alpha = _channels(media.upright(image))
            if values is None:  # neither colour nor grey (CMYK, float): as shown, for labels_from_iuv to say what it is
                return media.to_rgb(media.upright(image))
    if alpha is not None:
        full = np.iinfo(alpha.dtype).max
        partly = int(((alpha > 0) & (alpha < full)).sum())
        if partly:
            raise UserError(
                f"{shown(path)}: {partly} pixels are partly transparent, as in a blended or resized copy; in an IUV image a "
                "pixel is background (transparent) or a part (opaque): give the IUV images DensePose wrote"
            )
        values = np.where((alpha == 0)[..., None] if values.ndim == 3 else alpha == 0, 0, values)
    try:
        values = eight_bits(values)
    except ValueError as exc:
        raise UserError(f"{shown(path)}: a 16-bit image {exc}; save the IUV images as 8-bit PNGs (uint8)") from None
    return np.ascontiguousarray(np.repeat(values[..., None], 3, axis=2) if values.ndim == 2 else values)


def eight_bits(values: np.ndarray) -> np.ndarray:
    """The 8-bit values (uint8) of an IUV image's or frame's stored ones (16 or 32 bits): as they are
    when none exceeds 255, else the 8-bit values scaled to 16 bits (all multiples of 257, as
    ffmpeg and OpenCV scale them, or of 256: ``v << 8``) scaled back. Raises ``ValueError`` saying
    what was found (``whose values ... are unclear``) for anything else."""
    top, low = int(values.max(initial=0)), int(values.min(initial=0))
    if top > 255 or low < 0:
        for scale in (257, 256):  # 8-bit values scaled to 16 bits: v·257 fills 0..65535, v·256 (v << 8) shifts
            if low >= 0 and top <= 255 * scale and not (values % scale).any():
                values = values // scale
                break
        else:
            raise ValueError(f"whose values (up to {top}) are neither 0..255 nor 8-bit values scaled to 16 bits (×257), so its part "
                             "indices are unclear")  # fmt: skip
    return values.astype(np.uint8)


def _channels(image) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The values (``H×W×3`` colour or ``H×W`` grey, as stored: 8, 16 or 32 bits) and the alpha
    (``H×W``, or None) of a PIL image; (None, None) when it is neither colour nor grey."""
    from .. import media

    if media.has_transparency(image):
        image = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")  # a palette's, a colour key's
    elif image.mode in ("P", "1"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode in ("RGB", "L", "I", "I;16", "I;16B", "I;16L"):
        return array, None
    if image.mode in ("RGBA", "LA"):
        return array[..., :-1].squeeze(-1) if image.mode == "LA" else array[..., :3], array[..., -1]
    return None, None


def _read_16bit_colour(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The RGB values (``H×W×3`` uint16) and alpha (or None) of a 16-bit colour image, through
    OpenCV (Pillow keeps only each value's high byte)."""
    try:
        import cv2
    except ImportError:
        raise UserError(
            f"{shown(path)}: a 16-bit colour image, whose values Pillow reads only as 8 bits; reading its part indices needs "
            "OpenCV (pip install opencv-python-headless), or save the IUV images as 8-bit PNGs"
        ) from None
    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # (imread fails on some non-ASCII paths)
    if array is None or array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise UserError(f"{shown(path)}: OpenCV cannot read this 16-bit colour image; save the IUV images as 8-bit PNGs")
    return array[..., 2::-1], (array[..., 3] if array.shape[-1] == 4 else None)  # BGR(A) -> RGB


#: ffmpeg pixel formats that store RGB as it is (no yuv conversion of the colours).
_RGB_FORMATS = re.compile(r"^(gbr|rgb|bgr|argb|abgr|0rgb|0bgr|x2rgb|x2bgr)")
#: Those of them that store 8 bits per channel, and 16 bits: the depths whose values ``eight_bits`` reads.
_RGB_8BIT = re.compile(r"^(rgb24|bgr24|argb|rgba|abgr|bgra|gbrp|gbrap|0rgb|rgb0|0bgr|bgr0)$")
_RGB_16BIT = re.compile(r"^(rgb48|bgr48|rgba64|bgra64|gbrp16|gbrap16)(le|be)$")


def check_iuv_video(path: Path) -> None:
    """Refuse an IUV video that is not stored in RGB of 8 or 16 bits per channel (``UserError``): a
    yuv conversion shifts the small ``I`` values. Measured on a TikTok-dataset IUV frame (256²,
    12,025 person pixels) through h264: yuv420p puts 85 % of the person's pixels on another part at
    ``-crf 23``, 81 % at ``-crf 0``; even lossless yuv444p 50 % (off by one: a right hand becomes a
    left one); RGB (``libx264rgb -qp 0``, ``ffv1``) 0 %. Another depth (``gbrp10le``, ``rgb565le``,
    float) holds either the values or the 8-bit ones rescaled, which cannot be told apart."""
    from .. import media

    media.check_name_encoding(path)
    stored = media.pixel_format(path)
    if not _RGB_FORMATS.match(stored):
        raise UserError(
            f"{shown(path)}: an IUV video stored as {stored or 'an unknown pixel format'} has lost its part indices (a yuv "
            "conversion moves most pixels to another part, even lossless yuv444p by one); give --from-iuv the IUV frames "
            "as PNGs, or a video made from them in RGB (ffmpeg -c:v ffv1 -pix_fmt bgr0, or -c:v libx264rgb -qp 0)"
        )
    if not (_RGB_8BIT.match(stored) or _RGB_16BIT.match(stored)):
        raise UserError(
            f"{shown(path)}: an IUV video stored as {stored}, neither 8 nor 16 bits per channel, whose part indices are "
            "unclear (its values as they are, or rescaled); make it with ffmpeg -c:v ffv1 -pix_fmt bgr0 (8 bits) or "
            "-pix_fmt rgb48le (16 bits), or give --from-iuv the IUV frames as PNGs"
        )


def iuv_frames(source: Path, files: list[Path] | None = None) -> Iterator[np.ndarray]:
    """The frames of IUV images (a folder of them, one image, or a video ``check_iuv_video`` passed)
    as uint8 RGB holding the values stored: image files as ``read_iuv`` reads them, and a 16-bit
    video's frames likewise (their 16-bit values through ``eight_bits``; read as 8 bits, ffmpeg
    scales them down: values 0..255 came out nearly black, and were refused as not IUV).
    A 16-bit frame of other values is refused (``UserError``, naming the video and the frame).
    ``files``: a folder's frames as a run planned them (``media.iter_frames``)."""
    from .. import media

    source = Path(source)
    if source.is_dir() or not media.is_video(source) or not _RGB_16BIT.match(media.pixel_format(source)):
        yield from media.iter_frames(source, read=read_iuv, files=files)
        return
    with closing(media.iter_frames(source, bits=16)) as frames:  # ffmpeg stops when the reader stops early
        for index, values in enumerate(frames):
            try:
                yield eight_bits(values)
            except ValueError as exc:
                raise UserError(f"{shown(source)} (frame {index}): a 16-bit frame {exc}; make the video from 8-bit values "
                                "(ffmpeg -c:v ffv1 -pix_fmt bgr0), or give --from-iuv the IUV frames as PNGs") from None  # fmt: skip


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


def stored_like_iuv(source: Path, count: int = 8) -> str | None:
    """``looks_like_iuv`` of up to ``count`` frames spread over ``source`` (a folder of images, one
    image, a video) read with the values they store (``read_iuv``, ``iuv_frames``), where read as
    shown they do not look it: 16-bit values 0..255 show nearly black, a transparent background
    white. None when they do not look like IUV, or cannot be read as IUV images (a JPEG, a blended
    copy): only a hint, which the frames as shown gave already where they could."""
    from .. import media

    source = Path(source)
    try:
        if source.is_dir():
            files = media.list_frame_files(source)
            frames = [read_iuv(files[index]) for index in judged_frames(len(files), count)]
        elif media.is_video(source):
            if not _RGB_16BIT.match(media.pixel_format(source)):
                return None  # an 8-bit video stores what it shows
            picked, frames = set(judged_frames(media.probe(source).frames, count)), []
            with closing(iuv_frames(source)) as read:
                for index, frame in enumerate(read):
                    if index in picked:
                        frames.append(frame)
                    if len(frames) == len(picked):
                        break
        else:
            frames = [read_iuv(source)]
    except (UserError, ValueError, OSError):
        return None
    return looks_like_iuv(np.concatenate([frame.reshape(-1, 3) for frame in frames])) if frames else None
