"""``magicanimate flip``: mirror a clip folder for augmentation, with DensePose's left/right swap.

A mirrored person's left hand is where the right hand was, so a DensePose rendering cannot just be
mirrored: every part colour ``l`` must become the colour of its mirror part
``POINT_LABEL_SYMMETRIES[l]`` (detectron2's table, official-inference §10.5; palette §10.3).

* ``images/`` and ``masks/``: mirrored, nothing else (same mode, same format; JPEGs keep their
  quantisation tables).
* ``densepose/``: mirrored, and each pixel's part colour replaced by its mirror part's colour.
  Exact palette colours (what ``magicanimate densepose`` writes) map exactly, byte for byte.
  Other colours (renderings decoded from lossy video, whose colours drift by a few levels) are
  first snapped to the nearest of the 25 palette colours (Euclidean RGB), so every output pixel
  is an exact palette colour with the correct part; the result reports how many pixels were
  snapped and the largest distance. A canvas that is not viridis(0) (black in some published
  driving videos; ``frame_background``: the frame's most common border colour, when it is no
  palette colour) stays as it is, as ``align`` and ``animate`` take it: its pixels snap to it,
  not to a part. A frame whose person (the pixels that are not background) lies farther than
  ``MAX_MEAN_DISTANCE`` from the palette on average is not a viridis DensePose rendering (e.g.
  apply_net's parula/alpha overlay, an IUV rendering) and is refused rather than silently scrambled.
* ``densepose_labels/`` (DensePose part labels): mirrored and relabelled; a map with a value
  outside 0..24 is refused (it is not a DensePose label map).

Every subfolder must hold the same number of frames, all of one size (as viewers show them), or the
clip is refused before any work.

File names and image modes are kept. ``meta.json`` is copied with ``flip`` recorded. Other
files and folders in the clip are not copied; the result lists them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .clip import DENSEPOSE, LABELS, SUBFOLDERS
from .errors import UserError, shown

MAX_MEAN_DISTANCE = 25.0


@dataclass(frozen=True)
class FlipResult:
    output: str
    frames: int
    subfolders: list
    snapped_pixels: int
    max_snap_distance: float
    ignored: list
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    from .densepose import PALETTE, POINT_LABEL_SYMMETRIES

    return np.asarray(PALETTE, dtype=np.uint8).reshape(-1, 3), np.asarray(POINT_LABEL_SYMMETRIES, dtype=np.intp)


def frame_background(rgb: np.ndarray) -> tuple[int, int, int] | None:
    """The canvas colour of a rendering when it is not viridis(0): its most common border colour,
    when that is farther than ``PALETTE_TOLERANCE`` from every palette colour (black in some
    published driving videos); None for our renders (and for lossy copies of them)."""
    from .densepose.palette import PALETTE_TOLERANCE, clip_background

    rgb = np.asarray(rgb)[..., :3]
    if not rgb.size:
        return None
    background = clip_background([rgb])
    palette, _ = _tables()
    if (((palette.astype(np.int64) - np.asarray(background, np.int64)) ** 2).sum(axis=-1) <= PALETTE_TOLERANCE**2).any():
        return None
    return background


def _targets(background) -> tuple[np.ndarray, np.ndarray]:
    """The colours pixels snap to and each one's mirror: the 25 palette colours, then ``background``
    (index 25, its own mirror) when there is one."""
    palette, symmetry = _tables()
    if background is None:
        return palette, symmetry
    return np.vstack([palette, np.asarray(background, np.uint8)[None]]), np.append(symmetry, len(symmetry))


def render_labels_and_distance(rgb: np.ndarray, background=None) -> tuple[np.ndarray, np.ndarray]:
    """Part label of every pixel (exact palette colour, else the nearest) and its distance to it.

    With a ``background`` (``frame_background``) a pixel nearer to it than to every palette colour
    gets the label 25, the background's."""
    from .densepose import labels_from_render

    rgb = np.ascontiguousarray(rgb[..., :3])
    labels = labels_from_render(rgb, nearest=True).astype(np.intp)
    targets, _ = _targets(background)
    distance = ((rgb.astype(np.int64) - targets[labels].astype(np.int64)) ** 2).sum(axis=-1)
    if background is not None:
        to_background = ((rgb.astype(np.int64) - np.asarray(background, np.int64)) ** 2).sum(axis=-1)
        nearer = to_background < distance
        labels[nearer] = len(targets) - 1
        distance[nearer] = to_background[nearer]
    return labels, np.sqrt(distance)


def _person_mean(distance: np.ndarray, labels: np.ndarray, weights=None) -> float:
    """Mean snap distance over the person's pixels (labels 1..24): the background is no evidence either way."""
    person = (labels > 0) & (labels < 25)
    weights = np.ones(distance.shape) if weights is None else np.asarray(weights, np.float64)
    count = float((weights * person).sum())
    return float((distance * weights * person).sum() / count) if count else 0.0


def flip_densepose_array(rgb: np.ndarray, background=None) -> tuple[np.ndarray, int, float, float]:
    """Mirror an RGB(A) DensePose rendering and swap its left/right part colours.

    Returns (flipped array of the same shape and dtype, pixels snapped, largest snap distance and
    mean snap distance over the person). Alpha, if any, is mirrored unchanged. ``background``
    defaults to ``frame_background(rgb)``: a canvas that is not viridis(0) is kept.
    """
    if background is None:
        background = frame_background(rgb)
    targets, symmetry = _targets(background)
    labels, distance = render_labels_and_distance(rgb, background)
    out = rgb.copy()
    out[..., :3] = targets[symmetry[labels]]
    snapped = int((distance > 0).sum())
    return np.ascontiguousarray(out[:, ::-1]), snapped, float(distance.max(initial=0.0)), _person_mean(distance, labels)


def flip_labels_array(labels: np.ndarray) -> np.ndarray:
    """Mirror a DensePose label map (0..24) and swap left/right labels; other values stay."""
    _, symmetry = _tables()
    lut = np.arange(max(256, int(labels.max()) + 1), dtype=labels.dtype)
    lut[: len(symmetry)] = symmetry
    return np.ascontiguousarray(lut[labels][:, ::-1])


def _flip_densepose_image(image, file: Path) -> tuple[object, int, float]:
    from PIL import Image

    if image.mode in ("RGB", "RGBA"):
        out, snapped, max_distance, mean_distance = flip_densepose_array(np.asarray(image))
        result = Image.fromarray(out)
    elif image.mode == "P":
        raw = image.getpalette() or []
        colours = np.asarray(raw + [0] * (768 - len(raw)), dtype=np.uint8)[:768].reshape(256, 3)
        indices = np.asarray(image)
        used = np.bincount(indices.reshape(-1), minlength=256)[:256]
        background = frame_background(colours[indices])
        targets, symmetry = _targets(background)
        labels, distances = render_labels_and_distance(colours[None], background)
        labels, distances = labels[0], distances[0]
        snapped = int(used[distances > 0].sum())
        max_distance = float(distances[used > 0].max(initial=0.0))
        mean_distance = _person_mean(distances, labels, used)
        result = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mirrored = np.where((used > 0)[:, None], targets[symmetry[labels]], colours)  # unused entries as they were
        result.putpalette(mirrored.reshape(-1)[: len(raw) or 768].tolist())  # the palette's own length: a flip of a flip is the file
    else:
        raise UserError(f"{file}: mode {image.mode}; a DensePose rendering is RGB (single-channel part labels belong in densepose_labels/)")
    if mean_distance > MAX_MEAN_DISTANCE:
        raise UserError(
            f"{file}: not a viridis DensePose rendering (the person's mean distance {mean_distance:.1f} to the 24 part colours); "
            "flip needs MagicAnimate-style renderings (`magicanimate densepose`) or label maps in densepose_labels/"
        )
    return result, snapped, max_distance


def flip_clip_into(clip: Path, target: Path, subs: list[str], progress=None) -> tuple[int, int, float]:
    """Flip the ``subs`` of ``clip`` into the (existing, empty) folder ``target``.

    Returns (frames of the first subfolder, pixels snapped, largest snap distance).
    """
    from PIL import Image

    from . import media

    files = {sub: media.list_frame_files(Path(clip) / sub) for sub in subs}
    total = sum(len(f) for f in files.values())
    done = snapped_total = 0
    max_distance = 0.0
    for sub in subs:
        (Path(target) / sub).mkdir(parents=True, exist_ok=True)
        for file in files[sub]:
            with media.open_image(file) as stored:
                image = media.upright(stored)  # mirrored as viewers show it; saved without the EXIF turn
                if sub == DENSEPOSE:
                    out, snapped, distance = _flip_densepose_image(image, file)
                    snapped_total += snapped
                    max_distance = max(max_distance, distance)
                elif sub == LABELS:
                    if image.mode not in ("L", "P", "I", "I;16"):
                        raise UserError(f"{shown(file)}: mode {image.mode}; label maps are single-channel images of part labels 0..24")
                    array = np.asarray(image)
                    if array.size and (int(array.max()) > 24 or int(array.min()) < 0):
                        raise UserError(
                            f"{shown(file)}: holds the value {int(array.max()) if array.max() > 24 else int(array.min())}, but DensePose "
                            "part labels are 0..24; write the labels of `magicanimate densepose` to densepose_labels/"
                        )
                    out = Image.fromarray(flip_labels_array(array))
                    if image.mode == "P":
                        out.putpalette(image.getpalette())
                else:
                    out = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                media.save_image_like(out, Path(target) / sub / file.name, stored)
            done += 1
            if progress is not None:
                progress("flip", done, total)
    first = files[subs[0]] if subs else []
    return len(first), snapped_total, max_distance


def flip(clip: Path | str, output: Path | str, *, overwrite: bool = False, progress=None) -> FlipResult:
    """Write the mirror image of clip folder ``clip`` to the clip folder ``output``."""
    from . import media
    from .clip import META, is_clip_folder, now, read_meta, subfolders, versions, write_meta
    from .files import commit, discard, temp_beside, writing
    from .folders import taking_back

    clip, output = media.input_path(clip), media.output_path(output)
    if not clip.exists():
        raise UserError(f"{clip}: no such clip folder")
    if clip.is_file() and media.is_video(clip):
        raise UserError(f"{shown(clip)}: a video, but flip mirrors clip folders; make one first "
                        f"(`magicanimate preprocess {shown(clip)} -o clips/ --flip` writes the clip and its mirror)")
    if not is_clip_folder(clip):
        raise UserError(f"{clip}: not a clip folder (expected images/, densepose/, masks/ or densepose_labels/ inside)")
    subs = subfolders(clip)
    if not subs:
        raise UserError(f"{clip}: clip folder has no frames in images/, densepose/, masks/ or densepose_labels/")
    counts = {sub: len(media.list_frame_files(clip / sub)) for sub in subs}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{sub}/ {count}" for sub, count in counts.items())
        raise UserError(f"{shown(clip)}: its subfolders hold different numbers of frames ({listed}); redo the clip so they match")
    sizes = {sub: media.check_frame_sizes(clip / sub) for sub in subs}  # headers only: before any work
    known = {sub: size for sub, size in sizes.items() if size is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{sub}/ {w}x{h}" for sub, (w, h) in known.items())
        raise UserError(f"{shown(clip)}: its subfolders hold frames of different sizes ({listed}); redo the clip so they match")
    if media.is_video(output) or media.is_image(output):
        raise UserError(f"{output}: flip writes a clip folder; give -o a folder name (e.g. {clip.name}_flip)")
    if output.resolve() == clip.resolve():
        raise UserError(f"{output}: is the input clip; choose another output folder (e.g. {clip.name}_flip)")
    media.check_output(output, overwrite, protect=(clip,))
    ignored = sorted(p.name for p in clip.iterdir() if p.name not in (*SUBFOLDERS, META) and not p.name.startswith("."))
    started = time.perf_counter()
    with taking_back(output.parent), writing(output):  # a refused or failed run leaves no new empty folder; a full disk names the output
        tmp = temp_beside(output)
        try:
            count, snapped, max_distance = flip_clip_into(clip, tmp, subs, progress)
            meta = read_meta(clip) or {}
            meta["flipped"] = not meta.get("flipped", False)
            meta["flip"] = {"of": str(clip), "time": now(), "versions": versions(), "snapped_pixels": snapped}
            write_meta(tmp, meta)
            commit(tmp, output, replace=overwrite)
            tmp = None
        finally:
            discard(tmp)
    return FlipResult(str(output), count, subs, snapped, round(max_distance, 3), ignored, round(time.perf_counter() - started, 3))
