"""``magicanimate crop``: center crop, a fixed box, or a person-centred field of view; then resize.

Three ways to choose the region, the same for every frame of a clip:

* default: the largest centred square (the maintainers' recipe: "center crop it and then resize
  to 512X512");
* ``--box x0,y0,x1,y1``: a fixed box in source pixels (x1, y1 exclusive);
* ``--fov WxH``: a window of aspect W:H centred on the person and steady over the whole clip: the
  smallest such window that holds the person's box (over all frames, 2nd/98th percentile of the
  per-frame boxes, plus a 10 % margin), shrunk to fit the frame if needed and shifted inside it.

With ``--size N`` (default 512) the region's centred square is resized to ``N×N``, which for
``--fov`` is a person-centred square. ``--size 0`` keeps the region instead: the field of view is
resized to exactly ``W×H`` (the frames the paper runs DensePose on), a box keeps its pixels.

Where the person is (``--fov``), without any heavy model, from the first source that exists:

1. ``masks/`` of a clip folder (matting masks, > 127 is person);
2. ``densepose_labels/`` (DensePose part labels, > 0 is person);
3. ``densepose/`` renderings (pixels away from the viridis(0) background are person);
4. motion: the per-pixel standard deviation of the grey frames over the clip, on a small copy;
   the region that moves is the person. Good for a static camera and one moving person;
   a moving camera or several people mislead it (then run ``magicanimate matte`` first or pass
   ``--box``);
5. nothing found: the frame centre.

Resampling (Pillow): images bicubic (as MagicAnimate's own loader), masks bilinear, DensePose
renderings and label maps nearest-neighbour, so every DensePose pixel keeps an exact palette
colour and every label stays a label. A region already at the output size is copied unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .clip import DENSEPOSE, IMAGES, LABELS, MASKS, SIZE
from .densepose.config import BACKGROUND
from .errors import UserError

FOV_MARGIN = 0.10
MOTION_WIDTH = 128


@dataclass(frozen=True)
class CropPlan:
    """Where to cut and what size to write, in source pixels (x1, y1 exclusive)."""

    mode: str  # center | box | fov
    source_size: tuple[int, int]  # (width, height)
    window: tuple[int, int, int, int]  # the chosen region (full frame, box or field of view)
    crop_box: tuple[int, int, int, int]  # the part of the source that becomes the output
    output_size: tuple[int, int]  # (width, height)
    located_by: str | None = None
    person: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class CropResult:
    output: str
    frames: int
    mode: str
    size: int
    source_size: list
    window: list
    crop_box: list
    output_size: list  # as written: a video's frames padded to even sides (media.FrameWriter.written_size)
    located_by: str | None
    person: list | None
    subfolders: list | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- parsing


def parse_box(box, option: str = "--box", of: str = "pixels") -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (or a 4-sequence) -> ints; 0 <= x0 < x1 and 0 <= y0 < y1. ``option`` and
    ``of`` (what the pixels are of) word the error: ``crop --box``, ``align --ref-box``.

    Fractional coordinates (a detector's box) are rounded outwards to the whole-pixel box that
    holds the region: x0, y0 down (a detector's -0.4 to 0), x1, y1 up; never to the nearest pixel,
    which could move both edges inwards. A box whose numbers all lie in 0-1 and are not all whole
    is taken for fractions of the frame and refused (it would be a 1-pixel box)."""
    if isinstance(box, str):
        parts = [p.strip() for p in box.replace(" ", ",").split(",") if p.strip()]
    else:
        parts = list(box)
    try:
        numbers = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):  # inf, 1e400, nan
        raise UserError(f"{option} {box}: expected four numbers x0,y0,x1,y1 ({of}, x1 and y1 exclusive), e.g. {option} 100,0,740,640")
    if not all(v.is_integer() for v in numbers) and all(0 <= v <= 1 for v in numbers):
        raise UserError(f"{option} {box}: coordinates are {of}, not fractions of the frame, e.g. {option} 100,0,740,640")

    def down(v: float) -> int:
        return 0 if -1 < v < 0 else math.floor(v)

    values = (down(numbers[0]), down(numbers[1]), math.ceil(numbers[2]), math.ceil(numbers[3]))
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
        raise UserError(f"{option} {box}: need 0 <= x0 < x1 and 0 <= y0 < y1")
    return values


def parse_fov(fov, *, as_size: bool = False) -> tuple[int, int]:
    """``"WxH"`` (or a 2-sequence) -> (width, height) in pixels. ``as_size``: the frames are written
    at that size (``--size 0``, ``preprocess``'s field-of-view stage), so each side is at most
    ``MAX_SIZE``; otherwise only its aspect counts."""
    if isinstance(fov, str):
        parts = fov.lower().replace("×", "x").split("x")
    else:
        parts = list(fov)
    try:
        width, height = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"--fov {fov}: expected WIDTHxHEIGHT in pixels, e.g. --fov 1024x512") from None
    if width < 1 or height < 1:
        raise UserError(f"--fov {fov}: width and height must be positive")
    if as_size and max(width, height) > MAX_SIZE:
        raise UserError(f"--fov {fov}: frames of that size are written here; at most {MAX_SIZE} pixels a side (or give --size)")
    return width, height


MAX_SIZE = 8192  # an 8K square; beyond it a frame no longer fits in memory on ordinary machines


def check_size(size: int) -> int:
    if size is None or size < 0 or (0 < size < 8) or size > MAX_SIZE:
        raise UserError(f"--size {size}: must be 0 (keep the region) or from 8 to {MAX_SIZE} pixels")
    return int(size)


# ----------------------------------------------------------------------------- geometry


def center_square(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The largest square centred in ``box``."""
    x0, y0, x1, y1 = box
    side = min(x1 - x0, y1 - y0)
    left = x0 + (x1 - x0 - side) // 2
    top = y0 + (y1 - y0 - side) // 2
    return left, top, left + side, top + side


def fit_square(image, size: int, fit: str, fill: tuple[int, int, int]):
    """Fit a uint8 RGB image to ``size×size``: center crop, pad (with ``fill``) or stretch.

    The resize is Pillow's bicubic, as in the official code; an image already ``size×size``
    is returned as it is.
    """
    from PIL import Image

    height, width = image.shape[:2]
    if fit == "crop" and height != width:
        left, top, right, bottom = center_square((0, 0, width, height))
        image = image[top:bottom, left:right]
    elif fit == "pad" and height != width:
        side = max(height, width)
        canvas = np.empty((side, side, 3), dtype=np.uint8)
        canvas[:] = fill
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = image
        image = canvas
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def unfit_square(image, width: int, height: int, fit: str):
    """Undo ``fit_square`` on a ``size×size`` result: back to the ``width×height`` aspect of the
    image it was fitted from, the long side kept at ``size`` (``unfit_box``). ``pad`` cuts the
    padding off (the pixels inside are untouched); ``stretch`` undoes the squash (Pillow's
    bicubic, as the fit). A square image is returned as it is."""
    from PIL import Image

    x0, y0, x1, y1 = unfit_box(width, height, image.shape[0], fit)
    if fit == "pad" or width == height:
        return np.ascontiguousarray(image[y0:y1, x0:x1])
    return np.asarray(Image.fromarray(image).resize((x1 - x0, y1 - y0), Image.BICUBIC))


def unfit_box(width: int, height: int, size: int, fit: str) -> tuple[int, int, int, int]:
    """Where a ``width×height`` image lies in its ``fit_square`` to ``size`` (``pad``: inside the
    padding), or the box a ``stretch`` is undone to (``(0, 0, w, h)``, the long side ``size``).
    ``crop`` cut the sides away, so nothing can be undone (``ValueError``)."""
    if width == height:
        return 0, 0, size, size
    if fit not in ("pad", "stretch"):
        raise ValueError(f"fit {fit!r}: only pad and stretch can be undone")
    side = max(width, height)
    if fit == "stretch":
        return 0, 0, max(1, round(width * size / side)), max(1, round(height * size / side))
    top, left = (side - height) // 2, (side - width) // 2  # where fit_square put the image
    return (round(left * size / side), round(top * size / side),
            round((left + width) * size / side), round((top + height) * size / side))


def fov_window(person, aspect: float, width: int, height: int, margin: float = FOV_MARGIN) -> tuple[int, int, int, int]:
    """The smallest window of ``aspect`` (w/h) holding ``person`` plus ``margin``, inside the frame.

    Without a person the window is the largest of that aspect, centred. If the person does not fit
    (too large for the frame at this aspect) the window is the largest that fits, centred on the
    person as far as the frame allows.
    """
    if person is None:
        cx, cy = width / 2, height / 2
        win_h = min(height, width / aspect)
    else:
        x0, y0, x1, y1 = person
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        need_w, need_h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
        win_h = max(need_h, need_w / aspect, 2.0)
        win_h = min(win_h, height, width / aspect)
    h = int(min(height, max(2, round(win_h))))
    w = int(round(h * aspect))
    if w > width:  # rounding pushed it over the edge
        w = width
        h = int(min(height, max(1, round(w / aspect))))
    w = max(1, w)
    left = int(min(max(round(cx - w / 2), 0), width - w))
    top = int(min(max(round(cy - h / 2), 0), height - h))
    return left, top, left + w, top + h


def _trimmed_extent(counts: np.ndarray, trim: float) -> tuple[int, int] | None:
    """First and one-past-last index holding all but ``trim`` of the mass at each end."""
    total = float(counts.sum())
    if total <= 0:
        return None
    cumulative = np.cumsum(counts, dtype=np.float64)
    lo = int(np.searchsorted(cumulative, trim * total, side="right"))
    hi = int(np.searchsorted(cumulative, (1 - trim) * total, side="left")) + 1
    return lo, max(hi, lo + 1)


def trimmed_box(mask: np.ndarray, trim: float = 0.005) -> tuple[int, int, int, int] | None:
    """Bounding box of a boolean mask, ignoring ``trim`` of the pixels at each side (specks); ``align.mask_box`` is the exact box."""
    if mask.sum() < 4:
        return None
    xs = _trimmed_extent(mask.sum(axis=0), trim)
    ys = _trimmed_extent(mask.sum(axis=1), trim)
    return xs[0], ys[0], xs[1], ys[1]


def clip_box(boxes: list) -> tuple[int, int, int, int] | None:
    """One box for the whole clip: 2nd percentile of the left/top edges, 98th of the right/bottom."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    arr = np.asarray(boxes, dtype=np.float64)
    x0, y0 = np.percentile(arr[:, 0], 2), np.percentile(arr[:, 1], 2)
    x1, y1 = np.percentile(arr[:, 2], 98), np.percentile(arr[:, 3], 98)
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


# ----------------------------------------------------------------------------- locating the person


def _person_from_maps(files: list[Path], kind: str) -> tuple[int, int, int, int] | None:
    from . import media

    boxes = []
    for file in files:
        with media.open_image(file) as stored:
            image = media.upright(stored)
            if kind == DENSEPOSE:
                rgb = np.asarray(image.convert("RGB")).astype(np.int32)
                mask = ((rgb - np.asarray(BACKGROUND)) ** 2).sum(axis=2) > 30**2
            elif kind == LABELS:
                mask = np.asarray(image) > 0
            else:
                mask = np.asarray(image.convert("L")) > 127
        if mask.ndim == 3:
            mask = mask.any(axis=2)
        boxes.append(trimmed_box(mask))
    return clip_box(boxes)


def _person_from_motion(frames, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Bounding box of what moves: per-pixel temporal std of small grey copies of the frames."""
    from PIL import Image

    factor = max(1, width // MOTION_WIDTH)
    count, mean, m2 = 0, None, None
    for frame in frames:
        grey = Image.fromarray(frame).convert("L")
        if factor > 1:
            grey = grey.reduce(factor)
        x = np.asarray(grey, dtype=np.float64)
        count += 1
        if mean is None:
            mean, m2 = x.copy(), np.zeros_like(x)
            continue
        delta = x - mean
        mean += delta / count
        m2 += delta * (x - mean)
    if count < 2:
        return None
    std = np.sqrt(m2 / (count - 1))
    threshold = max(8.0, 0.3 * float(np.percentile(std, 99.5)))
    moving = std > threshold
    if moving.mean() < 0.001:
        return None
    box = trimmed_box(moving, trim=0.02)
    if box is None:
        return None
    sx, sy = width / std.shape[1], height / std.shape[0]
    x0, y0, x1, y1 = box
    return int(x0 * sx), int(y0 * sy), min(width, int(np.ceil(x1 * sx))), min(height, int(np.ceil(y1 * sy)))


def locate_person(source: Path, width: int, height: int) -> tuple[tuple[int, int, int, int] | None, str]:
    """The person's box over the whole clip and how it was found (see the module docstring)."""
    from . import media
    from .clip import is_clip_folder

    source = Path(source)
    if is_clip_folder(source):
        for kind in (MASKS, LABELS, DENSEPOSE):
            folder = source / kind
            files = media.list_frame_files(folder) if folder.is_dir() else []
            if files:
                box = _person_from_maps(files, kind)
                if box is not None:
                    return box, kind
        frames_source = source / IMAGES
        if not frames_source.is_dir():
            return None, "center"
    else:
        frames_source = source
    # the box is a statistic of the frames that decode; the writing pass refuses a truncated video unless allowed
    box = _person_from_motion(media.iter_frames(frames_source, allow_truncated=True), width, height)
    return (box, "motion") if box is not None else (None, "center")


# ----------------------------------------------------------------------------- planning


def plan_crop(source: Path, width: int, height: int, *, size: int = SIZE, box=None, fov=None) -> CropPlan:
    """Choose the region for a ``width×height`` source (``source`` is read only for ``fov``)."""
    size = check_size(size)
    if box is not None and fov is not None:
        raise UserError("--box and --fov: choose one (a fixed box, or a field of view around the person)")
    person, located_by = None, None
    if box is not None:
        mode, window = "box", parse_box(box)
        if window[2] > width or window[3] > height:
            raise UserError(f"--box {','.join(map(str, window))}: outside the {width}x{height} frame; x1 <= {width} and y1 <= {height}")
    elif fov is not None:
        mode = "fov"
        fov_w, fov_h = parse_fov(fov)
        person, located_by = locate_person(source, width, height)
        window = fov_window(person, fov_w / fov_h, width, height)
    else:
        mode, window = "center", (0, 0, width, height)
    if size:
        crop_box, output_size = center_square(window), (size, size)
    elif mode == "center":
        raise UserError("--size 0 keeps the region's own size, which only makes sense with --box or --fov")
    elif mode == "fov":
        crop_box, output_size = window, parse_fov(fov, as_size=True)
    else:
        crop_box, output_size = window, (window[2] - window[0], window[3] - window[1])
    return CropPlan(mode, (width, height), window, crop_box, output_size, located_by, person)


# ----------------------------------------------------------------------------- applying


def resample_for(kind: str):
    """Pillow resampling filter for a clip subfolder (see the module docstring)."""
    from PIL import Image

    return {IMAGES: Image.BICUBIC, MASKS: Image.BILINEAR, DENSEPOSE: Image.NEAREST, LABELS: Image.NEAREST}.get(kind, Image.BICUBIC)


def eight_bit(image):
    """A photo frame as an 8-bit PIL image that PNG stores and ``crop_image`` resamples: RGB, or
    RGBA where it has transparency (an alpha channel or a PNG colour key, which cropping keeps).
    CMYK, LAB and YCbCr become RGB; 16-bit and float images are scaled to 8 bits (``media.to_rgb``),
    not clipped; L, LA and RGB(A) pass unchanged."""
    from PIL import Image

    from . import media

    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if media.has_transparency(image):
        return image.convert("RGBA")
    return Image.fromarray(media.to_rgb(image))


def crop_image(image, crop_box, output_size, resample):
    """Cut ``crop_box`` out of a PIL image and resize it to ``output_size`` (one resampling)."""
    from PIL import Image

    x0, y0, x1, y1 = crop_box
    if (x1 - x0, y1 - y0) == tuple(output_size):
        return image.crop(crop_box)
    if resample != Image.NEAREST:
        if image.mode in ("1", "P", "PA"):
            image = image.convert("L" if image.mode == "1" else "RGBA" if image.mode == "PA" else "RGB")
        elif image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "I;16"):
            image = image.convert("RGB")
    return image.resize(tuple(output_size), resample, box=crop_box)


def crop_frames_to(frames, writer, plan: CropPlan, progress=None, total: int = 0) -> int:
    """Crop an iterator of uint8 RGB frames into a ``media.FrameWriter``."""
    from PIL import Image

    count = 0
    for frame in frames:
        if (frame.shape[1], frame.shape[0]) != plan.source_size:
            raise UserError(f"frame {count}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's")
        out = crop_image(Image.fromarray(frame), plan.crop_box, plan.output_size, Image.BICUBIC)
        writer.write(np.asarray(out))
        count += 1
        if progress is not None:
            progress("crop", count, max(total, count))
    return count


def crop_clip_into(source: Path, target: Path, plan: CropPlan, subs: list[str], progress=None, compress_level: int = 6) -> int:
    """Crop the ``subs`` subfolders of clip folder ``source`` into ``target``/<sub>, each atomically.

    File names are kept (extension .png); an existing ``target/<sub>`` is replaced. ``compress_level``
    is zlib's (1 is several times faster, for intermediate frames).
    Returns the number of frames of the first subfolder.
    """

    from . import media
    from .files import commit, discard, output_of, temp_beside, writing

    source, target = Path(source), Path(target)
    files = {sub: media.list_frame_files(source / sub) for sub in subs}
    total = sum(len(f) for f in files.values())
    done = 0
    for sub in subs:
        tmp = temp_beside(target / sub)
        try:
            with writing(output_of(target / sub)):  # a full disk names the output, not its temporary
                for file in files[sub]:
                    with media.open_image(file) as stored:
                        # a phone photo's EXIF turn, as every other reader applies it (and a photo's colours in sRGB)
                        image = media.as_shown(stored) if sub == IMAGES else media.upright(stored)
                        image = eight_bit(image) if sub == IMAGES else image  # CMYK, 16-bit, float: what PNG stores
                        if image.size != plan.source_size:
                            w, h = plan.source_size
                            raise UserError(f"{file}: size {image.size[0]}x{image.size[1]} differs from the clip's {w}x{h}; all subfolders must match images/")
                        out = crop_image(image, plan.crop_box, plan.output_size, resample_for(sub))
                        media.save_png(out, tmp / f"{file.stem}.png", compress_level)
                    done += 1
                    if progress is not None:
                        progress("crop", done, total)
                commit(tmp, target / sub, replace=True)
                tmp = None
        finally:
            discard(tmp)
    return len(files[subs[0]]) if subs else 0


def clip_source_size(clip: Path, subs: list[str]) -> tuple[int, int]:
    """(width, height) of a clip folder: its images/ (else first subfolder with frames)."""

    from . import media

    for sub in [IMAGES, *subs]:
        folder = Path(clip) / sub
        files = media.list_frame_files(folder) if folder.is_dir() else []
        if files:
            with media.open_image(files[0]) as image:
                return media.upright(image).size
    raise UserError(f"{clip}: clip folder has no frames in images/, densepose/, masks/ or densepose_labels/")


def crop(
    input: Path | str,
    output: Path | str,
    *,
    size: int = SIZE,
    box: str | None = None,
    fov: str | None = None,
    allow_truncated: bool = False,
    overwrite: bool = False,
    progress=None,
) -> CropResult:
    """Crop a video, a frames folder or a clip folder (all its subfolders alike) and resize.

    ``output``: for a clip folder, a clip folder; otherwise a video path (by extension) or a frames
    folder. It appears atomically and an existing one is only replaced with ``overwrite``. A video
    that does not decode to its end is refused unless ``allow_truncated``.
    """
    from . import media
    from .clip import is_clip_folder, read_meta, subfolders, versions, write_meta
    from .files import commit, discard, temp_beside

    input, output = media.input_path(input), media.output_path(output)
    if not input.exists():
        raise UserError(f"{input}: no such file or folder")
    size = check_size(size)
    started = time.perf_counter()
    written = None  # a video's frames as written (padded to even sides), where they differ from the plan's
    if is_clip_folder(input):
        subs = subfolders(input)
        if not subs:
            raise UserError(f"{input}: clip folder has no frames in images/, densepose/, masks/ or densepose_labels/")
        if media.is_video(output) or media.is_image(output):
            kind = "a video" if media.is_video(output) else "an image"
            raise UserError(f"{output}: a clip folder crops into a clip folder; give -o a folder name, not {kind}")
        width, height = clip_source_size(input, subs)
        media.check_output(output, overwrite, protect=(input,))
        plan = plan_crop(input, width, height, size=size, box=box, fov=fov)
        tmp = temp_beside(output)
        try:  # (crop_clip_into and write_meta name the output on a full disk themselves)
            count = crop_clip_into(input, tmp, plan, subs, progress)
            meta = read_meta(input) or {}
            meta.setdefault("crops", []).append({"input": str(input), **_plan_dict(plan), "versions": versions()})
            meta["crop_box"] = compose_box(meta.get("crop_box"), plan)
            write_meta(tmp, meta)
            commit(tmp, output, replace=overwrite)
            tmp = None
        finally:
            discard(tmp)
    elif media.is_image(input):
        subs = None
        if output.suffix.lower() != ".png":
            raise UserError(f"{output}: an image crops into an image; give -o a .png path")
        from PIL import Image

        with media.open_image(input) as stored:
            image = eight_bit(media.as_shown(stored))  # its transparency kept (align and animate --align read it)
            media.check_output(output, overwrite, protect=(input,))
            plan = plan_crop(input, image.size[0], image.size[1], size=size, box=box, fov=fov)
            cropped = np.asarray(crop_image(image, plan.crop_box, plan.output_size, Image.BICUBIC))
        media.write_png(output, cropped, replace=overwrite)
        count = 1
    else:
        subs = None
        media.check_sequence_output(output)
        info = media.probe(input)
        media.check_output(output, overwrite, protect=(input,))
        plan = plan_crop(input, info.width, info.height, size=size, box=box, fov=fov)
        media.check_clip_fits(output, *plan.output_size, info.frames)  # a GIF's or WebP's limits, before any frame is cropped
        with media.FrameWriter(output, info.fps, overwrite, **media.kept_sound(input, output)) as writer:
            count = crop_frames_to(media.iter_frames(input, allow_truncated=allow_truncated), writer, plan, progress, info.frames)
        written = writer.written_size
    return CropResult(
        output=str(output),
        frames=count,
        mode=plan.mode,
        size=size,
        source_size=list(plan.source_size),
        window=list(plan.window),
        crop_box=list(plan.crop_box),
        output_size=list(written or plan.output_size),
        located_by=plan.located_by,
        person=list(plan.person) if plan.person else None,
        subfolders=subs,
        seconds=round(time.perf_counter() - started, 3),
    )


def _plan_dict(plan: CropPlan) -> dict:
    return {
        "mode": plan.mode,
        "source_size": list(plan.source_size),
        "window": list(plan.window),
        "crop_box": list(plan.crop_box),
        "output_size": list(plan.output_size),
        "located_by": plan.located_by,
        "person": list(plan.person) if plan.person else None,
    }


def compose_box(previous, plan: CropPlan) -> list:
    """``plan``'s crop box in the coordinates of the original source, given the box ``previous`` that the
    plan's input was cut from there (a clip's ``crop_box``, preprocess's ``fov_box``); falsy: the input is the source."""
    box = [float(v) for v in plan.crop_box]
    if not previous:
        return [round(v, 3) for v in box]
    px0, py0, px1, py1 = (float(v) for v in previous)
    sx = (px1 - px0) / plan.source_size[0]
    sy = (py1 - py0) / plan.source_size[1]
    return [round(px0 + box[0] * sx, 3), round(py0 + box[1] * sy, 3), round(px0 + box[2] * sx, 3), round(py0 + box[3] * sy, 3)]
