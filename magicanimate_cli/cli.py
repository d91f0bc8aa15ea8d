"""The ``magicanimate`` command line: a thin Typer layer over the library functions.

Every option of a command is a keyword argument of the function it calls, with the same name and
default, so the CLI and the API cannot drift. No logic lives here: parsing, calling, reporting.
Exit codes: 0 done, 1 failed (a bug or a failed task), 2 bad input (one line, no traceback unless
``--debug``), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .animate import AnimateConfig
from .errors import UserError

app = typer.Typer(
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
MODELS_OPTION = typer.Option(
    None, "--models", envvar="MAGICANIMATE_MODELS", help="Weights folder (official layout); default ./models of a checkout."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"magicanimate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug


def _run(call: Callable, as_json: bool) -> None:
    """Run ``call(progress)``; print its result; turn errors into exit codes."""
    from .progress import rich_progress

    try:
        with rich_progress(enabled=None if not as_json else False) as progress:
            result = call(progress)
    except UserError as exc:
        _fail(str(exc), 2, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 130, as_json)
    except Exception as exc:  # a bug or an environment failure: say so in one line
        if _state["debug"]:
            traceback.print_exc()
        _fail(f"{exc.__class__.__name__}: {exc} (run with --debug for the traceback)", 1, as_json)
    if as_json:
        typer.echo(json.dumps({"ok": True, **result.to_dict()}))
    else:
        _print_result(result)


def _fail(message: str, code: int, as_json: bool) -> None:
    if _state["debug"] and code == 2:
        traceback.print_exc()
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message, "exit_code": code}))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_result(result) -> None:
    from rich.console import Console

    console = Console(stderr=False)
    for key, value in result.to_dict().items():
        if value is not None:
            console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@app.command()
def animate(
    reference: Path = typer.Argument(..., help="Reference image (any mode and size)."),
    motion: Path = typer.Argument(..., help="DensePose motion: a video, or a folder of frames."),
    output: Path = typer.Option(..., "-o", "--output", help="An .mp4 path, or a folder that receives PNG frames."),
    models: Optional[Path] = MODELS_OPTION,
    steps: int = typer.Option(_ANIMATE.steps, "--steps", help="DDIM steps."),
    guidance_scale: float = typer.Option(_ANIMATE.guidance_scale, "--guidance-scale", help="Appearance guidance scale."),
    seed: int = typer.Option(_ANIMATE.seed, "--seed", help="Noise seed."),
    size: int = typer.Option(_ANIMATE.size, "--size", help="Square working size in pixels (multiple of 8)."),
    context_frames: int = typer.Option(_ANIMATE.context_frames, "--context-frames", help="Frames per window."),
    context_overlap: int = typer.Option(_ANIMATE.context_overlap, "--context-overlap", help="Frames shared by neighbouring windows."),
    fit: str = typer.Option(_ANIMATE.fit, "--fit", help="crop (center crop), pad, or stretch (the official squash)."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Output fps; default the motion video's (frames folder: 25)."),
    grid: bool = typer.Option(False, "--grid", help="Also write reference | pose | result side by side (OUT_grid)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Animate REFERENCE along the DensePose MOTION (MagicAnimate, official algorithm)."""
    from .animate import animate as run

    kwargs = dict(locals())
    kwargs.pop("as_json")
    kwargs.pop("run")
    _run(lambda progress: run(**kwargs, progress=progress), as_json)


def entrypoint() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)
