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
  snapped and the largest distance. A frame whose mean distance to the palette exceeds
  ``MAX_MEAN_DISTANCE`` is not a viridis DensePose rendering (e.g. apply_net's parula/alpha
  overlay) and is refused rather than silently scrambled.
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


def render_labels_and_distance(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Part label of every pixel (exact palette colour, else the nearest) and its distance to it."""
    from .densepose import labels_from_render

    palette, _ = _tables()
    rgb = np.ascontiguousarray(rgb[..., :3])
    labels = labels_from_render(rgb, nearest=True)
    distance = np.sqrt(((rgb.astype(np.int32) - palette[labels].astype(np.int32)) ** 2).sum(axis=-1))
    return labels, distance


def flip_densepose_array(rgb: np.ndarray) -> tuple[np.ndarray, int, float, float]:
    """Mirror an RGB(A) DensePose rendering and swap its left/right part colours.

    Returns (flipped array of the same shape and dtype, pixels snapped, largest and mean snap
    distance). Alpha, if any, is mirrored unchanged.
    """
    palette, symmetry = _tables()
    labels, distance = render_labels_and_distance(rgb)
    out = rgb.copy()
    out[..., :3] = palette[symmetry[labels]]
    snapped = int((distance > 0).sum())
    return np.ascontiguousarray(out[:, ::-1]), snapped, float(distance.max(initial=0.0)), float(distance.mean()) if distance.size else 0.0


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
        palette, symmetry = _tables()
        raw = image.getpalette() or []
        colours = np.asarray(raw + [0] * (768 - len(raw)), dtype=np.uint8)[:768].reshape(256, 3)
        used = np.bincount(np.asarray(image).reshape(-1), minlength=256)[:256]
        labels, distances = render_labels_and_distance(colours[None])
        labels, distances = labels[0], distances[0]
        snapped = int(used[distances > 0].sum())
        max_distance = float(distances[used > 0].max(initial=0.0))
        mean_distance = float((distances * used).sum() / max(1, used.sum()))
        result = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        result.putpalette(palette[symmetry[labels]].reshape(-1).tolist())
    else:
        raise UserError(f"{file}: mode {image.mode}; a DensePose rendering is RGB (single-channel part labels belong in densepose_labels/)")
    if mean_distance > MAX_MEAN_DISTANCE:
        raise UserError(
            f"{file}: not a viridis DensePose rendering (mean distance {mean_distance:.1f} to the 25 palette colours); "
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
