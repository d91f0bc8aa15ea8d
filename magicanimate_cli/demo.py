"""``magicanimate demo``: the whole chain in a browser page (Gradio), with the models loaded once.

This module is wiring only: every action calls the library functions the CLI calls
(``animate.load_pipeline`` / ``animate.animate``; ``preprocess.preprocess`` for a raw video, with
a person-centred field of view and without matting; ``media`` for reading and fitting previews),
and the page shows the exact CLI command that reproduces each run.

* The pipeline is loaded once, when the server starts; if that fails, the page shows the error and
  ``magicanimate doctor``'s problems instead of crashing.
* One job per device: runs are one Gradio concurrency group of size 1, and the worker thread holds
  a device lock, so a run after a cancelled one waits until the cancelled worker has stopped (it
  stops at its next progress report: the next denoising window or decoded frame).
* Safe by default: 127.0.0.1, uploads limited in size and checked by type, Gradio serves only
  files under the work folder (its upload cache and the run folders), every run writes into its
  own folder under the work folder: a new folder in ``workdir`` (one per demo, so demos that share
  it, one after another or at once, never touch each other's files), by default a temporary folder
  removed when the server stops.

Gradio is an optional extra (``pip install 'magicanimate-cli[demo]'``); it is imported inside the
functions, so ``magicanimate --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import shlex
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .animate import FITS, FUSIONS, POSE_BACKGROUND, SCHEDULES, AnimateConfig
from .clip import DENSEPOSE, WORK, clip_fps
from .errors import MissingDependency, UserError, first_line, said_warnings
from .files import write_text
from .processes import STOP_SIGNALS, set_environment, stop_on_signals

DEMO_INSTALL = "pip install 'magicanimate-cli[demo]'"
DEFAULT_MAX_UPLOAD_MB = 200
ARCHIVE_TYPES = (".zip",)
ARCHIVE_MAX_BYTES = 2_000_000_000  # uncompressed frames of one archive
ARCHIVE_MAX_FRAMES = 20_000

SOURCE_MOTION = "DensePose video or frames archive"
SOURCE_RAW = "Raw video of a person"
SOURCE_CLIP = "Preprocessed clip"
SOURCES = (SOURCE_MOTION, SOURCE_RAW, SOURCE_CLIP)

# progress(stage, done, total) of the library -> what the page says
STAGE_LABELS = {
    "frames": "preprocess: extracting frames",
    "crop": "preprocess: person-centred crop",
    "densepose": "preprocess: DensePose",
    "render": "preprocess: drawing DensePose",
    "denoise": "animate: denoising windows",
    "decode": "animate: decoding frames",
}
STAGE_UNITS = {"denoise": "windows", "decode": "frames", "frames": "frames", "densepose": "frames", "render": "frames", "crop": "frames", "fov": "frames"}

_A = AnimateConfig()
CSS = """
#ma-header p { margin: 0.2em 0; }
#ma-problems { border-left: 4px solid #d33; padding-left: 0.8em; }
"""


class Cancelled(BaseException):
    """The run was cancelled from the page (or its client went away): raised at the worker's next
    progress report, as Ctrl-C stops a command (a ``BaseException``, so that no stage takes it for a
    failure of its own: ``preprocess`` records a stage's ``Exception`` and goes on without it)."""


def _require_gradio():
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"the demo needs Gradio, an optional extra; install it with: {DEMO_INSTALL}") from exc
    import gradio as gr

    return gr


# ----------------------------------------------------------------------------- inputs


def _check_suffix(path: Path, allowed, what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise UserError(f"{path.name}: not a {what} ({', '.join(sorted(allowed))})")


def extract_frames_archive(archive: Path, folder: Path, max_bytes: int = ARCHIVE_MAX_BYTES, max_frames: int = ARCHIVE_MAX_FRAMES) -> Path:
    """The image files of a .zip as a frames folder (names flattened; nothing outside ``folder``).

    Only image members are written, under their base name; hidden files and folders are skipped,
    and the archive is refused when it holds no frames, duplicate names, or more than the limits.
    """
    from . import files, media

    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            frames = [m for m in members if media.is_image(Path(m.filename)) and not Path(m.filename).name.startswith(".")
                      and not any(part.startswith(".") or part == "__MACOSX" for part in Path(m.filename).parts[:-1])]
            if not frames:
                raise UserError(f"{archive.name}: the archive holds no image frames (expected 00000.png, 00001.png, ...)")
            if len(frames) > max_frames or sum(m.file_size for m in frames) > max_bytes:
                raise UserError(f"{archive.name}: more than {max_frames} frames or {max_bytes // 1_000_000} MB unpacked; send a shorter clip")
            names = [Path(m.filename).name for m in frames]
            if len(set(names)) != len(names):
                raise UserError(f"{archive.name}: two frames share a file name in different folders; pack one folder of frames")
            tmp = files.temp_beside(folder)  # the project's one atomic writer: a locked temporary folder
            try:
                for member, name in zip(frames, names):
                    with zf.open(member) as src, open(tmp / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                files.commit(tmp, folder, replace=True)
            finally:
                files.discard(tmp)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{archive.name}: not a readable .zip archive ({exc})") from exc
    return folder


def _number(value, option: str, default, whole: bool = True):
    """A number field of the page as its CLI option takes it. A field the user emptied comes as
    None, which ``int()`` refused with Python's own words (and, in the preview, a traceback): one
    line naming the option instead; so is a fraction where the option takes a whole number."""
    kind = "a whole number" if whole else "a number"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{option} is empty: give {kind} (the default is {default})")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} {value!r}: give {kind} (the default is {default})") from None
    if not whole:
        return number
    if not number.is_integer():
        raise UserError(f"{option} {value}: give a whole number (the default is {default})")
    return int(number)


def list_clips(clips: Path | None) -> list[str]:
    """Names of the clip folders under ``clips`` that have DensePose frames."""
    from . import media

    if clips is None or not Path(clips).is_dir():
        return []
    found = []
    for folder in sorted(Path(clips).iterdir()):
        poses = folder / DENSEPOSE
        if folder.is_dir() and not folder.name.startswith(".") and poses.is_dir() and media.list_frame_files(poses):
            found.append(folder.name)
    return found


def cli_command(reference: Path, motion: Path, output: Path, settings: dict, *, models: Path, device: str, dtype: str,
                preprocess_video: Path | None = None, clips_out: Path | None = None, audio: Path | None = None,
                keep_aspect: bool = False, extra_references: list[Path] = ()) -> str:
    """The shell command that reproduces a run (``preprocess`` first for a raw video)."""
    q = shlex.quote
    parts = []
    if preprocess_video is not None:
        size = settings["size"]
        parts.append(f"magicanimate preprocess {q(str(preprocess_video))} -o {q(str(clips_out))} --size {size} --fov {size}x{size} --skip matte"
                     f" --models {q(str(models))}")
    animate = [f"magicanimate animate {q(str(reference))} {q(str(motion))} -o {q(str(output))} --models {q(str(models))}"]
    for key in ("steps", "guidance_scale", "seed", "size", "context_frames", "context_overlap", "fit", "context_schedule", "context_fusion"):
        animate.append(f"--{key.replace('_', '-')} {settings[key]}")
    if device != "auto":
        animate.append(f"--device {device}")
    if dtype != "auto":
        animate.append(f"--dtype {dtype}")
    if audio is not None:
        animate.append(f"--audio {q(str(audio))}")
    if keep_aspect:
        animate.append("--keep-aspect")
    animate.extend(f"--extra-reference {q(str(path))}" for path in extra_references)
    animate.append("--grid")
    parts.append(" ".join(animate))
    return " && \\\n  ".join(parts)


# ----------------------------------------------------------------------------- the app


@dataclass
class DemoState:
    """What the server loaded at start, and what it found wrong."""

    models: Path
    device: str
    dtype: str
    workdir: Path
    clips: Path | None
    pipeline: object = None
    load_error: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    densepose_hint: str | None = None
    loaded_on: str = "not loaded"


class DemoApp:
    """The page and its handlers around one loaded pipeline."""

    def __init__(self, *, models=None, device="auto", dtype="auto", clips=None, workdir: Path, progress=None) -> None:
        from .weights_layout import resolve_models_dir

        self.state = DemoState(resolve_models_dir(models).resolve(), device, dtype, Path(workdir), Path(clips).resolve() if clips else None)
        self.runs_dir = self.state.workdir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._counter = 0
        self._lock = threading.Lock()
        self._device = threading.Lock()  # held by the worker that uses the device, cancelled or not
        self._cancels: set[threading.Event] = set()  # of the runs started and not ended
        self._stopped = False
        self._load(progress)

    # -- start-up

    def _load(self, progress) -> None:
        from . import doctor
        from .animate import load_pipeline, pin_cpu_kernels
        from .densepose import estimator

        pin_cpu_kernels()
        st = self.state
        try:
            st.pipeline = load_pipeline(st.models, st.device, st.dtype)
            st.loaded_on = f"{st.pipeline.unet.device} ({str(st.pipeline.unet.dtype).replace('torch.', '')})"
        except Exception as exc:  # shown on the page; the server still starts
            st.load_error = f"{exc.__class__.__name__ + ': ' if not isinstance(exc, UserError) else ''}{exc}"
        try:
            report = doctor.doctor(models=st.models, progress=progress)
            st.problems = [f"{c.name}: {c.detail}" + (f" — fix: {c.fix}" if c.fix else "") for c in report.checks if c.status == doctor.FAIL]
            st.notes = [f"{c.name}: {c.detail}" + (f" — {c.fix}" if c.fix else "") for c in report.checks if c.status == doctor.WARN]
        except Exception as exc:  # doctor never raises for what it finds; a bug must not stop the page either
            st.problems = [f"doctor: {exc.__class__.__name__}: {exc}"]
        if not estimator.detectron2_available():
            st.densepose_hint = estimator.install_command()
        if st.clips is not None and not st.clips.is_dir():
            st.problems.append(f"--clips {st.clips}: no such folder")

    # -- helpers

    def _new_run(self) -> Path:
        with self._lock:
            self._counter += 1
            folder = self.runs_dir / f"{self._counter:04d}-{time.strftime('%Y%m%d-%H%M%S')}"
        (folder / "inputs").mkdir(parents=True)
        return folder

    def _motion_source(self, source: str, motion, raw_video, clip):
        """(kind, path) of the driving input the page names; raises UserError for a bad one."""
        from . import media

        if source == SOURCE_MOTION:
            if not motion:
                raise UserError("no driving input: upload a DensePose video (.mp4, ...) or a .zip of frames")
            path = Path(motion)
            if not media.is_video(path):  # an animated .webp is one too
                _check_suffix(path, media.VIDEO_EXTENSIONS | set(ARCHIVE_TYPES), "DensePose video or frames archive")
            return ("archive" if path.suffix.lower() in ARCHIVE_TYPES else "video"), path
        if source == SOURCE_RAW:
            if self.state.densepose_hint:
                raise UserError(f"the raw-video option needs detectron2 and DensePose; install them with: {self.state.densepose_hint}")
            if not raw_video:
                raise UserError("no video: upload a video of a person")
            path = Path(raw_video)
            if not media.is_video(path):
                _check_suffix(path, media.VIDEO_EXTENSIONS, "video")
            return "raw", path
        if source == SOURCE_CLIP:
            if not clip or clip not in list_clips(self.state.clips):
                raise UserError(f"choose one of the clips in {self.state.clips}" if self.state.clips else "no --clips folder was given to the demo")
            return "clip", self.state.clips / clip  # the clip folder, as `animate` takes it: its densepose/ at the clip's fps
        raise UserError(f"unknown driving source {source!r}; choose one of: {', '.join(SOURCES)}")

    @staticmethod
    def _settings(steps, guidance_scale, seed, size, context_frames, context_overlap, fit, context_schedule=_A.context_schedule,
                  context_fusion=_A.context_fusion) -> dict:
        config = AnimateConfig(_number(steps, "--steps", _A.steps), _number(guidance_scale, "--guidance-scale", _A.guidance_scale, whole=False),
                               _number(seed, "--seed", _A.seed), _number(size, "--size", _A.size),
                               _number(context_frames, "--context-frames", _A.context_frames),
                               _number(context_overlap, "--context-overlap", _A.context_overlap), str(fit), str(context_schedule),
                               str(context_fusion))
        config.validate()
        return asdict(config)

    # -- handlers

    def preview(self, reference, source, motion, raw_video, clip, size, fit):
        """Fitted reference and first driving frame (uint8 arrays) and a line about the motion."""
        from . import media
        from .crop import fit_square

        lines, ref_img, pose_img = [], None, None
        try:
            size = _number(size, "--size", _A.size)
            AnimateConfig(size=size).validate()  # the sizes the animation takes
            if reference:
                _check_suffix(Path(reference), media.IMAGE_EXTENSIONS, "reference image")
                ref_img = fit_square(media.read_image(Path(reference)), size, fit, (255, 255, 255))
            if source != SOURCE_RAW or raw_video:
                kind, path = self._motion_source(source, motion, raw_video, clip)
                with contextlib.ExitStack() as stack:
                    fps = None
                    if kind == "archive":  # for this preview only (each was kept for the server's life): a run unpacks its own
                        unpacked = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="preview-", dir=self.state.workdir)))
                        path = extract_frames_archive(path, unpacked / path.stem)
                    elif kind == "clip":  # its DensePose frames, at the rate animate reads them: the clip's own
                        path, fps = path / DENSEPOSE, clip_fps(path)
                    info = media.probe(path, fps)
                    first = next(media.iter_frames(path, same_size=False))
                if kind == "raw":
                    pose_img = first
                    lines.append(f"video: {info.frames} frames at {info.fps:g} fps, {info.width}×{info.height}; DensePose is computed when you press Animate")
                else:
                    pose_img = fit_square(first, size, fit, POSE_BACKGROUND)
                    lines.append(f"motion: {info.frames} frames at {info.fps:g} fps, {info.width}×{info.height} → {size}×{size} ({fit})")
        except UserError as exc:
            lines.append(f"⚠ {exc}")
        return ref_img, pose_img, "\n\n".join(lines)

    async def run(self, reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size, context_frames, context_overlap,
                  fit, context_schedule=_A.context_schedule, context_fusion=_A.context_fusion, keep_aspect=False, extra_references=None,
                  progress=None):
        """The Animate button: the work runs in a worker thread; a cancelled event stops it."""
        import asyncio  # here: the CLI imports this module for its defaults, and asyncio takes tens of ms

        gr = _require_gradio()
        cancel = threading.Event()
        context = contextvars.copy_context()  # gr.Progress finds its event through context variables
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            None, context.run, self._run_sync, cancel, progress,
            reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size, context_frames, context_overlap, fit,
            context_schedule, context_fusion, keep_aspect, extra_references,
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancel.set()  # the worker raises at its next progress report and then frees the device
            work.add_done_callback(lambda done: done.cancelled() or done.exception())  # its Cancelled, taken: no "never retrieved"
            raise
        except Cancelled:
            raise gr.Error("cancelled") from None
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:
            raise gr.Error(f"{exc.__class__.__name__}: {exc}") from exc

    def _run_sync(self, cancel: threading.Event, gr_progress, reference, source, motion, raw_video, clip, steps, guidance_scale, seed,
                  size, context_frames, context_overlap, fit, context_schedule=_A.context_schedule, context_fusion=_A.context_fusion,
                  keep_aspect=False, extra_references=None):
        with self._lock:
            self._cancels.add(cancel)
            if self._stopped:
                cancel.set()
        try:
            if not self._device.acquire(blocking=False):  # a cancelled run is still stopping
                if gr_progress is not None:
                    gr_progress(None, desc="waiting for the device")
                self._device.acquire()
            try:
                return self._work(cancel, gr_progress, reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size,
                                  context_frames, context_overlap, fit, context_schedule, context_fusion, keep_aspect, extra_references)
            finally:
                self._device.release()
        finally:
            with self._lock:
                self._cancels.discard(cancel)

    def stop(self) -> None:
        """Cancel every run and wait until the one on the device has stopped (at its next progress
        report) and written its record; a run that starts later stops at once, writing nothing."""
        with self._lock:
            self._stopped = True
            for cancel in self._cancels:
                cancel.set()
        with self._device:
            pass

    def _work(self, cancel, gr_progress, reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size, context_frames,
              context_overlap, fit, context_schedule=_A.context_schedule, context_fusion=_A.context_fusion, keep_aspect=False,
              extra_references=None):
        from . import media
        from .animate import animate

        st = self.state
        if cancel.is_set():
            raise Cancelled()
        if st.pipeline is None:
            raise UserError(f"the animator is not loaded ({st.load_error}); see the problems at the top of the page")
        settings = self._settings(steps, guidance_scale, seed, size, context_frames, context_overlap, fit, context_schedule, context_fusion)
        if not reference:
            raise UserError("no reference image: upload one")
        _check_suffix(Path(reference), media.IMAGE_EXTENSIONS, "reference image")
        extras = [Path(extra) for extra in extra_references or ()]  # more images of the person (--extra-reference)
        for extra in extras:
            _check_suffix(extra, media.IMAGE_EXTENSIONS, "extra reference image")
        kind, path = self._motion_source(source, motion, raw_video, clip)
        run = self._new_run()
        keep_aspect = bool(keep_aspect)
        record = {"status": "running", "source": kind, "settings": {**settings, "keep_aspect": keep_aspect},
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        stages: list[str] = []
        clips_out = None

        def progress(stage: str, done: int, total: int) -> None:
            if cancel.is_set():
                raise Cancelled()
            if stage in STAGE_LABELS and (not stages or stages[-1] != stage):
                stages.append(stage)
            if gr_progress is not None and stage in STAGE_LABELS:
                gr_progress((done, total or None), desc=STAGE_LABELS[stage], unit=STAGE_UNITS.get(stage, "steps"))

        try:
            ref_path = run / "inputs" / Path(reference).name
            shutil.copyfile(reference, ref_path)
            extra_paths = []
            for number, extra in enumerate(extras, 1):  # a folder of their own: two uploads of one name, or the reference's, all kept
                extra_paths.append(run / "inputs" / "extra-references" / f"{number}-{extra.name}")
                extra_paths[-1].parent.mkdir(exist_ok=True)
                shutil.copyfile(extra, extra_paths[-1])
            if extra_paths:
                record["extra_references"] = [str(path) for path in extra_paths]
            preprocess_video = clips_out = sound = None
            if kind in ("video", "archive", "raw"):
                name = path.name  # beside the reference's copy: never in its place (a still pose.webp photo, an animated pose.webp motion)
                if ref_path.name in (name, path.stem if kind == "archive" else None):
                    name = f"motion-{name}"
                copied = run / "inputs" / name
                shutil.copyfile(path, copied)
                path = copied
                if kind != "archive" and media.audio_streams(path):  # a dance video's music: the animation keeps it
                    sound = path
            if kind == "archive":
                path = extract_frames_archive(path, run / "inputs" / path.stem)
            elif kind == "raw":
                from .preprocess import preprocess

                preprocess_video, clips_out = path, run / "clips"
                result = preprocess(path, clips_out, size=settings["size"], fov=f"{settings['size']}x{settings['size']}", skip="matte",
                                    models=st.models, progress=progress)
                outcome = result.clips[0]
                record["preprocess"] = outcome
                if outcome["status"] != "done" or outcome["stages"].get("densepose") != "done":
                    errors = "; ".join(f"{k}: {v}" for k, v in outcome["errors"].items()) or outcome["status"]
                    raise UserError(f"preprocessing {path.name} failed ({errors})")
                path = Path(outcome["output"])  # the clip folder: animate reads its densepose/ at the clip's fps
            output = run / "animation.mp4"
            # beside the page's animation, not over it: pasted as printed, the command runs (no --overwrite)
            command = cli_command(ref_path, path, run / "animation-cli.mp4", settings, models=st.models, device=st.device, dtype=st.dtype,
                                  preprocess_video=preprocess_video, clips_out=clips_out, audio=sound, keep_aspect=keep_aspect,
                                  extra_references=extra_paths)
            record["command"] = command
            result = animate(ref_path, path, output, models=st.models, device=st.device, dtype=st.dtype, grid=True, audio=sound,
                             keep_aspect=keep_aspect, extra_references=extra_paths, progress=progress, pipeline=st.pipeline, **settings)
            record.update(status="done", result=result.to_dict())
        except Cancelled:
            record["status"] = "cancelled"
            raise
        except BaseException as exc:
            record.update(status="failed", error=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            record["stages"] = stages
            if clips_out is not None and record["status"] != "done":  # nothing resumes a run's preprocess: its full-size frames go
                for work in clips_out.glob(f"*/{WORK}"):
                    shutil.rmtree(work, ignore_errors=True)
            write_text(run / "run.json", json.dumps(record, indent=2, default=str), replace=True)  # never seen half written
        status = (f"**Done**: {result.frames} frames at {result.fps:g} fps, {result.width}×{result.height}, "
                  f"{result.steps} steps, seed {result.seed}, on {result.device} ({result.dtype}) in {result.seconds:.1f} s"
                  f"{f', with the sound of {Path(result.audio).name}' if result.audio else ''}. "
                  f"Run folder: `{run}`" + "".join(f"\n\n**Warning**: {message}" for message in result.warnings))
        return str(output), result.grid, command, status

    # -- the page

    def blocks(self):
        gr = _require_gradio()
        from . import __version__, media

        st = self.state
        clips = list_clips(st.clips)
        video_types = sorted(media.VIDEO_EXTENSIONS | {".webp"})  # an animated WebP is a video (a still one is refused when read)
        with gr.Blocks(title="MagicAnimate demo", analytics_enabled=False) as page:
            gr.Markdown(
                f"## MagicAnimate · demo\nAnimate the person of a reference image along a DensePose motion. "
                f"Models `{st.models}` on {st.loaded_on} · magicanimate {__version__}",
                elem_id="ma-header",
            )
            problems = ([f"**The animator could not be loaded:** {st.load_error}"] if st.load_error else []) + [f"- {p}" for p in st.problems]
            gr.Markdown("\n".join(problems), visible=bool(problems), elem_id="ma-problems")
            with gr.Accordion(f"Environment notes ({len(st.notes)})", open=False, visible=bool(st.notes)):
                gr.Markdown("\n".join(f"- {n}" for n in st.notes))
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=320):
                    source = gr.Radio(list(SOURCES), value=SOURCE_MOTION, label="Driving source", elem_id="ma-source")
                    with gr.Row(equal_height=False):
                        with gr.Column(min_width=200):
                            # a file, not gr.Image: Gradio opens an Image upload with bare Pillow, which refuses what the CLI reads
                            # (HEIC photos, 180 to 268 MP); the handlers read it with media and say what is wrong in one line
                            reference = gr.File(label="Reference image", file_types=sorted(media.IMAGE_EXTENSIONS), type="filepath", height=120,
                                                elem_id="ma-reference")
                            # a back view, a face close-up: --extra-reference, each
                            extra_references = gr.File(label="More images of the person (optional)", file_count="multiple",
                                                       file_types=sorted(media.IMAGE_EXTENSIONS), type="filepath", height=120,
                                                       elem_id="ma-extra-references")
                        with gr.Column(min_width=200):
                            motion = gr.File(label="DensePose video or .zip of frames", file_types=video_types + list(ARCHIVE_TYPES),
                                             type="filepath", height=120, elem_id="ma-motion")
                            raw_hint = (f"DensePose (detectron2) is not installed, so raw videos cannot be preprocessed here. Install it with:\n\n"
                                        f"```\n{st.densepose_hint}\n```\nthen restart the demo. The other driving sources work."
                                        if st.densepose_hint else
                                        "The video is run through `preprocess`: frames, person-centred crop, DensePose (no matting).")
                            raw_note = gr.Markdown(raw_hint, visible=False)
                            raw_video = gr.File(label="Video of a person", file_types=video_types, type="filepath", height=120, visible=False,
                                                interactive=st.densepose_hint is None, elem_id="ma-raw")
                            clip = gr.Dropdown(clips, value=clips[0] if clips else None, label=f"Clip from {st.clips}" if st.clips else "Clip (start with --clips DIR)",
                                               visible=False, interactive=bool(clips), elem_id="ma-clip")
                    with gr.Row():
                        go = gr.Button("Animate", variant="primary", interactive=st.pipeline is not None, elem_id="ma-animate", min_width=120)
                        stop = gr.Button("Cancel", variant="stop", elem_id="ma-cancel", min_width=120)
                    with gr.Accordion("Settings (the CLI's options)", open=False, elem_id="ma-settings"):
                        with gr.Row():
                            steps = gr.Number(_A.steps, label="--steps", elem_id="ma-steps", precision=0, minimum=1, maximum=1000, min_width=100)
                            guidance = gr.Number(_A.guidance_scale, label="--guidance-scale", elem_id="ma-guidance-scale", minimum=0, min_width=100)
                            seed = gr.Number(_A.seed, label="--seed", elem_id="ma-seed", precision=0, min_width=100)
                        with gr.Row():
                            size = gr.Number(_A.size, label="--size", elem_id="ma-size", precision=0, minimum=64, step=8, min_width=100)
                            context_frames = gr.Number(_A.context_frames, label="--context-frames", elem_id="ma-context-frames", precision=0, minimum=1, min_width=100)
                            context_overlap = gr.Number(_A.context_overlap, label="--context-overlap", elem_id="ma-context-overlap", precision=0, minimum=0, min_width=100)
                        with gr.Row():
                            fit = gr.Radio(list(FITS), value=_A.fit, label="--fit", elem_id="ma-fit")
                            keep_aspect = gr.Checkbox(False, label="--keep-aspect (with pad or stretch: the motion's aspect, not a square)",
                                                      elem_id="ma-keep-aspect")
                        context_schedule = gr.Radio(list(SCHEDULES), value=_A.context_schedule, label="--context-schedule",
                                                    elem_id="ma-context-schedule")
                        context_fusion = gr.Radio(list(FUSIONS), value=_A.context_fusion, label="--context-fusion", elem_id="ma-context-fusion")
                with gr.Column(scale=1, min_width=320):
                    with gr.Row():
                        ref_preview = gr.Image(label="Fitted reference", interactive=False, height=150, min_width=140, format="png")
                        pose_preview = gr.Image(label="First driving frame", interactive=False, height=150, min_width=140, format="png")
                    info = gr.Markdown(elem_id="ma-info")
                    result = gr.Video(label="Animation", interactive=False, buttons=["download"], height=300, elem_id="ma-result")
                    grid = gr.Video(label="Reference | pose | result", interactive=False, buttons=["download"], height=200, elem_id="ma-grid")
                    command = gr.Textbox(label="Reproduce on the command line", lines=3, max_lines=8, interactive=False, buttons=["copy"], elem_id="ma-command")
                    status = gr.Markdown(elem_id="ma-status")

            def show_source(choice):
                return (gr.update(visible=choice == SOURCE_MOTION), gr.update(visible=choice == SOURCE_RAW),
                        gr.update(visible=choice == SOURCE_RAW), gr.update(visible=choice == SOURCE_CLIP))

            source.change(show_source, source, [motion, raw_note, raw_video, clip], queue=False, api_visibility="private")
            preview_inputs = [reference, source, motion, raw_video, clip, size, fit]
            # one preview at a time, in the order asked: a slow one (a motion fitted to 512²) finishing after
            # a quick later one (the size typed next) showed stale settings
            in_order = {"concurrency_limit": 1, "concurrency_id": "preview", "trigger_mode": "always_last"}
            reference.change(self.preview, preview_inputs, [ref_preview, pose_preview, info], api_name="preview", **in_order)
            for component in (source, motion, raw_video, clip, fit):
                component.change(self.preview, preview_inputs, [ref_preview, pose_preview, info], api_visibility="private", **in_order)
            for typed in (size.submit, size.blur):  # not on each keystroke: "6" on the way to 64 popped up Gradio's minimum error
                typed(self.preview, preview_inputs, [ref_preview, pose_preview, info], api_visibility="private", **in_order)

            async def animate_(reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size, context_frames, context_overlap,
                               fit, context_schedule, context_fusion, keep_aspect, extra_references, progress=gr.Progress()):
                return await self.run(reference, source, motion, raw_video, clip, steps, guidance_scale, seed, size, context_frames,
                                      context_overlap, fit, context_schedule, context_fusion, keep_aspect, extra_references, progress=progress)

            running = go.click(
                animate_, [reference, source, motion, raw_video, clip, steps, guidance, seed, size, context_frames, context_overlap, fit,
                           context_schedule, context_fusion, keep_aspect, extra_references],
                [result, grid, command, status], api_name="animate", concurrency_limit=1, concurrency_id="device",
            )
            stop.click(lambda: "Cancelled.", None, status, cancels=[running], queue=False, api_name="cancel")
        return page


# ----------------------------------------------------------------------------- server


@dataclass
class DemoServer:
    """A started demo: its URL, page and work folder; ``close()`` stops it (and removes a temporary work folder)."""

    url: str
    app: DemoApp
    page: object
    workdir: Path
    owns_workdir: bool
    _env: dict = field(default_factory=dict, repr=False)

    def close(self) -> None:
        try:
            self.page.close()
            self.app.stop()  # Gradio waits for a running worker for 5 s at most: the work folder goes after it
        finally:
            set_environment(self._env)
            if self.owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class DemoResult:
    url: str
    workdir: str
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def start(
    *,
    models: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "auto",
    dtype: str = "auto",
    clips: Path | str | None = None,
    workdir: Path | str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    progress=None,
) -> DemoServer:
    """Load the models, build the page and serve it without blocking (see ``demo``). A mistyped
    ``device`` or ``dtype`` is refused here; models that fail to load are shown on the page."""
    from .animate import check_dtype
    from .device import check_device

    _require_gradio()
    check_device(device)
    check_dtype(dtype)
    if max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb {max_upload_mb}: must be positive")
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: choose a port between 1 and 65535")
    from . import media

    clips = media.input_path(clips) if clips is not None else None
    workdir = media.output_path(workdir, "--workdir") if workdir is not None else None
    if clips is not None and not clips.is_dir():
        raise UserError(f"--clips {clips}: no such folder; give the -o folder of `magicanimate preprocess`")
    _check_port(host, port)  # before the models load
    owns = workdir is None
    created = None  # the top folder this call makes, if any: taken back when the demo cannot start
    if owns:
        workdir = Path(tempfile.mkdtemp(prefix="magicanimate-demo-"))
    else:
        # each demo its own new folder under the one given: a demo started there before, or running
        # there now, keeps its runs and uploads (same names, counted from 0001 by each)
        given = workdir.resolve()
        created = next((p for p in reversed([given, *given.parents]) if not p.exists()), None)
        try:
            given.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"demo-{time.strftime('%Y%m%d-%H%M%S')}-", dir=given))
        except OSError as exc:
            raise UserError(f"--workdir {given}: cannot create a folder in it ({exc.strerror or exc}); give a folder you can write to") from exc
    # Gradio keeps uploads and the files it serves in GRADIO_TEMP_DIR: keep them in the work folder
    env = {"GRADIO_TEMP_DIR": str(workdir / "gradio"), "GRADIO_EXAMPLES_CACHE": str(workdir / "gradio-examples"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    saved = set_environment(env)
    page = None
    try:
        app = DemoApp(models=models, device=device, dtype=dtype, clips=clips, workdir=workdir, progress=progress)
        page = app.blocks()
        page.queue(default_concurrency_limit=4)
        blocked = [str(app.state.models)] + ([str(app.state.clips)] if app.state.clips else [])
        with _signals_held():  # a Ctrl-C inside launch() would leave its web server running, with nothing to close it
            page.launch(
                server_name=host, server_port=port, share=False, prevent_thread_lock=True, inbrowser=False, quiet=True,
                show_error=True, max_file_size=f"{max_upload_mb}mb", allowed_paths=[str(app.runs_dir)], blocked_paths=blocked,
                css=CSS, footer_links=[], ssr_mode=False,
            )
        return DemoServer(page.local_url or f"http://{host}:{port}/", app, page, workdir, owns, saved)
    except BaseException as exc:
        if page is not None:  # launched, or partly: a SIGTERM can come between the launch and the return
            with contextlib.suppress(Exception), contextlib.redirect_stdout(sys.stderr):  # its "Closing server ..."
                page.close()
        set_environment(saved)
        shutil.rmtree(created or workdir, ignore_errors=True)  # what this call made, and only that
        if isinstance(exc, OSError) and "port" in str(exc):  # taken between the check and the launch
            raise UserError(f"--port {port}: {first_line(exc)}; choose another --port") from exc
        raise


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and ``STOP_SIGNALS`` held back within the block and acted on when it ends (at once if
    one came). Gradio's ``launch()`` starts its web server in a thread and waits for it before it
    records it on the page: an interrupt in that wait left the server serving, its port bound, with
    no handle that ``page.close()`` could stop. The wait lasts at most a few seconds. Only Python
    handlers are held (a default SIGTERM still ends the process); only the main thread takes
    signals: elsewhere it does nothing."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    held = {}
    for name in ("SIGINT", *STOP_SIGNALS):
        number = getattr(signal, name, None)
        if number is not None and callable(signal.getsignal(number)):
            held[number] = signal.signal(number, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
        if came:
            held[came[0]](came[0], None)  # as it would have been: KeyboardInterrupt


def _check_port(host: str, port: int) -> None:
    """Refuse a ``port`` that another server already listens on at ``host`` (exit 2, one line)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"--host {host}: {exc.strerror or exc}; give an address such as 127.0.0.1 or 0.0.0.0") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds it
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(f"--port {port}: {host}:{port} is in use or not allowed ({exc.strerror or exc}); choose another --port") from exc


def demo(
    *,
    models: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "auto",
    dtype: str = "auto",
    clips: Path | str | None = None,
    workdir: Path | str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    progress=None,
    on_ready=None,
) -> DemoResult:
    """Serve the demo page until interrupted (Ctrl-C), then stop and clean up.

    ``clips``: the ``-o`` folder of ``magicanimate preprocess``; its clips are offered as driving
    sources. ``workdir``: the folder in which this demo makes its own folder for runs and uploads,
    kept at exit (the result's ``workdir``); default a temporary folder removed at exit.
    ``on_ready(url)`` is called once the page is served. A run's warnings are shown on its page and
    kept in its ``run.json``, not in the result's ``warnings`` (the CLI's ``--json``): that is the
    server's.
    """
    with stop_on_signals():  # before the work folder exists: a SIGTERM while loading removes it too
        server = start(models=models, host=host, port=port, device=device, dtype=dtype, clips=clips, workdir=workdir,
                       max_upload_mb=max_upload_mb, progress=progress)
        # a run's warnings are its own (on its page, in its run.json), as a serve task's are: still one
        # line each on stderr, but not the server's result's (the CLI's --json ``warnings``)
        with said_warnings(alone=True):
            try:
                if on_ready is not None:
                    on_ready(server.url)
                try:
                    while True:
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
                runs = len([p for p in server.app.runs_dir.iterdir() if p.is_dir()])
                return DemoResult(server.url, str(server.workdir) if not server.owns_workdir else "(removed)", runs)
            finally:
                with contextlib.redirect_stdout(sys.stderr):  # Gradio prints "Closing server ..." there: stdout is the result's
                    server.close()
