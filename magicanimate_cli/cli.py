"""The ``magicanimate`` command line: a thin Typer layer over the library functions.

Every option of a command is a keyword argument of the function it calls, with the same name and
default, so the CLI and the API cannot drift. No logic lives here: parsing, calling, reporting.
Exit codes: 0 done, 1 failed (a bug or a failed task), 2 bad input (one line, no traceback unless
``--debug``), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

# The stages' config modules are light (no numpy, torch, paddle or detectron2): their defaults
# are the options' defaults, so CLI and library cannot drift.
from . import __version__
from . import demo as _demo
from . import download as _download
from .align import ANCHORS as _ANCHORS
from .align import FRAME_MODES as _FRAME_MODES
from .align import AlignConfig as _AlignConfig
from .animate import AnimateConfig
from .clip import SIZE as _CROP_SIZE
from .densepose import DensePoseConfig as _DensePoseConfig
from .errors import (
    NetworkError,
    StageFailed,
    UserError,
    one_line,
    said_warnings,
    show_library_logs,
    warn_in_one_line,
    with_warnings,
)
from .evaluate import EvalConfig as _EvalConfig
from .frames import DEFAULT_FPS as _FRAMES_FPS
from .matting import MODELS as _MATTE_MODELS
from .matting import MatteConfig as _MatteConfig
from .server import option_words, wants_json


class _Group(TyperGroup):
    """Typer's group with help that reads like the README, and ``--debug`` accepted anywhere.

    Flags get no type placeholder (``--grid``, not ``--grid <bool>``) and arguments show their
    metavar (``REF MOTION``). ``--debug`` is a global option; placed after the command
    (``magicanimate animate ... --debug``) it is moved in front of it before parsing.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, _debug_first(args) if ctx.parent is None else args)
        if ctx.parent is None:
            ctx.meta["magicanimate.command_args"] = list(rest)  # for --server: the command's own arguments
        return rest

    def get_help_option(self, ctx):
        _readme_style(self)
        return _no_placeholder(super().get_help_option(ctx))

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _readme_style(command)
            if ctx is not None:
                _no_placeholder(command.get_help_option(ctx))
        return command


def _debug_first(args: list[str]) -> list[str]:
    """Move ``--debug`` in front of the command (never one after ``--``, which is an argument)."""
    end = len(option_words(args))
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(a for i, a in enumerate(args) if not (a == "--debug" and i < end))]


def _readme_style(command) -> None:
    for param in command.params:
        if getattr(param, "is_flag", False):
            _no_placeholder(param)
        elif param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper()
            shown = param.metavar if param.nargs == 1 or param.metavar.endswith("...") else f"{param.metavar}..."
            shown = shown if param.required else f"[{shown}]"
            param.get_usage_pieces = lambda ctx, shown=shown: [shown]
            if param.nargs != 1:  # the metavar already says INPUT...; no <list[Path]>
                param.display_type_rich = lambda ctx: None
            elif getattr(param.type_descriptor, "annotation", None) is Path:  # handed over as typed (parser=str): a path still
                param.display_type_rich = lambda ctx: "<path>"


def _no_placeholder(option):
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


app = typer.Typer(
    cls=_Group,
    name="magicanimate",
    help="From a raw video to a MagicAnimate human-image animation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}
_ANIMATE = AnimateConfig()

JSON_OPTION = typer.Option(False, "--json", help="Print one machine-readable JSON result on stdout; no progress bars.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists.")
ALLOW_TRUNCATED_OPTION = typer.Option(
    False, "--allow-truncated", help="Use the frames that decode from a cut-off or damaged video instead of refusing it."
)
STRICT_OPTION = typer.Option(
    False, "--strict", help="Refuse (exit 2) a motion that is not DensePose in MagicAnimate's colours or shows nobody, instead of warning."
)
PATH_AS_TYPED = {"parser": str, "metavar": "<path>"}
"""Paths reach the stage as typed (``parser=str``; ``Path`` would read ``""`` as ``.`` and drop a
trailing ``/``): ``media.output_path`` and ``media.input_path`` read them (``~``, ``-o ""``,
``-o out.mp4/``). The input arguments take ``parser=str`` alone (their metavars are their names)."""
MODELS_OPTION = typer.Option(
    None, "--models", envvar="MAGICANIMATE_MODELS", help="Weights folder (official layout); default ./models of a checkout, else ~/.cache/magicanimate/models.",
    **PATH_AS_TYPED,  # `--models ""` (an unset variable) is refused, not read as the current folder
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"magicanimate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (also accepted after the command)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    server: Optional[Path] = typer.Option(
        None, "--server", envvar="MAGICANIMATE_SERVER", **PATH_AS_TYPED,
        help="Run the command on the `magicanimate serve` at this socket (models stay loaded between calls; docs/serve.md).",
    ),
) -> None:
    _state["debug"] = debug
    warn_in_one_line()  # an InputWarning (a motion that is not DensePose): one "warning: ..." line on stderr
    args = ctx.meta.get("magicanimate.command_args", [])
    if server is not None:
        from .server import check_usage, forwardable, submit

        if forwardable(ctx.invoked_subcommand, args):
            check_usage(ctx, ctx.invoked_subcommand, args)  # a usage error: the direct run's one line, before sending
            _run(lambda progress: submit(ctx.invoked_subcommand, args, socket=server, progress=progress, debug=debug, on_say=_say),
                 wants_json(args))
            raise typer.Exit(0)
    if debug:
        show_library_logs()


def _run(call: Callable, as_json: bool) -> None:
    """Run ``call(progress)``, print its result, exit with its code; errors become exit codes.

    A result has ``to_dict()`` (the ``--json`` object); it may have ``for_humans()`` (a dict of
    lines or a Rich renderable for the terminal), ``exit_code`` (non-zero when some of the work
    failed, e.g. one task of a batch) and ``failure`` (then one line saying what: the JSON's
    ``error``, and ``error: ...`` on stderr after the summary). The JSON lists in ``warnings`` every
    ``warning: ...`` line the run printed (``errors.with_warnings``).
    """
    from .processes import stop_on_signals
    from .progress import rich_progress

    said: list[str] = []
    try:
        with stop_on_signals(), rich_progress(enabled=None if not as_json else False) as progress, said_warnings(said):  # SIGTERM, SIGHUP: as Ctrl-C
            result = call(progress)
    except UserError as exc:
        _fail(str(exc), 2, as_json, said)
    except (StageFailed, NetworkError) as exc:
        if _state["debug"] and getattr(exc, "traceback", None):  # a server's task (--server): its traceback there
            typer.echo(exc.traceback.rstrip(), err=True)
        _fail(str(exc), 1, as_json, said)
    except KeyboardInterrupt as exc:
        result = getattr(exc, "result", None)  # a batch stopped after its summary (BatchInterrupted): printed below, exit 130
        if result is None:
            _fail("interrupted", 130, as_json, said)
    except Exception as exc:  # a bug or an environment failure: say so in one line
        from .files import write_error

        refusal = write_error(exc)  # a full disk, a name too long, no permission: the user fixes it
        if refusal is not None:
            _fail(str(refusal), 2, as_json, said)
        if _state["debug"]:
            traceback.print_exc()
        _fail(f"{exc.__class__.__name__}: {one_line(exc)} (run with --debug for the traceback)", 1, as_json, said)
    code = getattr(result, "exit_code", 0)
    failure = getattr(result, "failure", None) if code else None  # a part of the work failed: one line saying what
    if as_json:
        data = {"ok": code == 0, **with_warnings(result.to_dict(), said)}
        if code:
            data.setdefault("error", failure or "failed")
            data.setdefault("exit_code", code)
        typer.echo(json.dumps(data))
    else:
        from .summary import show

        show(result)
        if failure:
            typer.echo(f"error: {failure}", err=True)
    if code:
        raise typer.Exit(code)


def _call(run: Callable, options: dict, **callbacks: Callable | None) -> None:
    """Call the stage function ``run`` with the command's options, which are its keyword arguments
    (and ``callbacks``: what a server or a plan prints on the terminal)."""
    kwargs = {k: v for k, v in options.items() if k not in ("run", "as_json")}
    _run(lambda progress: run(**kwargs, **callbacks, progress=progress), options["as_json"])


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _fail(message: str, code: int, as_json: bool, said: list[str] | None = None) -> None:
    """Say ``message``, print the JSON failure (with the ``warnings`` said before it, if any), exit ``code``."""
    if _state["debug"] and code == 2:
        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)  # first: said even when stdout cannot take the JSON
    if as_json:
        typer.echo(json.dumps(with_warnings({"ok": False, "error": message, "exit_code": code}, said or [])))
    raise typer.Exit(code)


@app.command()
def animate(
    reference: Path = typer.Argument(..., parser=str, metavar="REF", help="Reference image (any mode and size)."),
    motion: Path = typer.Argument(..., parser=str, metavar="MOTION", help="DensePose motion: a video, a folder of frames, or a clip folder (reads densepose/)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="An .mp4 (or .gif, .webm, animated .webp), or a folder that receives PNG frames."),
    extra_references: Optional[list[Path]] = typer.Option(
        None, "--extra-reference", **PATH_AS_TYPED,
        help="Another image of the same person (a back view, a face close-up), fitted as REF; repeat for more. The animation attends over all of them (an extension: the weights were trained with one).",
    ),
    models: Optional[Path] = MODELS_OPTION,
    steps: int = typer.Option(_ANIMATE.steps, "--steps", help="DDIM steps."),
    guidance_scale: float = typer.Option(_ANIMATE.guidance_scale, "--guidance-scale", help="Appearance guidance (classifier-free, against the prediction without the reference's features); 1 or less turns it off and halves the UNet's work."),
    seed: int = typer.Option(_ANIMATE.seed, "--seed", help="Noise seed."),
    size: int = typer.Option(_ANIMATE.size, "--size", help="Square working size in pixels (a multiple of 8, 64 to 2048)."),
    context_frames: int = typer.Option(_ANIMATE.context_frames, "--context-frames", help="Frames per window."),
    context_overlap: int = typer.Option(_ANIMATE.context_overlap, "--context-overlap", help="Frames shared by neighbouring windows."),
    fit: str = typer.Option(_ANIMATE.fit, "--fit", help="crop (center crop), pad, or stretch (the official squash)."),
    context_schedule: str = typer.Option(
        _ANIMATE.context_schedule, "--context-schedule",
        help="loop (the official: the last window wraps from the clip's end into its start) or open (no window wraps).",
    ),
    context_fusion: str = typer.Option(
        _ANIMATE.context_fusion, "--context-fusion",
        help="flat (the official mean of overlapping windows) or pyramid (each weighed by the frame's place in it: a gradual hand-over).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cuda, cuda:N or cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of a frames-folder MOTION (default 25); a video, or a clip whose meta.json records one, keeps its own."),
    start: Optional[str] = typer.Option(
        None, "--start", help="Animate only the part of MOTION from this time (seconds or [HH:]MM:SS, as download --start); --audio's sound from there too.",
    ),
    end: Optional[str] = typer.Option(None, "--end", help="Animate the part of MOTION up to this time (exclusive, as download --end); default, or past it: its end."),
    grid: bool = typer.Option(False, "--grid", help="Also write reference | pose | result side by side (OUT_grid; REF, not the --extra-reference images)."),
    audio: Optional[Path] = typer.Option(
        None, "--audio", **PATH_AS_TYPED,
        help="Give OUT (a video) the sound of this video or sound file (a clip folder: the video it was made from), from its start, cut to the animation's length.",
    ),
    audio_start: Optional[str] = typer.Option(
        None, "--audio-start", help="Start the --audio sound this far in (seconds or [HH:]MM:SS from its start), e.g. at the chorus.",
    ),
    keep_aspect: bool = typer.Option(
        False, "--keep-aspect",
        help="With --fit pad or stretch: write frames of the motion's aspect (e.g. 288x512 from a 9:16 motion at --size 512), the padding cut off or the squash undone.",
    ),
    align: bool = typer.Option(False, "--align", help="First fit the poses to the person in REFERENCE, as `magicanimate align` does (feet anchor, first frame)."),
    devices: Optional[str] = typer.Option(
        None, "--devices", help="Split each step's windows across these GPUs, one process each, e.g. 0,1,2,3 (instead of --device)."
    ),
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    strict: bool = STRICT_OPTION,
    fast: bool = typer.Option(
        False, "--fast", help="Fast path: same algorithm, other matrix shapes; within the parity contract, not bit for bit (docs/performance.md)."
    ),
    compile: bool = typer.Option(
        False, "--compile", help="The fast path with its models compiled (torch.compile); the first run of a process compiles first."
    ),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Animate REFERENCE along the DensePose MOTION (MagicAnimate, official algorithm)."""
    from .animate import animate as run

    _call(run, locals())


_ALIGN = _AlignConfig()


@app.command()
def align(
    reference: Path = typer.Argument(..., parser=str, metavar="REF", help="Reference image: the person the poses are fitted to."),
    motion: Path = typer.Argument(..., parser=str, metavar="MOTION", help="DensePose motion: a video, a frames folder, or a clip folder (reads densepose/, records the transform in meta.json)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="An .mp4 (or .gif, .webm, animated .webp), or a folder that receives PNG frames (lossless)."),
    anchor: str = typer.Option(_ALIGN.anchor, "--anchor", help=f"The point that lines up: {', '.join(_ANCHORS)} (bottom centre, box centre, top centre)."),
    frames: str = typer.Option(_ALIGN.frames, "--frames", help=f"Body box of the {' or '.join(_FRAME_MODES)} (per-coordinate median over frames with a body)."),
    ref_box: Optional[str] = typer.Option(None, "--ref-box", help="The reference person's box x0,y0,x1,y1 in reference pixels; default from alpha, matting or DensePose."),
    size: int = typer.Option(_ALIGN.size, "--size", help="Square working size in pixels, as for animate."),
    fit: str = typer.Option(_ALIGN.fit, "--fit", help="crop, pad or stretch, as for animate."),
    models: Optional[Path] = MODELS_OPTION,
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    strict: bool = STRICT_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fit the DensePose MOTION to the person in REFERENCE: one scale and shift for the whole clip (docs/align.md)."""
    from .align import align as run

    _call(run, locals())


@app.command()
def batch(
    manifest: Path = typer.Argument(..., parser=str, help="Tasks: a .jsonl of {\"command\", \"args\"} objects or a .csv with command,args columns."),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Worker processes (local; default one per --gpus entry, else 1) or most actors of a kind (ray)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Run shard I/N of the manifest; default from a Slurm array, else all tasks."),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (a Ray cluster)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join: auto, HOST:PORT or ray://...; default a local cluster for this run."),
    resume: bool = typer.Option(False, "--resume", help="Skip the tasks an earlier run finished; run the failed and unfinished ones."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Local: GPUs for the workers, e.g. 0,1,2,3 or all; each worker sees one."),
    state: Optional[Path] = typer.Option(None, "--state", **PATH_AS_TYPED, help="Folder of per-task records and summaries; default MANIFEST.state beside it."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the CLI commands listed in MANIFEST; exit 1 if any task failed (see docs/batch.md)."""
    from .batch import run_batch as run

    _call(run, locals())


_MATTE = _MatteConfig()


@app.command()
def matte(
    input: Path = typer.Argument(..., parser=str, help="A video, a frames folder, one image, or a clip folder (reads images/, writes masks/)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", **PATH_AS_TYPED, help="Masks folder (PNG, input frame names), .mp4 (or .gif, .webm, .webp), or .png; default CLIP/masks."),
    models: Optional[Path] = MODELS_OPTION,
    model: str = typer.Option(_MATTE.model, "--model", help=f"PaddleSeg model: {', '.join(_MATTE_MODELS)}."),
    soft: bool = typer.Option(False, "--soft", help="Write the person probability (0-255) instead of a 0/255 mask."),
    threshold: float = typer.Option(_MATTE.threshold, "--threshold", help="Person where probability >= this (0.5 = PaddleSeg's argmax)."),
    batch_size: int = typer.Option(_MATTE.batch_size, "--batch-size", help="Frames per forward pass."),
    smooth: int = typer.Option(_MATTE.smooth, "--smooth", help="Temporal median over K frames (odd; 0 or 1 = off)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of a masks .mp4 from a frames-folder INPUT (default 25); a video, or a clip whose meta.json records one, keeps its own."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, or gpu (PaddlePaddle's name; cuda is the same)."),
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Person masks for every frame with PaddleSeg PP-HumanSeg (255 = person); see docs/matting.md."""
    from .matting import matte as run

    _call(run, locals())


_EVAL = _EvalConfig()


@app.command("eval")
def eval_(
    generated: Path = typer.Argument(..., parser=str, help="Generated clip (.mp4 or frames folder) or a folder of clips."),
    ground_truth: Path = typer.Argument(..., parser=str, help="Ground-truth clip, or a folder of clips with the same names."),
    metrics: str = typer.Option(_EVAL.metrics, "--metrics", help="Comma list of l1,psnr,ssim,lpips,fid,fid-vid,fvd (or all)."),
    protocol: str = typer.Option(_EVAL.protocol, "--protocol", help="corrected (float, RGB SSIM, LPIPS on [-1,1]) or disco (DisCo's code, bug for bug)."),
    clip_length: int = typer.Option(_EVAL.clip_length, "--clip-length", help="Frames per FVD/FID-VID clip (disco FVD uses whole videos)."),
    batch_size: int = typer.Option(_EVAL.batch_size, "--batch-size", help="Frames per network forward pass."),
    models: Optional[Path] = MODELS_OPTION,
    device: str = typer.Option("auto", "--device", help="auto, cuda, cuda:N or cpu."),
    download: bool = typer.Option(True, "--download/--no-download", help="Fetch missing metric weights into MODELS/metrics (sha256-verified)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Paper metrics of GENERATED against GROUND_TRUTH, per clip and overall (see docs/evaluation.md)."""
    from .evaluate import evaluate as run

    _call(run, locals())


_DENSEPOSE = _DensePoseConfig()

# Preprocessing (docs/preprocessing.md). Defaults come from the stages' light modules and configs
# (no torch), so --help stays fast; tests/test_cli.py checks them against the library functions'.


@app.command()
def download(
    sources: Optional[list[str]] = typer.Argument(None, metavar="URL_OR_ID...", help="Video URLs or YouTube IDs (with --tracklets: only these IDs' rows)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="Folder that receives DIR/<id>.mp4 (and the cut clips)."),
    start: Optional[str] = typer.Option(None, "--start", help="Cut from this time (seconds or [HH:]MM:SS) into <id>_<start>-<end>.mp4."),
    end: Optional[str] = typer.Option(None, "--end", help="Cut up to this time (exclusive); default the end of the video."),
    tracklets: Optional[Path] = typer.Option(None, "--tracklets", **PATH_AS_TYPED, help="TED-talks metadata CSV: one cut, box-cropped clip per row into DIR/<partition>/."),
    max_height: int = typer.Option(_download.DEFAULT_MAX_HEIGHT, "--max-height", help="Tallest video stream to fetch, in pixels."),
    retries: int = typer.Option(_download.DEFAULT_RETRIES, "--retries", help="Retries after a failed attempt (HTTP errors, broken transfers)."),
    url_template: str = typer.Option(_download.YOUTUBE_URL, "--url-template", help="URL of a YouTube ID ({id}), e.g. a mirror of the videos."),
    sound: bool = typer.Option(False, "--sound", help="Also fetch the sound where it is served apart (YouTube), for animate --audio."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Download and cut again what is already there."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Download videos with yt-dlp (best mp4 video stream; --sound: with sound), cut ranges or TED-talks tracklets; exit 1 if any failed."""
    from .download import download as run

    _call(run, locals())


@app.command()
def frames(
    video: Path = typer.Argument(..., parser=str, help="A video file."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="Folder that receives 00000.png, 00001.png, ..."),
    fps: float = typer.Option(_FRAMES_FPS, "--fps", help="Frames per second to extract (MagicAnimate uses 25)."),
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Extract a video's frames at a fixed rate as lossless PNGs (ffmpeg)."""
    from .frames import frames as run

    _call(run, locals())


@app.command()
def crop(
    input: Path = typer.Argument(..., parser=str, help="A video, a frames folder, an image, or a clip folder (all its subfolders alike)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="An .mp4 (or .gif, .webm, animated .webp), a frames folder, a .png, or (for a clip folder) a clip folder."),
    size: int = typer.Option(_CROP_SIZE, "--size", help="Output square side; 0 keeps the --box / --fov region's own size."),
    box: Optional[str] = typer.Option(None, "--box", help="Fixed region x0,y0,x1,y1 in source pixels (x1, y1 exclusive; fractions rounded outwards)."),
    fov: Optional[str] = typer.Option(None, "--fov", help="Person-centred field of view WxH (e.g. 1024x512), steady over the clip."),
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Center crop (default), fixed box or person-centred field of view; then resize to SIZE×SIZE."""
    from .crop import crop as run

    _call(run, locals())


@app.command()
def flip(
    clip: Path = typer.Argument(..., parser=str, help="A clip folder (images/, densepose/, masks/, densepose_labels/)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="The mirrored clip folder."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Mirror a clip; DensePose parts swap left/right (POINT_LABEL_SYMMETRIES), byte for byte."""
    from .flip import flip as run

    _call(run, locals())


@app.command()
def preprocess(
    inputs: list[Path] = typer.Argument(..., parser=str, metavar="INPUT...", help="Videos, folders of videos (or of frames), list files (.txt, one path a line)."),
    output: Path = typer.Option(..., "-o", "--output", **PATH_AS_TYPED, help="Folder that receives one clip folder per video."),
    flip: bool = typer.Option(False, "--flip", help="Also write the mirrored clip OUT/<clip>_flip/."),
    fov: Optional[str] = typer.Option(None, "--fov", help="Crop a person-centred WxH field of view (e.g. 1024x512) before DensePose."),
    size: int = typer.Option(_CROP_SIZE, "--size", help="Side of the final square frames."),
    fps: float = typer.Option(_FRAMES_FPS, "--fps", help="Frames per second to extract."),
    skip: Optional[str] = typer.Option(None, "--skip", help="Stages to leave out: densepose, matte (comma-separated)."),
    force: bool = typer.Option(False, "--force", help="Redo every stage, even those already finished."),
    keep_work: bool = typer.Option(False, "--keep-work", help="Keep the full-size intermediate frames (OUT/<clip>/.work/)."),
    models: Optional[Path] = MODELS_OPTION,
    densepose_weights: Optional[Path] = typer.Option(None, "--densepose-weights", **PATH_AS_TYPED, help="DensePose weights (.pkl or .pth, R_50_FPN_s1x), as densepose --weights; default the pinned zoo weights."),
    min_score: float = typer.Option(_DENSEPOSE.min_score, "--min-score", help="DensePose: keep people detected with a score above this."),
    fill_missing: bool = typer.Option(_DENSEPOSE.fill_missing, "--fill-missing", help="DensePose: frames without a person take the labels of the nearest frame with one."),
    min_detected: float = typer.Option(_DENSEPOSE.min_detected, "--min-detected", help="DensePose fails for a clip with a person in fewer than this fraction of its frames (0 = never)."),
    allow_truncated: bool = ALLOW_TRUNCATED_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace folders in the way that are not clips of these inputs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Videos -> clip folders: frames, matting, field of view, DensePose, crop, flip (resumable; exit 1 if a stage failed)."""
    from .preprocess import preprocess as run

    _call(run, locals())


@app.command()
def densepose(
    input: Path = typer.Argument(..., parser=str, help="A video, a frames folder, or a clip folder (reads images/, writes densepose/ and densepose_labels/)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", **PATH_AS_TYPED, help="An .mp4 (or .gif, .webm, animated .webp), or a folder of PNG frames; default CLIP/densepose for a clip folder."),
    labels: Optional[Path] = typer.Option(None, "--labels", **PATH_AS_TYPED, help="Also write the part labels 0..24 here (single-channel PNGs); default CLIP/densepose_labels."),
    from_iuv: bool = typer.Option(False, "--from-iuv", help="INPUT is DensePose you already have, as IUV images (PNG frames, or an RGB video): convert their part indices exactly; no model, no detectron2."),
    config: Optional[str] = typer.Option(None, "--config", help="Zoo model (default densepose_rcnn_R_50_FPN_s1x; R_101_FPN_DL_s1x, ...) or a detectron2 DensePose YAML."),
    weights: Optional[Path] = typer.Option(None, "--weights", **PATH_AS_TYPED, help="Model weights (.pkl or .pth); default the zoo weights, downloaded once into MODELS."),
    models: Optional[Path] = MODELS_OPTION,
    batch_size: int = typer.Option(_DENSEPOSE.batch_size, "--batch-size", help="Frames per forward pass."),
    min_score: float = typer.Option(_DENSEPOSE.min_score, "--min-score", help="Keep people detected with a score above this (detectron2's default 0.05 paints spurious people)."),
    max_people: int = typer.Option(_DENSEPOSE.max_people, "--max-people", help="Keep the N best-scoring people per frame (0 = all); MagicAnimate animates one person."),
    fill_missing: bool = typer.Option(_DENSEPOSE.fill_missing, "--fill-missing", help="Frames without a person take the labels of the nearest frame with one."),
    min_detected: float = typer.Option(_DENSEPOSE.min_detected, "--min-detected", help="Fail (exit 1) when a person is found in fewer than this fraction of the frames (0 = never; off with --fill-missing)."),
    smooth: int = typer.Option(_DENSEPOSE.smooth, "--smooth", help="Per-pixel majority label over K frames (odd K; 0 or 1 = off)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of a frames-folder INPUT (default 25); a video, or a clip whose meta.json records one, keeps its own."),
    device: str = typer.Option("auto", "--device", help="auto, cuda, cuda:N or cpu."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """DensePose driving frames as MagicAnimate was trained on (detectron2; see docs/densepose.md)."""
    from .densepose import densepose as run

    _call(run, locals())


models_app = typer.Typer(cls=_Group, help="Get, check and convert the weights (see docs/models.md).", no_args_is_help=True)
app.add_typer(models_app, name="models")
ONLY_OPTION = typer.Option(None, "--only", help="animate, densepose or matting (comma-separated for several); default all.")


@models_app.command("download")
def models_download(
    only: Optional[str] = ONLY_OPTION,
    models: Optional[Path] = MODELS_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files that differ from the published ones."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be downloaded (and its size), fetch nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Download the weights into the official layout; verify and record every file (HF_HUB_OFFLINE respected)."""
    from .models import download as run

    _call(run, locals(), on_plan=None if as_json else _say_plan)


def _say_plan(plan) -> None:
    from .models import format_plan

    _say(format_plan(plan))


@models_app.command("convert")
def models_convert(
    models: Optional[Path] = MODELS_OPTION,
    half: bool = typer.Option(False, "--half", help="Store float16 (half the size; GPU results unchanged, CPU float32 runs use rounded weights)."),
    remove_original: bool = typer.Option(False, "--remove-original", help="Delete the 5 GB pickle after a verified conversion."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing temporal_attention.safetensors."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Convert temporal_attention.ckpt (pickle) to temporal_attention.safetensors, once."""
    from .models import convert as run

    _call(run, locals())


@models_app.command("list")
def models_list(
    models: Optional[Path] = MODELS_OPTION,
    only: Optional[str] = ONLY_OPTION,
    rehash: bool = typer.Option(False, "--rehash", help="Re-hash every recorded file instead of trusting unchanged size and mtime."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every weights file: verified, unverified, missing, corrupt, or replaced by its conversion."""
    from .models import list_models as run

    _call(run, locals())


@app.command()
def demo(
    models: Optional[Path] = MODELS_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on; 0.0.0.0 exposes the page to your network."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu (the models are loaded once, at start)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32."),
    clips: Optional[Path] = typer.Option(None, "--clips", **PATH_AS_TYPED, help="A `magicanimate preprocess` output folder whose clips the page offers as driving sources."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", **PATH_AS_TYPED, help="Folder in which the demo makes its own folder for uploads and runs, kept at exit; default a temporary folder removed at exit."),
    max_upload_mb: int = typer.Option(_demo.DEFAULT_MAX_UPLOAD_MB, "--max-upload-mb", help="Largest upload accepted, in MB."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve a browser page (Gradio, extra 'demo') that runs the whole chain; Ctrl-C stops it."""
    from .demo import demo as run

    _call(run, locals(), on_ready=lambda url: _say(f"demo running at {url} (Ctrl-C to stop)"))  # stderr, --json too: when to connect


@app.command()
def serve(
    socket: Optional[Path] = typer.Option(
        None, "--socket", envvar="MAGICANIMATE_SERVER", **PATH_AS_TYPED, help="Unix socket to listen on; default one in a folder of your own (printed at start)."
    ),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="Stop after this many seconds without a client; default: until Ctrl-C or SIGTERM."),
    preload: bool = typer.Option(False, "--preload", help="Load the animator (--models, --device, --dtype) before taking clients, so the first animate is warm too."),
    models: Optional[Path] = MODELS_OPTION,
    device: str = typer.Option("auto", "--device", help="auto, cuda, cuda:N or cpu: the animator --preload loads."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float16, bfloat16 or float32: the animator --preload loads."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Keep the models loaded for later commands: `magicanimate --server SOCKET animate ...` runs here."""
    from .server import serve as run

    _call(run, locals(), on_ready=_say_serving, on_task=None if as_json else _say_task)  # the ready line (stderr) with --json too


def _say_serving(path) -> None:
    _say(f"serving on {path}: run commands with --server {path} (Ctrl-C to stop)")


def _say_task(record) -> None:
    from .server import describe_task

    _say(describe_task(record))


@app.command()
def doctor(
    models: Optional[Path] = MODELS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check Python, torch and the GPU, ffmpeg, the optional stages, the weights and disk space.

    Exit 0 when `magicanimate animate` can run, 1 otherwise (`ready` in --json)."""
    from .doctor import doctor as run

    _call(run, locals())


def entrypoint() -> None:
    """The console script: usage errors too are one line (and one JSON object with ``--json``)."""
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding lacks is escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if sys.stdout is None and wants_json(sys.argv):  # started with stdout closed (`>&-`): the result would be lost
        with contextlib.suppress(OSError, AttributeError):
            sys.stderr.write("error: --json: standard output is closed, so the result would be lost; redirect it (> result.json)\n")
        sys.exit(2)
    try:
        code = app(standalone_mode=False)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:  # what escapes ``_run``: the result itself could not be printed (stdout on a full disk)
        with contextlib.suppress(OSError):
            typer.echo(f"error: the result could not be written to standard output ({exc.strerror or exc})", err=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):  # not a click usage error
            raise
        message = exc.format_message().strip().replace("\n", " ")
        if wants_json(sys.argv):
            typer.echo(json.dumps({"ok": False, "error": message or "usage", "exit_code": exc.exit_code}))
        if message:  # empty when the help was shown instead (no arguments)
            typer.echo(f"error: {message} (see --help)", err=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
