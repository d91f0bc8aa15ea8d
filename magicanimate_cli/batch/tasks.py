"""Running one manifest task in this process: its library function, with models kept between tasks.

A task names a command of the registry (``registry.py``); its arguments become the keyword
arguments of the command's library function (the one the CLI command calls), with the CLI's
options, defaults and messages. Paths are read against the manifest's folder, whatever the
current folder is, and messages and results name them as written (a ``serve`` task runs in its
client's folder with no ``workdir``: its paths go to the function as typed, as a local run's do). A command
with a ``ModelCache`` (``animate``, ``densepose``, ``matte``) gets a model loaded once per process and reused by every
later task that asks for the same one.

A task ends with the CLI's exit code: 0 done, 2 bad input (``UserError``), 1 failure (any other
exception, or a result whose ``exit_code`` is not 0). Nothing here imports the CLI.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Hashable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import NetworkError, StageFailed, UserError, said_warnings, warn_in_one_line, with_warnings
from ..processes import set_environment
from .registry import Command, ModelCache, Registry, Unknown, Usage, resolve, resolve_path

COMMANDS = "magicanimate_cli.batch.registry:COMMANDS"
"""Where the commands live ("module:attribute" of a ``Registry``)."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The variables that set how many threads torch computes with (and so how it adds up sums)."""

__all__ = ["COMMANDS", "ModelCache", "TaskRunner", "lost_record", "thread_settings", "use_thread_settings", "worker_name"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def thread_settings(env: dict | None = None) -> dict[str, str | None]:
    """This process's thread variables, to give every worker the same (see ``use_thread_settings``)."""
    env = os.environ if env is None else env
    return {name: env.get(name) for name in THREAD_VARIABLES}


def use_thread_settings(settings: dict[str, str | None] | None) -> None:
    """Make this worker compute with the thread count the batch's own process would use.

    Ray sets ``OMP_NUM_THREADS=1`` in its workers, and torch's parallel sums then add up in
    another order than a task run alone: up to one grey level apart. Call before torch is
    imported; if it already is, its thread count is set to what the variables say.
    """
    if settings is None:
        return
    set_environment(settings)
    import sys

    if "torch" in sys.modules:
        import torch

        wanted = settings.get("OMP_NUM_THREADS")
        torch.set_num_threads(int(wanted) if wanted and wanted.isdigit() else _default_threads())


def _default_threads() -> int:
    """torch's own default: one thread per physical core."""
    try:
        cores = {line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("core id")}
        packages = {line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("physical id")}
        physical = len(cores) * max(1, len(packages))
    except OSError:
        physical = 0
    return max(1, physical or os.cpu_count() or 1)


class TaskRunner:
    """Runs tasks of the registry at ``commands`` in this process, caching models per command.

    ``workdir`` is the folder relative paths in the tasks are read against (the manifest's); None:
    the current folder, the paths passed on as written (``serve``, which runs in its client's folder).
    """

    def __init__(self, commands: str | Registry = COMMANDS, workdir: Path | str | None = None) -> None:
        self.registry: Registry = resolve(commands) if isinstance(commands, str) else commands
        if not isinstance(self.registry, Registry):
            raise TypeError(f"{commands} is not a Registry of commands")
        self.workdir = str(workdir) if workdir is not None else None
        self._models: dict[str, tuple[Hashable, Any]] = {}
        self.loads = 0
        self._traceback: str | None = None  # of the last task that failed with an unexpected exception

    # -- reading a task

    def parse(self, command: str, args) -> tuple[Command, dict, dict[str, str]]:
        """The task's command, its keyword arguments with paths read against the manifest's
        folder, and how to name each such path as written (resolved -> written).

        Raises ``Unknown`` or ``Usage``."""
        cmd, rest = self.registry.lookup(command, args)
        params = cmd.parse(rest)
        written: dict[str, str] = {}
        for param in cmd.paths():
            value = params.get(param.name)
            if value is None:
                continue
            values = value if param.many else [value]
            resolved = []
            for item in values:
                path = resolve_path(item, self.workdir)
                if param.kind == "path_or_name" and not os.path.exists(path):
                    path = item
                if path != item:
                    _name_as_written(written, path, item)
                resolved.append(path)
            params[param.name] = resolved if param.many else resolved[0]
        return cmd, params, written

    def check(self, command: str, args) -> str | None:
        """Why this task cannot run (unknown command, arguments that do not fit), or None."""
        try:
            self.parse(command, args)
        except (Unknown, Usage) as exc:
            return str(exc)
        return None

    def outputs(self, command: str, args) -> list[str]:
        """The files or folders this task writes (resolved), as far as its arguments name them."""
        cmd, params, _ = self.parse(command, args)
        paths = [params[name] for name in cmd.outputs if params.get(name)] + (cmd.derived(params) if cmd.derived else [])
        return [os.path.normpath(os.path.abspath(path)) for path in paths]

    def inputs(self, command: str, args) -> list[str]:
        """The files or folders this task reads (resolved): its path arguments and options that name
        neither an output nor a folder it fills (``preprocess -o``). ``models download``'s and
        ``models convert``'s ``--models``, which they write, are counted too."""
        cmd, params, _ = self.parse(command, args)
        written = {*cmd.outputs, "output"}
        paths = []
        for param in cmd.paths():
            value = params.get(param.name)
            if param.name in written or not value or (param.kind == "path_or_name" and not os.path.exists(value)):  # a name
                continue
            paths.extend(value if param.many else [value])
        return [os.path.normpath(os.path.abspath(path)) for path in paths]

    def folders_filled(self, command: str, args) -> list[str]:
        """The folder a task fills that is not its own output (``preprocess -o``, ``download -o``:
        tasks may share it), resolved."""
        cmd, params, _ = self.parse(command, args)
        folder = params.get("output") if "output" not in cmd.outputs else None
        return [os.path.normpath(os.path.abspath(folder))] if isinstance(folder, str) and folder else []

    # -- running a task

    def run(self, task: dict, progress=None, summary_width: int | None = None, debug: bool = False, warned=None,
            told=None) -> dict:
        """Run one task (``Task.to_dict()``) and return its record: the task plus ``status``
        (done/failed), ``exit_code``, ``error``, ``result``, ``seconds``, ``worker`` (host:pid)
        and ``models_loaded`` (how many models this worker has loaded so far).

        ``task["reclaim"]`` (set by the batch for a task whose own earlier attempt left its
        outputs) lets the task replace them, as ``--overwrite`` would. ``progress`` receives the
        task's progress reports (default: none; ``server.py`` sends them to its client). With
        ``summary_width`` the record of a task that returned a result (whatever its exit code) also
        has ``summary``: the lines the CLI would print for a person (``summary.as_text``), that
        many columns wide. With ``debug`` the record of a task that failed with an unexpected
        exception (exit 1) also has ``traceback``: its text, as ``--debug`` prints it. ``warned``
        receives each ``InputWarning`` the task gives, as soon as it is given, with its paths as the
        task wrote them (``server.py`` sends it to its client); every one, also one of a text seen before.
        ``told`` receives the text the CLI prints on stderr while the command runs (``Command.tells``:
        ``models download``'s plan), its paths as the task wrote them; None: nothing is told."""
        warn_in_one_line()  # a task's InputWarning (a motion that is not DensePose): one line, as the CLI prints it
        started = time.perf_counter()
        reclaim = bool(task.get("reclaim"))
        task = {key: value for key, value in task.items() if key != "reclaim"}
        try:
            code, result, error, summary = self._run(task["command"], list(task["args"]), reclaim, progress, summary_width, warned, told)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - nothing a task does may end the batch
            code, result, error, summary = 1, None, f"{exc.__class__.__name__}: {exc}", None
        failure, self._traceback = self._traceback, None
        return {
            **task,
            **({"summary": summary} if summary is not None else {}),
            **({"traceback": failure} if debug and failure is not None else {}),
            "status": "done" if code == 0 else "failed",
            "exit_code": code,
            "error": error,
            "result": result,
            "seconds": round(time.perf_counter() - started, 3),
            "worker": worker_name(),
            "models_loaded": self.loads,
        }

    def _run(self, command: str, args: list[str], reclaim: bool, progress=None,
             summary_width: int | None = None, warned=None, told=None) -> tuple[int, dict | None, str | None, str | None]:
        try:
            cmd, params, written = self.parse(command, args)
        except (Unknown, Usage) as exc:
            return 2, None, str(exc), None
        if reclaim and "overwrite" in params:
            params["overwrite"] = True
        extra = {}
        if "progress" in _signature(cmd):
            from ..progress import silent

            extra["progress"] = progress or silent
        if told is not None:
            for keyword, formatter in cmd.tells:
                extra[keyword] = lambda value, text=resolve(formatter): told(_as_written(text(value), written))
        said: list[str] = []
        try:
            with _warnings_to(warned, written, said):
                if cmd.model is not None and (cmd.model.needed is None or cmd.model.needed(params)):
                    extra[cmd.model.keyword] = self.model(cmd.name, cmd.model, params)
                elif cmd.model is not None:
                    if cmd.model.check is not None:
                        cmd.model.check(params)  # a bad task fails first, keeping the model for the others
                    self._let_go(cmd.name)  # its own processes load theirs: leave them the memory
                result = cmd.load()(**params, **extra)
        except UserError as exc:
            return 2, _said(said, written), _as_written(str(exc), written), None
        except (StageFailed, NetworkError) as exc:
            return 1, _said(said, written), _as_written(str(exc), written), None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the CLI's exit 1: report the failure, keep going
            from ..files import write_error

            refusal = write_error(exc)  # as the CLI: a full disk, a name too long, ... is exit 2
            if refusal is not None:
                return 2, _said(said, written), _as_written(str(refusal), written), None
            import traceback

            self._traceback = traceback.format_exc()  # for run(debug=True)
            return 1, _said(said, written), _as_written(f"{exc.__class__.__name__}: {exc}", written), None
        data = _as_written(with_warnings(result.to_dict(), said), written)  # what --json prints, less its ok
        summary = None
        if summary_width is not None:
            from ..summary import as_text

            summary = _as_written(as_text(result, summary_width), written)
        code = getattr(result, "exit_code", 0) or 0
        if code == 0:
            return 0, data, None, summary
        error = data.pop("error", None) or _as_written(getattr(result, "failure", None), written)  # the line the CLI says
        data.pop("exit_code", None)
        return code, data or None, str(error or f"'{cmd.name}' exited with code {code}; its result says what failed"), summary

    def model(self, name: str, cache: ModelCache, params: dict, check: bool = True):
        """The model ``params`` ask for: the one already loaded, or a fresh one replacing it.

        ``params`` are a task's keyword arguments, checked first (``cache.check``) unless
        ``check`` is false (``serve --preload``, which has no task: it checks the weights itself)."""
        if check and cache.check is not None:
            cache.check(params)
        key = cache.key(params)
        held = self._models.get(name)
        if held is not None and held[0] == key:
            return held[1]
        del held
        self._let_go(name)
        model = cache.load(params)
        self.loads += 1
        self._models[name] = (cache.key(params), model)  # as it is now: a load may have downloaded the weights the key names
        return model

    def _let_go(self, name: str) -> None:
        """Drop the model held for ``name``, its GPU memory included (torch keeps freed blocks
        for itself until asked: another process could not have them)."""
        if self._models.pop(name, None) is None:
            return
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _signature(command: Command) -> set[str]:
    import inspect

    return set(inspect.signature(command.load()).parameters)


@contextmanager
def _warnings_to(warned, written: dict[str, str], said: list[str]):
    """Inside: each ``InputWarning`` goes to ``said`` (for the result's ``warnings``: the task's
    own, not passed on to a list outside it, ``errors.said_warnings``) and to ``warned`` (if any),
    its paths as the task wrote them."""
    with said_warnings(said, alone=True):
        if warned is not None:
            warn_in_one_line(also=lambda text: warned(_as_written(text, written)))
        yield


def _said(said: list[str], written: dict[str, str]) -> dict | None:
    """The result of a task that failed after it warned: its ``warnings``, as the CLI's failure JSON lists them."""
    return _as_written(with_warnings({}, said), written) or None


def _name_as_written(written: dict[str, str], path: str, item: str) -> None:
    """Let ``_as_written`` name ``path`` (``item`` read against the manifest's folder) as ``item``:
    in each form a stage may print it (``/m/../x`` as joined, ``/m/x`` normalised or as a ``Path``
    shows ``/m/./x``), and with its extension off, so that a path made beside it (``OUT_grid.mp4``
    of ``OUT.mp4``) is named as written too."""
    as_written = os.path.normpath(item)
    for form in {path, os.path.normpath(path), str(Path(path))}:
        written[form] = as_written
        stem, extension = os.path.splitext(form)
        if extension and os.path.basename(stem):
            written.setdefault(stem, os.path.splitext(as_written)[0])


def _as_written(value, written: dict[str, str]):
    """``value`` (a message or a result) with each resolved path named as the manifest wrote it."""
    if not written:
        return value
    if isinstance(value, str):
        for resolved in sorted(written, key=len, reverse=True):
            if resolved in value:  # a path, or one made from it (OUT_grid.mp4, OUT/00000.png), not OUTSIDE
                value = re.sub(re.escape(resolved) + r"(?![^\W_])", lambda _: written[resolved], value)
        return value
    if isinstance(value, dict):
        return {key: _as_written(item, written) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_written(item, written) for item in value)
    return value


def lost_record(task: dict, error: str) -> dict:
    """The record of a task whose worker was lost (no result, exit code 1)."""
    task = {key: value for key, value in task.items() if key != "reclaim"}
    return {**task, "status": "failed", "exit_code": 1, "error": error, "result": None, "seconds": None, "worker": None, "models_loaded": None}
