"""Fast fake commands for the batch tests, written like the real ones: a library function, a
``Command`` line in a registry for batch, and a Typer command (``_run``) for the command line.

``write`` writes a small text file atomically (``--source``: an input's text); it can fail with a ``UserError`` (exit 2), a ``NetworkError`` or a bug
(exit 1), kill its own process the first time it runs (``--crash-once MARKER``) or every time
(``--crash``), write its pid to a file when it starts (``--pid-file``), wait before (``--sleep``, with its temporary made first: ``--temp-first``)
or after (``--linger``) writing, hang (``--hang-once MARKER``) or die (``--die-once MARKER``) right
after its output is committed, the first time, finish its wait whatever stops it (``--unstoppable``: SIGTERM ignored, as
a task that ends before its stop reaches it), and reports (``--report-threads``: with torch's thread count) the process and ``CUDA_VISIBLE_DEVICES`` it ran with.
``model`` does the same with a "model" that batch workers load once (a ``ModelCache``) and count
(the name "broken" fails the cache's check). With ``--sleep`` the wait is reported as ten progress steps.
Worker processes import this module through ``commands="batch_helpers:REGISTRY"``.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import typer

from magicanimate_cli.batch import Command, ModelCache, Registry
from magicanimate_cli.cli import JSON_OPTION, OVERWRITE_OPTION, _run
from magicanimate_cli.errors import InputWarning, NetworkError, UserError

COMMANDS = "batch_helpers:REGISTRY"
LOADS = []  # models loaded by this process

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Fake commands for tests."""


@dataclass(frozen=True)
class WriteResult:
    output: str
    text: str
    pid: int
    cuda_visible_devices: str | None
    model: int | None
    loads: int
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def write(
    output: Path | str,
    *,
    text: str = "hello",
    source: Path | str | None = None,
    fail: str | None = None,
    warn: str | None = None,
    crash_once: Path | str | None = None,
    crash: bool = False,
    sleep: float = 0.0,
    linger: float = 0.0,
    pid_file: Path | str | None = None,
    hang_once: Path | str | None = None,
    die_once: Path | str | None = None,
    report_threads: bool = False,
    temp_first: bool = False,
    unstoppable: bool = False,
    overwrite: bool = False,
    progress=None,
    model=None,
) -> WriteResult:
    output = Path(output)
    ignored = signal.signal(signal.SIGTERM, signal.SIG_IGN) if unstoppable else None
    if pid_file is not None:
        Path(pid_file).write_text(str(os.getpid()))
    if output.exists() and not overwrite:
        raise UserError(f"{output}: already exists; pass --overwrite to replace it or choose another output")
    if source is not None:  # an input: its text is written
        text = Path(source).read_text()
    if warn is not None:  # an InputWarning, as a stage gives one (a motion that is not DensePose), before anything else
        warnings.warn(f"{output}: {warn}", InputWarning, stacklevel=2)
    if fail == "user":
        raise UserError(f"{output}: told to fail; fix the task")
    if fail == "bug":
        raise RuntimeError("told to crash")
    if fail == "network":
        raise NetworkError(f"{output}: no answer from the server; run again")
    if crash:
        os.kill(os.getpid(), signal.SIGKILL)
    if crash_once is not None and not Path(crash_once).exists():
        Path(crash_once).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    tmp = output.with_name(f".{output.name}.partial")
    if temp_first:  # as a stage: its temporary made before the wait, removed when stopped (Ctrl-C, SIGTERM) in it
        tmp.write_text("")
    try:
        for tick in range(10 if sleep else 0):  # the wait in ten parts, each reported
            if progress is not None:
                progress("write", tick, 10)
            time.sleep(sleep / 10)
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    os.replace(tmp, output)
    if unstoppable:  # its process handles the next SIGTERM as before (a batch worker: it stops)
        signal.signal(signal.SIGTERM, ignored)
    time.sleep(linger)
    if hang_once is not None and not Path(hang_once).exists():  # output committed, then stuck until killed
        Path(hang_once).write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    if die_once is not None and not Path(die_once).exists():  # output committed, then killed
        Path(die_once).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return WriteResult(
        output=str(output),
        text=text,
        pid=os.getpid(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        model=model["number"] if model else None,
        loads=len(LOADS),
        threads=_torch_threads() if report_threads else None,
    )


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def load_model(params: dict) -> dict:
    LOADS.append(params["name"])
    return {"name": params["name"], "number": len(LOADS)}


def check_model(params: dict) -> None:
    """The quick check before a model is reused or replaced: the name "broken" fails it."""
    if params["name"] == "broken":
        raise UserError("broken: a model that fails its check; pick another --name")


def modelled(output: Path | str, *, name: str = "tiny", overwrite: bool = False, progress=None, model=None) -> WriteResult:
    """The library function of ``model``: its keyword arguments are the command's options."""
    if model is None:
        model = load_model({"name": name})
    return write(output, text=name, overwrite=overwrite, progress=progress, model=model)


def grid_of(output: Path | str) -> Path:
    """``pair``'s second output, named by no option (as ``animate --grid``'s ``OUT_grid.mp4``)."""
    output = Path(output)
    return output.with_name(f"{output.stem}_grid{output.suffix}")


def pair(output: Path | str, *, labels: Path | str | None = None, grid: bool = True, overwrite: bool = False, progress=None, model=None) -> WriteResult:
    """Writes ``output``, its grid (``grid_of``; with ``--no-grid`` named all the same, but not
    written, as a ``densepose`` folder that is not a clip) and ``labels`` when given."""
    extras = [path for path, wanted in ((grid_of(output), grid), (labels, labels is not None)) if wanted]
    for path in extras:
        if Path(path).exists() and not overwrite:
            raise UserError(f"{path}: already exists; pass --overwrite to replace it or choose another output")
    result = write(output, text="pair", overwrite=overwrite, progress=progress, model=model)
    for path in extras:
        Path(path).write_text("pair")
    return result


REGISTRY = Registry(
    [
        Command("write", f"{__name__}:write", outputs=("output",)),
        Command("pair", f"{__name__}:pair", outputs=("output", "labels"), derived=lambda params: [grid_of(params["output"])] if params.get("output") else []),
        Command("model", f"{__name__}:modelled", outputs=("output",), model=ModelCache("model", key=lambda params: params["name"], load=load_model, check=check_model)),
        Command("sub write", f"{__name__}:write", outputs=("output",)),
    ]
)


@app.command("write")
def write_command(
    output: Path = typer.Option(..., "-o", "--output"),
    text: str = typer.Option("hello", "--text"),
    source: Optional[Path] = typer.Option(None, "--source", help="Write this file's text instead."),
    fail: Optional[str] = typer.Option(None, "--fail", help="user, bug or network"),
    warn: Optional[str] = typer.Option(None, "--warn", help="Give this InputWarning first."),
    crash_once: Optional[Path] = typer.Option(None, "--crash-once"),
    crash: bool = typer.Option(False, "--crash"),
    sleep: float = typer.Option(0.0, "--sleep"),
    linger: float = typer.Option(0.0, "--linger"),
    pid_file: Optional[Path] = typer.Option(None, "--pid-file"),
    hang_once: Optional[Path] = typer.Option(None, "--hang-once"),
    die_once: Optional[Path] = typer.Option(None, "--die-once"),
    report_threads: bool = typer.Option(False, "--report-threads"),
    temp_first: bool = typer.Option(False, "--temp-first"),
    unstoppable: bool = typer.Option(False, "--unstoppable"),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    kwargs = dict(locals())
    kwargs.pop("as_json")
    _run(lambda progress: write(**kwargs, progress=progress), as_json)


@app.command("model")
def model_command(
    output: Path = typer.Option(..., "-o", "--output"),
    name: str = typer.Option("tiny", "--name"),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Without batch: loads its model for this one run."""
    kwargs = dict(locals())
    kwargs.pop("as_json")
    _run(lambda progress: modelled(**kwargs, progress=progress), as_json)


sub = typer.Typer(help="A group of commands, like `magicanimate models`.")
app.add_typer(sub, name="sub")
sub.command("write")(write_command)


@app.command("pair")
def pair_command(
    output: Path = typer.Option(..., "-o", "--output"),
    labels: Optional[Path] = typer.Option(None, "--labels"),
    grid: bool = typer.Option(True, "--grid/--no-grid"),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    kwargs = dict(locals())
    kwargs.pop("as_json")
    _run(lambda progress: pair(**kwargs, progress=progress), as_json)
