"""DensePose part labels and the colours MagicAnimate's driving videos use (numpy only), and whether a motion is drawn in them.

MagicAnimate was trained on DensePose fine-segmentation renders in the vid2densepose style
(../shared/reference/official-inference.md §10): every pixel of a person gets its part label ``l`` in
0..24, drawn with OpenCV's VIRIDIS colour map at ``floor(l * 255 / 24)``, alpha 1, over a canvas
filled with viridis(0). So a render is a pure function of the label map:
``render_labels(labels) == PALETTE[labels]``, and ``labels_from_render`` inverts it exactly for
lossless renders (PNG), or snaps to the nearest colour for compressed ones (mp4).

``PALETTE`` is OpenCV's VIRIDIS LUT (``cv2.applyColorMap(..., cv2.COLORMAP_VIRIDIS)``, BGR,
flipped to RGB) sampled at ``floor(l * 255 / 24)``; the values are written out here so the
renderer does not need OpenCV, and the tests recompute them with OpenCV and check them against
the table of §10.3.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputWarning, UserError
from .config import BACKGROUND  # the canvas colour, row 0 of PALETTE

N_LABELS = 25  # background + 24 fine parts (detectron2 DensePose N_PART_LABELS = 24)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


#: RGB colour of each label 0..24 (25×3 uint8); row 0 is the canvas, viridis(0) = (68, 1, 84).
PALETTE = _frozen(
    np.array(
        [
            (68, 1, 84), (71, 16, 99), (72, 31, 112), (71, 44, 122), (68, 57, 131),
            (64, 70, 136), (59, 81, 139), (54, 93, 141), (49, 104, 142), (44, 113, 142),
            (40, 124, 142), (37, 133, 142), (33, 144, 141), (31, 154, 138), (32, 163, 134),
            (39, 173, 129), (53, 183, 121), (70, 192, 111), (92, 200, 99), (115, 208, 86),
            (142, 214, 69), (170, 220, 50), (197, 224, 33), (226, 228, 24), (253, 231, 37),
        ],
        dtype=np.uint8,
    )
)  # fmt: skip

#: Fine label -> its mirror image's label (detectron2 ``DensePoseTransformData.POINT_LABEL_SYMMETRIES``):
#: 3<->4, 5<->6, ..., 23<->24; 0, 1, 2 map to themselves. Index it with a label map to swap sides.
POINT_LABEL_SYMMETRIES = _frozen(
    np.array([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23], dtype=np.uint8)
)

#: Coarse (14-part) label symmetries, detectron2 ``MASK_LABEL_SYMMETRIES``.
MASK_LABEL_SYMMETRIES = _frozen(np.array([0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14], dtype=np.uint8))

#: Part names of the fine labels (detectron2 ``densepose/data/samplers/densepose_base.py``).
PART_NAMES = (
    "background",
    "torso", "torso",
    "right hand", "left hand", "left foot", "right foot",
    "upper leg right", "upper leg left", "upper leg right", "upper leg left",
    "lower leg right", "lower leg left", "lower leg right", "lower leg left",
    "upper arm left", "upper arm right", "upper arm left", "upper arm right",
    "lower arm left", "lower arm right", "lower arm left", "lower arm right",
    "head", "head",
)  # fmt: skip

def colour_codes(rgb) -> np.ndarray:
    """Each colour of ``rgb`` (uint8 ``...×3``) as one 24-bit integer (int64 ``...``), so that colours can be counted and sorted."""
    rgb = np.asarray(rgb)
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def distinct_colour_distances(rgb, targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared Euclidean RGB distances from each distinct colour of ``rgb`` (uint8 ``...×3``) to
    each of ``targets`` (``K×3``), worked out once per colour, not once per pixel.

    Returns the distances (``C×K``), each pixel's index into the distinct colours (flat) and each
    distinct colour's pixel count.
    """
    unique, inverse, counts = np.unique(colour_codes(rgb).reshape(-1), return_inverse=True, return_counts=True)
    colours = np.stack([unique >> 16, (unique >> 8) & 255, unique & 255], axis=-1)
    targets = np.asarray(targets, np.int64)
    distances = (colours**2).sum(axis=1)[:, None] - 2 * colours @ targets.T + (targets**2).sum(axis=1)[None]
    return distances, inverse.reshape(-1), counts


# 24-bit RGB code of each palette colour, and the label of each code, for the exact inverse.
_CODES = colour_codes(PALETTE)
_CODE_ORDER = np.argsort(_CODES)
_SORTED_CODES = _CODES[_CODE_ORDER]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        raise ValueError(f"label maps must be uint8, got {labels.dtype}")
    if labels.size and int(labels.max()) >= N_LABELS:
        raise ValueError(f"label maps hold 0..{N_LABELS - 1}; found {int(labels.max())}")
    return labels


def render_labels(labels: np.ndarray) -> np.ndarray:
    """The vid2densepose/MagicAnimate render of a label map (``H×W`` or ``T×H×W`` uint8 0..24) as RGB."""
    return PALETTE[_check_labels(labels)]


def labels_from_render(rgb: np.ndarray, nearest: bool = False) -> np.ndarray:
    """The label map of a render (``...×3`` uint8 RGB): the exact inverse of ``render_labels``.

    A pixel whose colour is not in ``PALETTE`` raises ``ValueError`` unless ``nearest`` is set;
    then every pixel takes the label of the nearest palette colour (Euclidean RGB), which is what
    a compressed video (h264, yuv420p) of a render needs.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError("renders must be uint8 RGB arrays of shape ...×3")
    codes = colour_codes(rgb)
    position = np.clip(np.searchsorted(_SORTED_CODES, codes), 0, N_LABELS - 1)
    exact = _SORTED_CODES[position] == codes
    labels = _CODE_ORDER[position].astype(np.uint8)
    if exact.all():
        return labels
    if not nearest:
        raise ValueError(f"{int((~exact).sum())} pixels are not DensePose palette colours; pass nearest=True for compressed renders")
    off = ~exact
    pixels = rgb[off].astype(np.int32)
    best = np.zeros(len(pixels), dtype=np.uint8)
    best_distance = np.full(len(pixels), np.iinfo(np.int32).max, dtype=np.int32)
    for label, colour in enumerate(PALETTE.astype(np.int32)):
        distance = ((pixels - colour) ** 2).sum(axis=1)
        closer = distance < best_distance
        best[closer] = label
        best_distance[closer] = distance[closer]
    labels[off] = best
    return labels


#: How far (Euclidean RGB) a decoded pixel may be from its palette colour and still count as it:
#: h264/yuv420p moves the colours of the bundled driving videos by 4.4 (median) and 7-16 (p95), §10.4.
PALETTE_TOLERANCE = 20


def palette_shares(frames, background=BACKGROUND) -> tuple[float, float]:
    """How much of ``frames`` (uint8 RGB ``...×H×W×3``) is a person, and how much of that person is drawn in the palette.

    A pixel within ``PALETTE_TOLERANCE`` of ``background`` or of viridis(0) is background (some
    published renders are on black); the others are the person. Returns the person's share of all
    pixels and the share of the person's pixels within ``PALETTE_TOLERANCE`` of one of the 24 part
    colours: about 0.84-0.94 for the five bundled MagicAnimate driving videos fitted to 64²-512²,
    at most 0.04 for photographs, 0 where there is no person (a person share of 0).
    """
    targets = np.vstack([np.asarray(background, np.int64), PALETTE.astype(np.int64)])  # background, label 0, labels 1..24
    distances, _, counts = distinct_colour_distances(frames, targets)
    near = distances <= PALETTE_TOLERANCE**2
    person = ~near[:, :2].any(axis=1)
    person_pixels = int(counts[person].sum())
    if not person_pixels:
        return 0.0, 0.0
    return person_pixels / int(counts.sum()), int(counts[person & near[:, 2:].any(axis=1)].sum()) / person_pixels


# ----------------------------------------------------------------------------- is it DensePose at all?


class BorderColours:
    """Counts the colours on the border of every frame it is given; ``most_common()`` is the background."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, frame) -> None:
        border = np.concatenate([frame[0], frame[-1], frame[1:-1, 0], frame[1:-1, -1]])
        values, counts = np.unique(colour_codes(border), return_counts=True)
        self.counts.update(dict(zip(values.tolist(), counts.tolist())))

    def most_common(self) -> tuple[int, int, int]:
        if not self.counts:
            raise ValueError("no frames were counted")
        value = self.counts.most_common(1)[0][0]
        return (value >> 16) & 255, (value >> 8) & 255, value & 255


def clip_background(frames) -> tuple[int, int, int]:
    """The most common border colour over ``frames`` (uint8 RGB, ``T×H×W×3`` or an iterable)."""
    counter = BorderColours()
    for frame in frames:
        counter.add(frame)
    return counter.most_common()


#: Below this share of a motion's person drawn in the DensePose palette, it is not MagicAnimate's kind of
#: pose (``palette_shares``; measured: the five bundled driving videos 0.84-0.94 fitted to 64²-512², photographs
#: and a GIF at most 0.04, a blue-green-yellow logo 0.38, the IUV-coloured parity fixture 0).
MIN_PALETTE_SHARE = 0.5
MIN_PERSON_SHARE = 0.001  # below: no person (a 16×16 one in a 512² frame is 0.001)


def judged_frames(total: int, count: int = 8) -> list[int]:
    """The indices of the frames ``motion_warnings`` judges: up to ``count`` spread evenly over a
    clip of ``total`` frames, the first and last among them."""
    return np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist() if total else []


def _iuv_command(motion: Path) -> str:
    """The command that converts IUV ``motion`` (from its PNG frames when it is a video that is not
    stored in RGB: a yuv video has lost the exact indices)."""
    from .. import media
    from ..clip import DENSEPOSE, IMAGES
    from .iuv import check_iuv_video

    if motion.is_dir():
        frames = motion / DENSEPOSE if (motion / IMAGES).is_dir() else motion
        return f"`magicanimate densepose {frames} --from-iuv -o POSES`, then animate POSES"
    try:
        as_it_is = media.is_image(motion) or (check_iuv_video(motion) is None)  # a video in lossless RGB of 8 or 16 bits
    except UserError:  # (stored as yuv)
        as_it_is = False
    if as_it_is:
        return f"`magicanimate densepose {motion} --from-iuv -o POSES`, then animate POSES"
    return ("`magicanimate densepose FRAMES --from-iuv -o POSES` on the IUV PNG frames this video was made from "
            "(a yuv video's colours have lost the exact part indices), then animate POSES")


def motion_warnings(poses, motion: Path, strict: bool = False) -> list[str]:
    """Warn (``InputWarning``, from the stage's caller) about what makes fitted ``poses`` (uint8 RGB
    ``T×S×S×3``) unlikely to drive the model, and return the messages, judged on up to 8 frames
    spread over the clip: no person at all, no person in most of them, or a person not drawn in the DensePose palette (a raw
    video, an IUV or parula rendering; one that looks like IUV as shown, ``iuv.looks_like_iuv``, or in the values its
    files store, ``iuv.stored_like_iuv`` (16 bits, a transparent background), is told to convert it with
    ``densepose --from-iuv``). MagicAnimate's ControlNet was trained on viridis DensePose only, so either gives an
    animation that does not follow the motion. ``strict`` refuses it instead (``UserError``): a batch job stops there,
    before the models load."""
    picked = poses[judged_frames(len(poses))]
    background = clip_background(picked)  # viridis(0) and the border's colour
    _, palette = palette_shares(picked, background)
    empty = sum(palette_shares(frame, background)[0] < MIN_PERSON_SHARE for frame in picked)
    found, iuv = [], None
    if empty * 2 > len(picked) or palette < MIN_PALETTE_SHARE:
        from .iuv import looks_like_iuv, stored_like_iuv

        shown_iuv = looks_like_iuv(picked) if background == (0, 0, 0) and empty * 2 <= len(picked) else None
        iuv = shown_iuv or stored_like_iuv(motion)  # 16-bit values 0..255 show black, a transparent background white
    if iuv is not None:
        found.append(f"{motion}: does not look like DensePose in MagicAnimate's colours ({palette:.0%} of the person's pixels are "
                     f"viridis part colours) but like DensePose IUV (part indices in the {iuv} channel, on black), which the "
                     f"animation will not follow; convert it first: {_iuv_command(Path(motion))}")  # fmt: skip
    elif empty == len(picked):
        found.append(f"{motion}: no person in {len(picked)} frames spread over the clip (only background); "
                     "the animation will show nobody: check the video given to `magicanimate densepose`")
    elif empty * 2 > len(picked):  # as `densepose` refuses a clip with a person in under half its frames (--min-detected 0.5)
        found.append(f"{motion}: no person in {empty} of {len(picked)} frames spread over the clip, so the animation will show "
                     "nobody there: cut the clip to where the person is, or check the video given to `magicanimate densepose`")
    elif palette < MIN_PALETTE_SHARE:
        found.append(f"{motion}: does not look like DensePose in MagicAnimate's colours ({palette:.0%} of the person's pixels are "
                     "viridis part colours), so the animation will probably not follow it; make the poses with `magicanimate densepose VIDEO`")  # fmt: skip
    if strict and found:
        raise UserError(f"{found[0]} (refused: --strict; without it the run goes on with a warning)")
    for message in found:
        warnings.warn(message, InputWarning, stacklevel=3)  # pointing at whoever called animate() or align()
    return found
