"""The ``animate()`` stage: check every option, fit the reference and the motion, render the
animation (one process, or one per ``--devices`` device) and write the outputs together."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import InputWarning, UserError, shown
from .config import POSE_BACKGROUND, AnimateConfig, AnimateResult, check_dtype
from .distributed import parse_devices, run_distributed
from .loading import auto_dtype, load_pipeline, pin_cpu_kernels


def grid_path(output: Path) -> Path:
    """Where ``--grid`` writes beside ``output``: ``out_grid.mp4`` for ``out.mp4``, ``out_grid`` for a folder."""
    from ..media import is_video_output

    if is_video_output(output):
        return output.with_name(f"{output.stem}_grid{output.suffix}")
    return output.with_name(f"{output.name}_grid")


def animate(
    reference: Path | str,
    motion: Path | str,
    output: Path | str,
    *,
    extra_references: Sequence[Path | str] | None = None,
    models: Path | str | None = None,
    steps: int = AnimateConfig.steps,
    guidance_scale: float = AnimateConfig.guidance_scale,
    seed: int = AnimateConfig.seed,
    size: int = AnimateConfig.size,
    context_frames: int = AnimateConfig.context_frames,
    context_overlap: int = AnimateConfig.context_overlap,
    fit: str = AnimateConfig.fit,
    context_schedule: str = AnimateConfig.context_schedule,
    context_fusion: str = AnimateConfig.context_fusion,
    device: str = "auto",
    dtype: str = "auto",
    fps: float | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    grid: bool = False,
    keep_aspect: bool = False,
    audio: Path | str | None = None,
    audio_start: float | str | None = None,
    align: bool = False,
    devices: str | None = None,
    allow_truncated: bool = False,
    strict: bool = False,
    fast: bool = False,
    compile: bool = False,
    overwrite: bool = False,
    progress=None,
    pipeline=None,
) -> AnimateResult:
    """Animate the person of ``reference`` along the DensePose ``motion`` and write ``output``.

    ``motion`` is a video (at its own rate), a folder of frames (25 fps unless ``fps``) or a clip folder (its ``densepose/``, at
    the rate its ``meta.json`` records; another ``fps`` is refused, as for a video). ``start`` and ``end`` (seconds, or ``[HH:]MM:SS.ms`` as ``download --start`` takes) animate
    a part of it: the frames whose time ``i / fps`` lies in ``[start, end)``, the same frames the whole run reads at
    those indices (only they are fitted and kept; a video is not decoded past ``end``); an ``end`` past the motion's
    end is its end (the result's ``start``/``end`` say the part used). ``output`` is a video
    path or, without a video extension, a folder that receives one PNG per motion frame. The
    output appears atomically and an existing one is only replaced with ``overwrite``. An
    interrupted run resumes after its last finished denoising step when started again with the
    same inputs and settings (see ``resume.py``). ``devices`` (``"0,1,2,3"``; ``"cpu,cpu"`` runs the same on CPU processes) splits the
    windows of every denoising step across one process per device (a ``device`` other than ``"auto"`` beside it is refused). ``fast`` selects the pipeline's
    fast path (within the parity contract, not bitwise); ``compile`` is the fast path with its models
    compiled by ``torch.compile`` (within the contract too; the first call of a process compiles). ``pipeline`` reuses an
    already loaded ``load_pipeline()`` (batch jobs). ``align`` first fits the poses to the
    reference person exactly as ``magicanimate align`` does with its defaults (see ``align.py``).
    ``extra_references`` (image paths) are more views of the same person (a back view, a face
    close-up), each read and fitted as ``reference`` is; the animator attends over all of them in
    the order given (``animate/reference.py``), ``reference`` first. An extension of the method:
    the published weights were trained with one reference. ``align`` and the grid's reference panel
    take ``reference`` alone; the resume checkpoint belongs to the run with the same extra images.
    The main output and the grid are committed together or not at all. ``keep_aspect`` (with
    ``fit`` ``"pad"`` or ``"stretch"``) writes frames of the motion's aspect, the long side
    ``size`` pixels: the padding cut off, or the squash undone (``crop.unfit_square``); the
    animation itself stays square. The grid's panels take the written frames' size too: the poses
    unfitted as the frames are, the reference at its own aspect inside its panel, padded white. ``audio`` (a video or sound file, or a clip
    folder for the video it was made from; a video ``output``) gives the video (and the grid)
    that sound (its first stream) from its start (the file's, where the motion's first frame is read; with ``start``,
    from the part's first frame's time, as the whole run gives those frames), or
    ``audio_start`` after it (seconds, or ``[HH:]MM:SS.ms`` as ``download --start`` takes), cut to
    the animation's length (``media.FrameWriter``). A motion video that does
    not decode to its end is refused unless ``allow_truncated`` (a part that ends before it is not read that far: damage
    after the part is not looked for). ``guidance_scale`` is the official
    appearance guidance (the prediction with the reference's features pushed away from the one
    without them); at 1 or less there is no guidance (diffusers' rule) and the UNet runs one half.

    Every option is checked before anything heavy is imported or read, in this order: the
    settings (``end`` after ``start``), the output's kind, the fps, dtype and devices, the weights folder, the outputs (never
    an input, inside one, or holding one), the device, the window length, the reference image and
    the motion's header (a ``start`` at or past its last frame, a part without a frame). ``check_animate`` makes the same checks without the work. Once the motion
    is read, and before the models load, a motion with no person or one not drawn in the DensePose
    palette (a raw video, an IUV rendering) is warned about (``InputWarning``; ``densepose.palette.motion_warnings``)
    and listed in the result's ``warnings``: the run goes on, unless ``strict``, which refuses it
    there (``UserError``). An ``audio`` sound that ends before the animation does is warned about
    there too (``_short_sound``; not refused by ``strict``, which is about the motion); one with
    less than a frame of sound from its start (or ``audio_start``) on is refused with the checks.
    """
    pin_cpu_kernels()  # first: anything below may import torch
    from .. import media
    from ..files import claim, discard, temp_beside

    request = _checked(reference, motion, output, extra_references=extra_references, models=models, steps=steps, guidance_scale=guidance_scale, seed=seed,
                       size=size, context_frames=context_frames, context_overlap=context_overlap, fit=fit,
                       context_schedule=context_schedule, context_fusion=context_fusion, device=device,
                       dtype=dtype, fps=fps, start=start, end=end, grid=grid, keep_aspect=keep_aspect, audio=audio, audio_start=audio_start, align=align, devices=devices, compile=compile,
                       overwrite=overwrite, pipeline=pipeline)  # fmt: skip
    config, reference, motion, output = request.config, request.reference, request.motion, request.output
    device_list, grid_output, ref_image, info = request.devices, request.grid_output, request.ref_image, request.info
    from ..crop import fit_square, unfit_box  # the animator's input fitting lives with the other crops
    from ..densepose.palette import motion_warnings

    pose_fill = POSE_BACKGROUND
    if align:  # as `magicanimate align`; the reference's person is looked for once the motion passed motion_warnings
        from ..align import reference_box
        from ..densepose.palette import clip_background

        pose_fill = clip_background(_part_frames(motion, *request.part, allow_truncated))  # viridis(0) for our renders

    from ..folders import taking_back
    from ..times import millis_down
    from ..weights_layout import WeightLayout, resolve_models_dir
    from .resume import StepCheckpoint, run_key

    started = time.perf_counter()
    run = grid_run = scratch = aligned_scratch = None
    with taking_back(output.parent):  # a refused or failed run leaves no new empty folder (a resume checkpoint keeps its own)
        try:
            run = claim(output)  # one run at a time per output: a second one is refused, not mixed into this one's resume
            grid_run = claim(grid_output) if grid_output else None  # and per grid: another run's -o X_grid.mp4 is refused too
            scratch = temp_beside(output, directory=False, suffix=".motion.u8")
            aligned_scratch = temp_beside(output, directory=False, suffix=".aligned.u8") if align else None
            store = media.FrameStore(scratch, size)
            for frame in _part_frames(motion, *request.part, allow_truncated):  # each fitted on its own
                store.append(fit_square(frame, size, fit, pose_fill))
            poses = store.frames()
            if len(poses) == 0:
                raise UserError(f"{motion}: no frames to animate")
            noticed = motion_warnings(poses, motion, strict)  # said now, before the long work, which goes on (unless strict)
            noticed += _short_sound(request, len(poses))
            unaligned = alignment = None
            if align:  # the reference's person: a user error (or a model of its own) before the animator loads
                ref_found = reference_box(reference, size, fit, models=models)
                unaligned, (store, alignment) = store, _align_store(store, aligned_scratch, ref_found.box, pose_fill, motion)
                noticed += list(alignment.warnings)  # a body or a reference person cut by the frame (align.cut_warnings)
                poses = store.frames()
            distributed = len(device_list) > 1
            if not distributed and pipeline is None:
                pipeline = load_pipeline(models, device_list[0] if device_list else device, dtype)
            if distributed:
                used_device, used_dtype = ",".join(device_list), dtype if dtype != "auto" else auto_dtype(device_list[0])
            else:
                used_device, used_dtype = str(pipeline.unet.device), str(pipeline.unet.dtype).replace("torch.", "")
                _check_window(context_frames, pipeline.unet.config.motion_max_seq_length)  # said before the motion if the header told
            settings = {
                **asdict(config), "models": str(resolve_models_dir(models).resolve()), "device": used_device, "dtype": used_dtype,
                "weights": WeightLayout(resolve_models_dir(models)).identity(),  # weights replaced or converted: another run
                "fast": "compile" if compile else fast,  # another computation: never resume one from the other
            }
            if request.part != (0, None):  # a part resumes only its own run, even where another has the same poses
                settings["part"] = list(request.part)
            checkpoint = StepCheckpoint(output, run_key((ref_image, *request.extra_images), poses, settings))
            resumed = checkpoint.load()
            job = _Job(ref_image, store.path, len(poses), size, output, grid_output, info.fps, overwrite,
                       {"num_inference_steps": steps, "guidance_scale": guidance_scale, "seed": seed,
                            "context_frames": context_frames, "context_overlap": context_overlap, "context_schedule": context_schedule,
                            "context_fusion": context_fusion, "fast": _fast_path(fast, compile),
                            "start_step": resumed[0] if resumed else 0, "latents": resumed[1] if resumed else None},
                       checkpoint, unaligned.path if unaligned else None, (info.width, info.height, fit) if keep_aspect else None,
                       request.audio, request.audio_start, request.grid_reference, request.extra_images)
            if distributed:
                run_distributed(job, device_list, models, dtype)
            else:
                _render(job, pipeline, progress, distributed=False)
            checkpoint.remove()
            x0, y0, x1, y1 = unfit_box(info.width, info.height, size, fit) if keep_aspect else (0, 0, size, size)
            width, height = x1 - x0, y1 - y0
            if media.needs_even_sides(output):  # H.264's even sides (media.FrameWriter pads, and warns)
                width, height = width + width % 2, height + height % 2
            del poses
        finally:
            discard(scratch)
            discard(aligned_scratch)
            for held in (grid_run, run):
                if held is not None:
                    held.release()
    return AnimateResult(
        output=str(output),
        grid=str(grid_output) if grid_output else None,
        frames=job.frames,
        fps=info.fps,
        size=size,
        seed=seed,
        steps=steps,
        device=used_device,
        dtype=used_dtype,
        seconds=round(time.perf_counter() - started, 3),
        width=width,
        height=height,
        start=millis_down(request.part[0] / info.fps),
        end=millis_down((request.part[0] + job.frames) / info.fps),
        first_frame=request.part[0],
        audio=str(request.audio) if request.audio else None,
        audio_start=request.audio_start if request.audio else None,
        resumed_from_step=resumed[0] if resumed else 0,
        alignment={**alignment.to_dict(), "ref_box_source": ref_found.source} if alignment else None,
        warnings=tuple(noticed),
    )


def _short_sound(request: _Request, frames: int) -> list[str]:
    """Warn (``InputWarning``, from animate's caller) when the ``--audio`` sound, from its first
    picture or ``--audio-start``, ends more than a frame before the ``frames`` of the animation do:
    the rest of the video is silent. Returns the messages (none or one)."""
    if request.audio is None:
        return []
    from ..times import seconds_text

    seconds = frames / request.info.fps
    left = request.sound_seconds - request.audio_start
    if left >= seconds - 1 / request.info.fps:
        return []
    since = f" from --audio-start {request.audio_start:g} s" if request.audio_start else ""
    if request.sound_from_part:
        since = f" from the part's start at {seconds_text(request.audio_start)} s"
    message = (f"{shown(request.output)}: the sound of {shown(request.audio)} ends {seconds - left:.2f} s before the animation does "
               f"({left:.2f} s of sound{since} for {seconds:.2f} s of frames); the rest is silent")
    warnings.warn(message, InputWarning, stacklevel=3)
    return [message]


def check_animate(*args, **kwargs) -> None:
    """Every check ``animate(*args, **kwargs)`` makes before it loads a pipeline or reads the
    motion's frames: the settings, the weights folder, the outputs, the device, the reference image
    and the motion's header. A batch worker or ``serve`` runs it before it loads (or swaps) the
    pipeline for a task, so a task with a missing input or a taken output fails at once. With
    ``align``, finding the person in the reference may need a model of its own (``align.reference_box``):
    that one is left to the run."""
    import inspect

    pin_cpu_kernels()  # first, as in animate: the checks may import torch
    arguments = inspect.signature(animate).bind(*args, **kwargs)
    arguments.apply_defaults()
    _checked(**arguments.arguments)


@dataclass(frozen=True)
class _Request:
    """A checked call of ``animate``: its settings, paths, devices, and the inputs read so far."""

    config: AnimateConfig
    reference: Path
    motion: Path
    output: Path
    grid_output: Path | None
    devices: list[str]
    ref_image: object  # uint8 size×size×3
    info: object  # media.VideoInfo
    audio: Path | None = None  # checked: it has sound
    audio_start: float = 0.0  # seconds into it, checked: a frame or more before its end
    sound_seconds: float = 0.0  # how much sound it has from its start on (media.sound_end)
    grid_reference: object = None  # with grid and keep_aspect: the reference panel, of the written frames' size (_grid_reference)
    part: tuple = (0, None)  # the motion's frames animated, first and stop (None: to its end), from start and end (_part)
    sound_from_part: bool = False  # audio_start is the part's start (no --audio-start given)
    extra_images: tuple = ()  # the extra references, each uint8 size×size×3 as ref_image


def _checked(reference, motion, output, *, extra_references, models, steps, guidance_scale, seed, size, context_frames, context_overlap, fit,
             context_schedule, context_fusion, device, dtype, fps, start, end, grid, keep_aspect, audio, audio_start, align, devices, compile,
             overwrite, pipeline,
             **_) -> _Request:  # fmt: skip
    """``animate``'s checks, in its order (see its docstring); the rest of its arguments are ignored."""
    from .. import media
    from ..clip import check_clip_fps, clip_fps, motion_of, parts_of
    from ..crop import fit_square  # the animator's input fitting lives with the other crops
    from ..device import check_device

    config = AnimateConfig(steps, guidance_scale, seed, size, context_frames, context_overlap, fit, context_schedule, context_fusion)
    config.validate()
    from ..times import parse_time

    first_time, end_time = parse_time(start, "--start"), parse_time(end, "--end")
    if end_time is not None and end_time <= (first_time or 0.0):
        raise UserError(f"--start {start or 0} --end {end}: the end must come after the start")
    reference, motion, output = media.input_path(reference), media.input_path(motion), media.output_path(output)
    extras = tuple(media.input_path(extra) for extra in extra_references or ())
    clip_parts = []
    if motion.is_dir() and not media.list_frame_files(motion):
        clip_parts = parts_of(motion)  # a clip folder: none of it is written over (-o CLIP/images)
        source = motion_of(motion)  # a clip folder: its densepose/ (refused without one)
        if source != motion:
            check_clip_fps(motion, fps)
            motion, fps = source, fps or clip_fps(motion)  # at the clip's own rate
    media.check_sequence_output(output)
    if keep_aspect and fit == "crop":
        raise UserError("--keep-aspect: only with --fit pad or --fit stretch (--fit crop cuts the motion's sides away, so "
                        "the output cannot have its aspect)")
    sound_from, sound_seconds = None, 0.0
    if audio_start is not None:
        if audio is None:
            raise UserError(f"--audio-start {audio_start}: only with --audio (the file whose sound the output gets)")
        sound_from = parse_time(audio_start, "--audio-start")
    if audio is not None:
        media.check_holds_sound(output)  # a folder, a GIF, a WebP: refused before any work
        audio = media.input_path(audio)
        if audio.is_dir():  # a clip folder: the video it was made from
            from ..clip import source_video

            audio = source_video(audio)
        audio = media.check_audio_source(audio)
        sound_seconds = media.sound_end(audio)  # by its last packet, not the header's duration
        if sound_from and sound_from >= sound_seconds:  # (missing, estimated or the picture's)
            raise UserError(f"--audio-start {audio_start}: {shown(audio)} has {max(sound_seconds, 0):.2f} s of sound; start it earlier")
    if fps is not None:
        from ..frames import check_fps

        check_fps(fps)
    check_dtype(dtype)
    device_list = parse_devices(devices)
    if device_list and device != "auto":  # it was ignored: each process runs on its --devices entry
        raise UserError(f"--device {device} --devices {devices}: --devices names the device of each process; "
                        "leave --device out (or leave --devices out to run in one process)")
    if not device_list:
        check_device(device)
    if pipeline is None:  # no torch: missing or damaged weights are said before any heavy import or reading
        from ..models import check_models

        check_models(models)
    inputs = (reference, motion, *extras, *clip_parts, audio)  # --audio's file too: its sound is read while the output is written
    media.check_output(output, overwrite, protect=inputs)
    grid_output = grid_path(output) if grid else None
    if grid_output is not None:
        media.check_output(grid_output, overwrite, protect=(*inputs, output))
    if pipeline is None:  # a missing GPU is said now, not after reading the motion
        from ..device import resolve_device
        from .distributed import check_devices

        if device_list:
            check_devices(device_list)
        else:
            resolve_device(device)
    if compile:
        from ..device import check_compile, resolve_device

        check_compile(device_list[0] if device_list else str(pipeline.unet.device) if pipeline else resolve_device(device))
    _check_window(context_frames, pipeline.unet.config.motion_max_seq_length if pipeline is not None else _motion_positions(models))
    image = media.read_still(reference)  # an animated GIF is no photo: refused, not taken at its first frame
    ref_image = fit_square(image, size, fit, (255, 255, 255))
    extra_images = tuple(fit_square(media.read_still(extra), size, fit, (255, 255, 255)) for extra in extras)  # as the reference
    info = media.probe(motion)
    if fps is not None and not motion.is_dir() and media.is_video(motion) and not media.same_rate(info.fps, fps):
        # a label alone would play the motion faster or slower, and out of step with its sound
        raise UserError(f"--fps {fps:g}: {shown(motion)} is read at its own {info.fps:g} fps; --fps is for a frames "
                        f"folder (to re-time the video: magicanimate frames {shown(motion)} --fps {fps:g} -o FOLDER)")
    info = replace(info, fps=fps) if fps is not None else info
    part = _part(motion, info, first_time, end_time, start, end)
    _check_outputs_fit(output, grid_output, info, part, size, fit, keep_aspect, align)
    from_part = audio is not None and sound_from is None and part[0] > 0
    if from_part:  # the sound of the part's time, as the whole run would give those frames
        sound_from = part[0] / info.fps
    if audio is not None and sound_seconds - (sound_from or 0.0) < 1 / info.fps:  # a sliver, or no packet for ffmpeg to mux at the end
        frame = f"less than one frame ({1 / info.fps:.2f} s at {info.fps:g} fps)"
        if from_part:
            from ..times import seconds_text

            raise UserError(f"--start {start}: {shown(audio)} has {max(sound_seconds, 0):.2f} s of sound, "
                            f"{max(sound_seconds - sound_from, 0):.3f} s of it from the part's start at {seconds_text(sound_from)} s: "
                            f"{frame}; give --audio-start T to take the sound from elsewhere")
        if sound_from:
            raise UserError(f"--audio-start {audio_start}: {shown(audio)} has {sound_seconds:.2f} s of sound, "
                            f"{sound_seconds - sound_from:.3f} s of it from there: {frame}; start it earlier")
        raise UserError(f"{shown(audio)}: has {max(sound_seconds, 0):.2f} s of sound: {frame}; give --audio another file")
    grid_reference = _grid_reference(image, info, size, fit) if grid_output is not None and keep_aspect else None
    return _Request(config, reference, motion, output, grid_output, device_list, ref_image, info, audio, sound_from or 0.0, sound_seconds,
                    grid_reference, part, from_part, extra_images)


def _check_outputs_fit(output: Path, grid_output: Path | None, info, part: tuple, size: int, fit: str, keep_aspect: bool,
                       align: bool) -> None:
    """A GIF's or WebP's limits (``media.check_clip_fits``: its sides, and the disk its frames are
    kept on until it is encoded), said before the models load rather than after the whole run.
    The grid is counted with its three panels (reference, poses, animation; ``--align`` adds one),
    and beside the output's own stored frames, which its folder's disk holds at the same time."""
    from .. import media
    from ..crop import unfit_box

    frames = (part[1] if part[1] is not None else info.frames) - part[0]
    x0, y0, x1, y1 = unfit_box(info.width, info.height, size, fit) if keep_aspect else (0, 0, size, size)
    media.check_clip_fits(output, x1 - x0, y1 - y0, frames)
    if grid_output is not None:
        from ..media.writer import STORED

        kept = (x1 - x0) * (y1 - y0) * 3 * frames if output.suffix.lower() in STORED else 0
        media.check_clip_fits(grid_output, (4 if align else 3) * (x1 - x0), y1 - y0, frames, kept)


def _part(motion: Path, info, first_time: float | None, end_time: float | None, start, end) -> tuple[int, int | None]:
    """``(first, stop)``: the frames of ``motion`` (``info``: its fps and length) whose time ``i / fps``
    lies in ``[first_time, end_time)`` (``--start``, ``--end``, as ``start`` and ``end`` were typed),
    as ``download`` cuts; stop None: to the motion's end (no ``--end``, or one at or past it). A start
    at or past the last frame, or a part without a frame, is refused, saying the motion's length."""
    from ..times import frame_at, seconds_text

    if first_time is None and end_time is None:
        return 0, None
    length = f"{shown(motion)} is {info.frames / info.fps:.2f} s long ({info.frames} frames at {info.fps:g} fps)"
    first = frame_at(first_time or 0.0, info.fps)
    if first >= info.frames:
        latest = seconds_text((info.frames - 1) / info.fps)  # a start that still gets the last frame
        raise UserError(f"--start {start}: {length}, its last frame at {latest} s; give a --start of {latest} or less")
    stop = None if end_time is None else frame_at(end_time, info.fps)
    if stop is not None and stop <= first:
        raise UserError(f"--start {start or 0} --end {end}: no frame of {shown(motion)} ({info.fps:g} fps) lies between them; "
                        f"make the part at least {1 / info.fps:.3g} s long (one frame)")
    return first, stop if stop is not None and stop < info.frames else None


def _part_frames(motion: Path, first: int, stop: int | None, allow_truncated: bool):
    """The frames ``first`` to ``stop`` (excluded; None: to the end) of ``motion``, one at a time, as
    ``media.iter_frames`` gives them: of a frames folder only those files are read; a video is
    decoded from its start (the frames before ``first`` skipped, so they are exactly the whole
    run's) and its ffmpeg stopped after ``stop`` (a damage after the part is not looked for)."""
    import itertools

    from .. import media

    if motion.is_dir() and (first or stop is not None):
        for file in media.list_frame_files(motion)[first:stop]:
            yield media.read_image(file)
        return
    frames = media.iter_frames(motion, same_size=False, allow_truncated=allow_truncated)
    try:
        yield from itertools.islice(frames, first, stop)
    finally:
        frames.close()  # ffmpeg stops (killed) when the part ends before the motion does


def _grid_reference(image, info, size: int, fit: str):
    """The grid's reference panel with ``keep_aspect``: the other panels take the written frames'
    ``unfit_box`` size, and the reference its own aspect inside it, padded white as ``fit_square``
    pads it (the fitted square, squashed or padded to the motion's aspect, was distorted or cut);
    ``None`` for a square motion (the fitted square as it is)."""
    import numpy as np
    from PIL import Image, ImageOps

    from ..crop import unfit_box

    x0, y0, x1, y1 = unfit_box(info.width, info.height, size, fit)
    if (x1 - x0, y1 - y0) == (size, size):
        return None
    return np.asarray(ImageOps.pad(Image.fromarray(image), (x1 - x0, y1 - y0), Image.BICUBIC, color=(255, 255, 255)))


def _fast_path(fast: bool, compile: bool):
    """The pipeline's ``fast`` argument: ``--compile`` is the whole fast path, compiled."""
    if not compile:
        return fast
    from .pipeline import FastPath

    return FastPath(compile=True)


def _align_store(store, path: Path, ref_box, background, motion: Path):
    """The fitted poses (a ``media.FrameStore``) moved onto ``ref_box`` (``align.aligned_frames``, as ``align``), in a second store at ``path``."""
    from .. import media
    from ..align import aligned_frames

    alignment, moved = aligned_frames(store.frames(), ref_box, background=background, source=str(motion))
    aligned = media.FrameStore(path, store.size)
    for pose in moved:
        aligned.append(pose)
    return aligned, alignment


def _motion_positions(models) -> int | None:
    """The positions the motion modules know, from the temporal checkpoint's header (safetensors)
    or its mapped pickle, without loading its tensors; None when it does not say."""
    from ..weights_layout import WeightLayout, resolve_models_dir
    from .weights import motion_positions

    try:
        return motion_positions(WeightLayout(resolve_models_dir(models)))
    except (UserError, OSError):  # an unreadable checkpoint is said, with its fix, when the weights load
        return None


def _check_window(context_frames: int, longest: int | None) -> None:
    if longest is not None and context_frames > longest:
        raise UserError(f"--context-frames {context_frames}: these motion modules know positions up to {longest}; use at most {longest}")


@dataclass(frozen=True)
class _Job:
    """Everything a (possibly spawned) renderer needs; the poses wait in a memory-mapped file."""

    reference: object
    poses_path: Path
    frames: int
    size: int
    output: Path
    grid_output: Path | None
    fps: float
    overwrite: bool
    call: dict
    checkpoint: object
    unaligned_path: Path | None = None  # with --align: the poses before alignment (a grid panel)
    aspect: tuple | None = None  # with --keep-aspect: (width, height, fit) of the motion, for crop.unfit_square
    audio: Path | None = None  # with --audio: the sound the videos get
    audio_start: float = 0.0  # with --audio-start: where in it
    grid_reference: object = None  # with --keep-aspect and a motion not square: the grid's reference panel
    extra_references: tuple = ()  # --extra-reference: more fitted reference images (uint8 size×size×3), after ``reference``

    def poses(self, path: Path | None = None):
        import numpy as np

        return np.memmap(path or self.poses_path, dtype=np.uint8, mode="r", shape=(self.frames, self.size, self.size, 3))


def _render(job: _Job, pipeline, progress, distributed: bool) -> None:
    """Run the pipeline on ``job``; the process that decodes (rank 0) writes the outputs."""
    import numpy as np
    import torch

    from .. import media
    from ..crop import unfit_square

    poses = job.poses()
    references = [job.reference, *job.extra_references] if job.extra_references else job.reference  # every rank gets them all
    if distributed and torch.distributed.get_rank() != 0:
        pipeline(references, poses, **job.call, distributed=True)
        return
    unaligned = job.poses(job.unaligned_path) if job.unaligned_path else None
    sound = {"audio": job.audio, "audio_start": job.audio_start} if job.audio else {}
    writers = [media.FrameWriter(job.output, job.fps, job.overwrite, commit=False, **sound)]
    if job.grid_output:
        writers.append(media.FrameWriter(job.grid_output, job.fps, job.overwrite, commit=False, **sound))
    with media.committed_together(writers, replace=job.overwrite):

        def panel(square):  # with --keep-aspect, as written: the motion's aspect (the grid's poses too)
            return unfit_square(square, *job.aspect) if job.aspect else square

        reference = job.reference if job.grid_reference is None else job.grid_reference

        def on_frame(index: int, frame) -> None:
            frame = panel(frame)
            writers[0].write(frame)
            if len(writers) > 1:
                before = [panel(unaligned[index])] if unaligned is not None else []  # --align: pose | aligned pose
                writers[1].write(np.concatenate([reference, *before, panel(poses[index]), frame], axis=1))

        pipeline(
            references, poses, **job.call, on_frame=on_frame, callback_on_step_end=_save_checkpoint(job.checkpoint),
            progress=progress, distributed=distributed,
        )


def _save_checkpoint(checkpoint):
    """The resume checkpoint as a diffusers ``callback_on_step_end``: latents after every step."""

    def callback(pipe, step_index, timestep, tensors):
        checkpoint.save(step_index + 1, tensors["latents"])
        return {}

    return callback
