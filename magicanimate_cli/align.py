"""``magicanimate align``: fit the driving DensePose poses to the person in the reference.

MagicAnimate paints the person wherever the DensePose frames put the body, so a driving body at
another scale or place than the reference person (a close-up against a full-body dance, a person
off-centre, a child against an adult) puts the appearance in the wrong spot. This stage moves the
whole motion by one uniform scale and one translation, so that the body's height matches the
reference person's and an anchor point lines up (``feet``: bottom centre, the default; ``center``;
``head``: top centre). The motion itself is unchanged: every frame gets the same transform.

Everything happens in the fitted square that ``animate`` works in (``--size``, ``--fit`` and
``crop.fit_square`` with the same fill colours), so the boxes are comparable and the output
is exactly what ``animate`` would see.

* The reference person's box comes from the first of: ``--ref-box`` (pixels of the reference
  image), the image's alpha channel, the PaddleSeg person mask (``matting``, when installed and its
  weights are present), DensePose on the reference (``densepose``, when detectron2 is installed and
  its weights are present). Sources that are not available are skipped with a note in the result.
* The driving body's box is the box of the non-background pixels (``body_mask``: nearest of the
  background, viridis(0) and the 24 part colours), on the first frame with a body or the
  per-coordinate median over all frames with a body (``--frames median``). The background is the
  clip's most common border colour over all its frames (viridis(0) in our renders, black in some
  published driving videos); viridis(0), DensePose label 0, is never a body part either.
  ``--fit pad`` letterboxes with that background colour (for our renders the same viridis(0) that
  ``animate`` uses), so the bars and the seam of the resize stay background.
* Frames are resampled with nearest neighbour, so every output colour is an input colour;
  uncovered areas take the background colour, and bodies pushed partly out of the frame are
  clipped, not squeezed.
* A body box or reference box that reaches an edge of the square that the other does not may be
  cut off there, so the scale may be wrong (a hand entering first, feet below the frame, a
  half-body photo): said as an ``InputWarning`` (``cut_warnings``), in the result's ``warnings``.

Boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive, in pixels of the fitted square
(``--ref-box`` alone is given in pixels of the reference image). ``aligned_frames``
(``plan_alignment``, then ``Alignment.apply`` on each frame) is the pure in-memory part that
``align`` and ``animate --align`` both use.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .animate import AnimateConfig
from .errors import InputWarning, UserError

ANCHORS = ("feet", "center", "head")
FRAME_MODES = ("first", "median")
MIN_BODY_PIXELS = 16  # fewer body pixels than this: nobody is visible (codec specks)
STAGE = "align"


@dataclass(frozen=True)
class AlignConfig:
    anchor: str = "feet"
    frames: str = "first"
    size: int = AnimateConfig.size  # the square animate works in
    fit: str = AnimateConfig.fit

    def validate(self) -> None:
        from .animate import FITS, MAX_SIZE, MIN_SIZE

        if self.anchor not in ANCHORS:
            raise UserError(f"--anchor {self.anchor}: choose one of {', '.join(ANCHORS)}")
        if self.frames not in FRAME_MODES:
            raise UserError(f"--frames {self.frames}: choose one of {', '.join(FRAME_MODES)}")
        if not MIN_SIZE <= self.size <= MAX_SIZE or self.size % 8:
            raise UserError(f"--size {self.size}: must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE} (as for animate)")
        if self.fit not in FITS:
            raise UserError(f"--fit {self.fit}: choose one of {', '.join(FITS)}")


# ----------------------------------------------------------------------------- the driving body


def body_mask(frame, background) -> "numpy.ndarray":  # noqa: F821
    """True where ``frame`` shows a body part.

    Each pixel goes to the nearest (Euclidean RGB) of the clip's background colour, viridis(0)
    (label 0) and the 24 body-part colours of the DensePose palette; it is body when a part colour
    is nearest. Exact renders are classified exactly, and the colours that video compression and
    resizing smear around the body fall on the side they are closer to, so the box grows by
    about a pixel instead of by the reach of the codec's ringing.
    """
    import numpy as np

    from .densepose.palette import PALETTE, distinct_colour_distances

    targets = np.vstack([background, PALETTE]).astype(np.int64)  # background, label 0, labels 1..24
    distances, inverse, _ = distinct_colour_distances(frame, targets)  # each colour classified once, not each pixel
    is_body = distances[:, 2:].min(axis=1) < distances[:, :2].min(axis=1)
    return is_body[inverse].reshape(frame.shape[:2])


def mask_box(mask, min_pixels: int = 1) -> tuple[int, int, int, int] | None:
    """The box ``(x0, y0, x1, y1)`` (ends exclusive) of the True pixels; None when fewer than ``min_pixels``."""
    import numpy as np

    if int(np.count_nonzero(mask)) < max(min_pixels, 1):
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def body_box(frame, background) -> tuple[int, int, int, int] | None:
    """The box of the body in one DensePose frame, or None when nobody is visible."""
    return mask_box(body_mask(frame, background), MIN_BODY_PIXELS)


# ----------------------------------------------------------------------------- the transform


@dataclass(frozen=True)
class Alignment:
    """One uniform scale and shift for a whole clip: output ``(x, y) = scale * (x, y) + shift``.

    Coordinates are continuous, pixel ``i`` covering ``[i, i + 1)``; ``apply`` samples the input at
    the pixel containing the inverse image of each output pixel's centre (nearest neighbour).
    """

    scale: float
    shift: tuple[float, float]
    ref_box: tuple[float, float, float, float]
    body_box: tuple[float, float, float, float]
    anchor: str
    frames: str
    background: tuple[int, int, int]
    warnings: tuple[str, ...] = ()  # InputWarning messages (``cut_warnings``), not part of the transform

    def apply(self, frame) -> "numpy.ndarray":  # noqa: F821
        """``frame`` moved by the transform; uncovered pixels are the background colour."""
        import numpy as np

        height, width = frame.shape[:2]
        xs = np.floor((np.arange(width) + 0.5 - self.shift[0]) / self.scale).astype(np.int64)
        ys = np.floor((np.arange(height) + 0.5 - self.shift[1]) / self.scale).astype(np.int64)
        keep_x = (xs >= 0) & (xs < width)
        keep_y = (ys >= 0) & (ys < height)
        out = np.empty_like(frame)
        out[...] = np.asarray(self.background, dtype=frame.dtype)
        out[np.ix_(keep_y, keep_x)] = frame[np.ix_(ys[keep_y], xs[keep_x])]
        return out

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scale"] = round(self.scale, 6)
        data["shift"] = [round(v, 3) for v in self.shift]
        data["ref_box"] = [round(v, 3) for v in self.ref_box]
        data["body_box"] = [round(v, 3) for v in self.body_box]
        data["background"] = list(self.background)
        data.pop("warnings")
        return data


EDGES = ("left", "top", "right", "bottom")


def touched_edges(box, width: int, height: int) -> set[str]:
    """The edges of a ``width×height`` frame that ``box`` reaches: what may be cut off there."""
    x0, y0, x1, y1 = box
    return {edge for edge, touches in zip(EDGES, (x0 <= 0, y0 <= 0, x1 >= width, y1 >= height)) if touches}


def cut_warnings(ref_box, body_box, width: int, height: int, source: str, frame: int | None) -> tuple[str, ...]:
    """Why the scale may be wrong: the body that sets it (``frame``; None: the median box) reaches
    an edge of the frame that the reference person does not, or the other way round, so one of them
    is cut off there and their heights are not the same part of a person. Both cut at the same edge
    (a half-body photo and a half-body motion) is consistent and not warned about."""
    said = []
    body_cut, ref_cut = touched_edges(body_box, width, height), touched_edges(ref_box, width, height)
    which = f"in frame {frame}" if frame is not None else "(the median box)"
    if body_cut - ref_cut:
        edges = " and ".join(e for e in EDGES if e in body_cut - ref_cut)
        said.append(f"{source}: the body that sets the scale {which} reaches the {edges} edge of the frame, where the reference "
                    f"person does not, so it may be cut off and the aligned poses too large or misplaced; check them, "
                    f"{'pass --frames median, ' if frame is not None else ''}or cut the clip to where the whole body shows")
    if ref_cut - body_cut:
        edges = " and ".join(e for e in EDGES if e in ref_cut - body_cut)
        said.append(f"{source}: the reference person reaches the {edges} edge of its {width}x{height} square, where the body "
                    "does not, so the person may be cut off there and the motion is fitted to the part that shows; "
                    "check the aligned poses, or use a reference where the whole person shows")
    return tuple(said)


def anchor_point(box, anchor: str) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    x = (x0 + x1) / 2
    return x, {"feet": y1, "center": (y0 + y1) / 2, "head": y0}[anchor]


def plan_alignment(
    poses, ref_box, *, anchor: str = AlignConfig.anchor, frames: str = AlignConfig.frames, background=None, source: str = "motion"
) -> Alignment:
    """The transform that puts the body of ``poses`` (fitted DensePose frames) onto ``ref_box``.

    ``poses`` is ``T×S×S×3`` uint8 (an array or a memory map; read one frame at a time).
    ``background`` defaults to the most common border colour of ``poses``; pass the one of the
    unfitted frames when they were letterboxed. ``source`` names the motion in error messages.
    """
    import numpy as np

    from .densepose.palette import clip_background

    AlignConfig(anchor, frames).validate()
    if background is None:
        background = clip_background(poses)
    background = tuple(int(v) for v in background)
    boxes = []
    first = None
    for index, pose in enumerate(poses):
        box = body_box(pose, background)
        if box is not None:
            boxes.append(box)
            if frames == "first":
                first = index
                break
    if not boxes:
        raise UserError(
            f"{source}: no DensePose body in any frame (background {background}); MOTION must be DensePose renderings"
        )
    body = tuple(float(v) for v in (boxes[0] if frames == "first" else np.median(np.asarray(boxes, np.float64), axis=0)))
    ref = tuple(float(v) for v in ref_box)
    scale = (ref[3] - ref[1]) / (body[3] - body[1])
    ref_x, ref_y = anchor_point(ref, anchor)
    body_x, body_y = anchor_point(body, anchor)
    shift = (ref_x - scale * body_x, ref_y - scale * body_y)
    height, width = poses[0].shape[:2]
    said = cut_warnings(ref, body, width, height, source, first)
    for message in said:
        warnings.warn(message, InputWarning, stacklevel=4)  # pointing at whoever called align() or animate()
    return Alignment(scale, shift, ref, body, anchor, frames, background, said)


def aligned_frames(
    poses, ref_box, *, anchor: str = AlignConfig.anchor, frames: str = AlignConfig.frames, background=None, source: str = "motion"
) -> tuple[Alignment, Iterator]:
    """``(Alignment, the frames of poses moved by it)``: the one alignment of ``align`` and ``animate --align``.

    The transform is planned now (``plan_alignment``, the same arguments; its ``UserError`` raised
    here); the moved frames come one at a time as they are read, so a memory-mapped clip is never
    held whole.
    """
    alignment = plan_alignment(poses, ref_box, anchor=anchor, frames=frames, background=background, source=source)
    return alignment, map(alignment.apply, poses)


# ----------------------------------------------------------------------------- the reference person


@dataclass(frozen=True)
class ReferenceBox:
    box: tuple[int, int, int, int]  # in the fitted square
    source: str  # ref-box, alpha, matte or densepose
    notes: tuple[str, ...] = ()  # why the sources before it were not used


def parse_box(text) -> tuple[int, int, int, int]:
    """``--ref-box``: ``crop.parse_box`` of pixels of the reference image."""
    from .crop import parse_box as parse

    return parse(text, "--ref-box", "pixels of the reference")


def fitted_box(mask, size: int, fit: str) -> tuple[int, int, int, int] | None:
    """The box of a reference-image mask after ``crop.fit_square`` (the reference's fit)."""
    import numpy as np

    from .crop import fit_square

    plane = np.where(mask, np.uint8(255), np.uint8(0))
    fitted = fit_square(np.repeat(plane[..., None], 3, axis=2), size, fit, (0, 0, 0))
    return mask_box(fitted[..., 0] >= 128)


def reference_box(
    reference: Path | str,
    size: int = AlignConfig.size,
    fit: str = AlignConfig.fit,
    *,
    ref_box=None,
    models: Path | str | None = None,
    segmenter: Callable | None = None,
    estimator: Callable | None = None,
) -> ReferenceBox:
    """Where the person of ``reference`` is in the fitted square, and which source said so.

    Sources, first found wins: ``ref_box``, the alpha channel, the PaddleSeg person mask
    (``segmenter``, default the installed default model with weights already present), DensePose
    (``estimator``, default detectron2 with weights already present); otherwise ``UserError``.
    Nothing is downloaded here.
    """
    import numpy as np

    from . import media

    reference = Path(reference)
    image = media.read_image(reference)
    height, width = image.shape[:2]
    notes: list[str] = []

    def found(mask, source: str) -> ReferenceBox | None:
        box = fitted_box(mask, size, fit)
        if box is None:
            notes.append(f"{source}: the person is outside the fitted {size}x{size} square (--fit {fit})")
            return None
        return ReferenceBox(box, source, tuple(notes))

    if ref_box is not None:
        x0, y0, x1, y1 = parse_box(ref_box)
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:  # as crop --box: no silent clipping to the image
            raise UserError(f"--ref-box {ref_box}: outside the {width}x{height} reference {reference}; "
                            f"0 <= x0, 0 <= y0, x1 <= {width} and y1 <= {height}")
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = True
        result = found(mask, "ref-box") if mask.any() else None
        if result is None:
            raise UserError(f"--ref-box {ref_box}: outside the {width}x{height} reference {reference} or its fitted square (--fit {fit})")
        return result

    alpha = media.read_alpha(reference)
    if alpha is None:
        notes.append("alpha: the image has no alpha channel")
    elif (alpha >= 128).all() or not (alpha >= 128).any():
        notes.append("alpha: the alpha channel does not separate the person (all opaque or all transparent)")
    elif (result := found(alpha >= 128, "alpha")) is not None:
        return result

    if segmenter is None:
        segmenter = _installed_segmenter(models, notes)
    if segmenter is not None:
        person = np.asarray(segmenter(image[None]))[0] >= 0.5  # PaddleSeg's argmax (matting.MatteConfig)
        if not person.any():
            notes.append("matte: found no person")
        elif (result := found(person, "matte")) is not None:
            return result

    if estimator is None:
        estimator = _installed_estimator(models, notes)
    if estimator is not None:
        from .densepose.charts import frame_labels
        from .densepose.config import DensePoseConfig

        defaults = DensePoseConfig()
        labels, _ = frame_labels(estimator([image])[0], height, width, defaults.min_score, defaults.max_people)
        if not labels.any():
            notes.append("densepose: found no person")
        elif (result := found(labels > 0, "densepose")) is not None:
            return result

    from .weights_manifest import download_command

    raise UserError(
        f"{reference}: cannot tell where the person is ({'; '.join(notes)}); pass --ref-box x0,y0,x1,y1 (reference pixels) "
        "to `magicanimate align`, use an image with a transparent background, or get the matting weights "
        f"(`{download_command('matting', models)}`)"
    )


def _installed_segmenter(models, notes: list[str]):
    import importlib.util

    from .matting import DEFAULT_MODEL, load_segmenter, weights_path

    if importlib.util.find_spec("paddle") is None or importlib.util.find_spec("paddleseg") is None:
        notes.append("matte: PaddlePaddle/PaddleSeg are not installed (see docs/matting.md)")
        return None
    if not weights_path(DEFAULT_MODEL, models).is_file():
        notes.append(f"matte: no weights at {weights_path(DEFAULT_MODEL, models)}")
        return None
    try:
        return load_segmenter(DEFAULT_MODEL, models, device="auto", download=False)
    except UserError as exc:  # not installed (MissingDependency) or no weights: the next source
        notes.append(f"matte: {exc}")
        return None


def _installed_estimator(models, notes: list[str]):
    from .densepose.estimator import detectron2_available, load_estimator, resolve_model, weights_path
    from .weights_manifest import download_command

    if not detectron2_available():
        notes.append("densepose: detectron2 is not installed (see docs/densepose.md)")
        return None
    spec, _ = resolve_model(None)
    if not weights_path(spec, models).is_file():
        notes.append(f"densepose: no weights at {weights_path(spec, models)} (`{download_command('densepose', models)}`)")
        return None
    try:
        return load_estimator(models=models)
    except UserError as exc:
        notes.append(f"densepose: {exc}")
        return None


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class AlignResult:
    reference: str
    motion: str
    output: str
    frames: int
    fps: float
    size: int
    fit: str
    ref_box_source: str
    transform: dict
    meta: str | None = None  # the clip's meta.json that records the transform
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # InputWarning messages: the run went on (palette.motion_warnings, cut_warnings)

    def to_dict(self) -> dict:
        return asdict(self)


def align(
    reference: Path | str,
    motion: Path | str,
    output: Path | str,
    *,
    anchor: str = AlignConfig.anchor,
    frames: str = AlignConfig.frames,
    ref_box: str | None = None,
    size: int = AlignConfig.size,
    fit: str = AlignConfig.fit,
    models: Path | str | None = None,
    allow_truncated: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    segmenter: Callable | None = None,
    estimator: Callable | None = None,
) -> AlignResult:
    """Write the DensePose ``motion`` moved onto the person of ``reference`` to ``output``.

    ``motion``: a DensePose video, a frames folder, or a clip folder (reads ``densepose/`` and
    records the transform in its ``meta.json``). ``output``: a video path, or a folder that
    receives ``00000.png``, ... (lossless). Frames are ``size×size``, fitted like ``animate``
    fits them, so ``animate`` uses them as they are. ``segmenter``/``estimator`` replace the
    installed PaddleSeg/detectron2 models (see ``reference_box``). A motion video that does not
    decode to its end is refused unless ``allow_truncated``. A motion that is not DensePose in
    MagicAnimate's colours, or shows nobody, is warned about as ``animate`` does (``InputWarning``,
    the result's ``warnings``), or refused with ``strict``: judged in the first pass over the motion,
    before its frames are fitted (no progress) and before the reference's person is looked for.
    """
    import numpy as np

    from . import clip as clip_folder
    from . import media
    from .crop import fit_square
    from .densepose.palette import clip_background, judged_frames, motion_warnings
    from .files import discard, temp_beside
    from .folders import taking_back

    config = AlignConfig(anchor, frames, size, fit)
    config.validate()
    reference, motion, output = media.input_path(reference), media.input_path(motion), media.output_path(output)
    media.check_sequence_output(output)
    if not motion.exists():
        raise UserError(f"{motion}: no such file or folder")
    clip = None
    source = motion
    if clip_folder.is_clip_folder(motion):
        source = clip_folder.motion_of(motion)
        clip = clip_folder.Clip(motion)
    media.check_output(output, overwrite, protect=(reference, source, *clip_folder.parts_of(motion)))  # a clip: none of it written over
    progress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    info = media.probe(source, clip_folder.clip_fps(motion) if clip is not None else None)
    media.check_clip_fits(output, size, size, info.frames)  # a GIF's or WebP's limits, before the motion is read
    params = {"reference": str(reference), "output": str(output), **asdict(config), "ref_box": ref_box}
    media.read_image(reference)  # a missing or unreadable reference, and a malformed --ref-box, before any work
    # a --ref-box outside the reference or its fitted square too: not after a pass over the whole motion
    given = reference_box(reference, size, fit, ref_box=ref_box) if ref_box is not None else None
    recorded, scratch = False, None
    with taking_back(output.parent):  # a refused or failed run leaves no new empty folder
        try:
            # a first pass: the border colours, and the frames motion_warnings judges (8 spread over the clip)
            wanted = set(judged_frames(info.frames))
            sample: list = []
            read = 0

            def keeping(frames):
                nonlocal read
                for frame in frames:
                    if read in wanted:
                        sample.append(frame)
                    read += 1
                    yield frame

            background = clip_background(keeping(media.iter_frames(source, same_size=False, allow_truncated=allow_truncated)))
            if read == 0:
                raise UserError(f"{source}: no frames to align")
            noticed = None
            if sample:  # not DensePose, or nobody: said (or refused) before the frames are fitted, any model or record
                noticed = motion_warnings(np.stack([fit_square(frame, size, fit, background) for frame in sample]), source, strict)
                sample.clear()
            found = given or reference_box(reference, size, fit, models=models, segmenter=segmenter, estimator=estimator)
            scratch = temp_beside(output, directory=False, suffix=".motion.u8")  # the next run cleans it after a kill
            store = media.FrameStore(scratch, size)
            for frame in media.iter_frames(source, same_size=False, allow_truncated=allow_truncated):  # every frame is fitted on its own, as in animate
                store.append(fit_square(frame, size, fit, background))
                progress("read", store.count, info.frames)
            poses = store.frames()
            if len(poses) == 0:
                raise UserError(f"{source}: no frames to align")
            if noticed is None:  # the first pass found none of the frames the count promised
                noticed = motion_warnings(poses, source, strict)
            if clip is not None:
                clip.start(STAGE, params)
                recorded = True
            alignment, moved = aligned_frames(poses, found.box, anchor=anchor, frames=frames, background=background, source=str(source))
            sound = media.kept_sound(clip_folder.sound_of(motion) if clip is not None else source, output)  # a clip's: its video's
            with media.FrameWriter(output, info.fps, overwrite, **sound) as writer:
                for index, pose in enumerate(moved):
                    writer.write(pose)
                    progress("align", index + 1, len(poses))
            count = len(poses)
            del poses
        except BaseException as exc:
            if recorded:
                clip.fail(STAGE, str(exc) or exc.__class__.__name__, params=params)
            raise
        finally:
            discard(scratch)
    transform = {**alignment.to_dict(), "ref_box_source": found.source}
    if clip is not None:
        clip.finish(STAGE, transform)
    return AlignResult(
        reference=str(reference),
        motion=str(motion),
        output=str(output),
        frames=count,
        fps=info.fps,
        size=size,
        fit=fit,
        ref_box_source=found.source,
        transform=transform,
        meta=str(motion / clip_folder.META) if clip is not None else None,
        notes=list(found.notes),
        seconds=round(time.perf_counter() - started, 3),
        warnings=[*noticed, *alignment.warnings],
    )
