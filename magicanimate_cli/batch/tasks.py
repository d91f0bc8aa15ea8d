"""Running one manifest task in this process, as the CLI would, with models kept between tasks.

A task is run by the very command that runs it on the command line: its arguments are parsed by
that command's click parser (same options, defaults, environment variables and errors), and

* for a command with a registered ``ModelCache`` (``animate``), the parsed options are passed to
  the command's library function together with a model loaded once per process and reused by
  every later task that asks for the same model;
* for every other command, the command itself is invoked with ``--json`` (``standalone_mode=False``),
  its one JSON result is read from the captured stdout, and its exit code is kept.

Either way a task ends with the CLI's exit code: 0 done, 2 bad input (``UserError``), 1 failure.
A stage that gets a model cache of its own registers it with ``register_model_cache``.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import socket
import time
from collections.abc import Callable, Hashable
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

COMMANDS = "magicanimate_cli.cli:app"
"""Where the commands live ("module:attribute" of a Typer app or click group)."""

GPU_COMMANDS = {"animate", "densepose"}
"""Commands that ask the Ray engine for a GPU when the cluster has GPUs."""

NOT_TASKS = {"batch"}


@dataclass(frozen=True)
class ModelCache:
    """How a command's model is loaded once per worker and handed to its library function.

    ``function`` ("module:name") is the library function the command calls with its parsed
    options as keyword arguments; the loaded model goes in as ``keyword``. ``key(params)`` says
    which model the options ask for (tasks with the same key share it) and ``load(params)``
    loads it. A worker keeps one model per command: a task asking for another one replaces it.
    """

    function: str
    keyword: str
    key: Callable[[dict], Hashable]
    load: Callable[[dict], Any]


def _animate_key(params: dict) -> Hashable:
    from ..models import resolve_models_dir

    devices = params.get("devices")
    device = devices if devices and "," not in devices else params.get("device", "auto")
    return (str(resolve_models_dir(params.get("models")).resolve()), device, params.get("dtype", "auto"))


def _animate_load(params: dict):
    from ..animate import load_pipeline, pin_cpu_kernels

    pin_cpu_kernels()
    return load_pipeline(params.get("models"), _animate_key(params)[1], params.get("dtype", "auto"))


MODEL_CACHES: dict[str, ModelCache] = {
    "animate": ModelCache("magicanimate_cli.animate:animate", "pipeline", _animate_key, _animate_load),
}


def register_model_cache(command: str, cache: ModelCache) -> None:
    """Have batch workers load ``command``'s model once and pass it to every task of theirs."""
    MODEL_CACHES[command] = cache


def resolve(path: str):
    """The object named by ``"module:attribute"``."""
    module, _, attribute = path.partition(":")
    target = importlib.import_module(module)
    for name in attribute.split(".") if attribute else ():
        target = getattr(target, name)
    return target


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def working_directory(path: Path | str | None):
    if path is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class TaskRunner:
    """Runs tasks of the commands at ``commands`` in this process, caching models per command.

    ``workdir`` is the folder relative paths in the tasks are read against (the manifest's).
    """

    def __init__(self, commands: str = COMMANDS, workdir: Path | str | None = None) -> None:
        import typer

        target = resolve(commands)
        group = typer.main.get_command(target) if isinstance(target, typer.Typer) else target
        if not _is_group(group):
            raise TypeError(f"{commands} is not a group of commands")
        self.group = group
        self.workdir = workdir
        self._models: dict[str, tuple[Hashable, Any]] = {}
        self.loads = 0

    @staticmethod
    def _context(command):
        return command.context_class(command)

    def resolve(self, command: str, args) -> tuple[Any, list[str], str]:
        """The command a task names, its own arguments and its full name.

        ``command`` may name a subcommand (``"models download"``), and a group's subcommand may
        also be the first argument (``"models"`` with ``["download", ...]``).
        """
        cmd, names, rest = self.group, [], list(args)
        words = command.split()
        while words or (_is_group(cmd) and rest and not rest[0].startswith("-")):
            word = words.pop(0) if words else rest.pop(0)
            if not _is_group(cmd):
                raise _Unknown(f"'{' '.join(names)}' has no subcommands; {word!r} belongs in args")
            sub = cmd.get_command(self._context(cmd), word)
            if sub is None:
                where = f"'{' '.join(names)}' has no subcommand" if names else "unknown command"
                known = ", ".join(sorted(n for n in cmd.list_commands(self._context(cmd)) if n not in NOT_TASKS))
                raise _Unknown(f"{where} {word!r} (commands: {known})")
            cmd = sub
            names.append(word)
        if _is_group(cmd):
            known = ", ".join(sorted(cmd.list_commands(self._context(cmd))))
            raise _Unknown(f"'{' '.join(names)}' needs a subcommand ({known})")
        return cmd, rest, " ".join(names)

    def check(self, command: str, args: tuple[str, ...] | list[str]) -> str | None:
        """Why this task cannot run (unknown command, arguments that do not parse), or None."""
        with working_directory(self.workdir):
            return self._check(command, args)

    def _check(self, command: str, args) -> str | None:
        if command.split()[:1] and command.split()[0] in NOT_TASKS:
            return f"'{command}' cannot be a task of a batch"
        try:
            cmd, rest, name = self.resolve(command, args)
            cmd.make_context(name, rest)
        except _Unknown as exc:
            return str(exc)
        except Exception as exc:
            kind, code, message = _click_outcome(exc)
            if kind == "exit":
                return "the arguments ask for help or a version instead of running the command"
            if kind == "usage":
                return message
            raise
        return None

    def run(self, task: dict) -> dict:
        """Run one task (``Task.to_dict()``) and return its record: the task plus ``status``
        (done/failed), ``exit_code``, ``error``, ``result``, ``seconds``, ``worker`` (host:pid)
        and ``models_loaded`` (how many models this worker has loaded so far)."""
        started = time.perf_counter()
        captured = io.StringIO()
        with working_directory(self.workdir), redirect_stdout(captured):
            try:
                code, result, error = self._run(task["command"], list(task["args"]))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - nothing a task does may end the batch
                code, result, error = 1, None, f"{exc.__class__.__name__}: {exc}"
        return {
            **task,
            "status": "done" if code == 0 else "failed",
            "exit_code": code,
            "error": error,
            "result": result,
            "seconds": round(time.perf_counter() - started, 3),
            "worker": worker_name(),
            "models_loaded": self.loads,
        }

    def _run(self, name: str, args: list[str]) -> tuple[int, dict | None, str | None]:
        problem = self.check(name, args)
        if problem:
            return 2, None, problem
        cmd, args, name = self.resolve(name, args)
        if name in MODEL_CACHES:
            return self._run_with_model(name, cmd, args, MODEL_CACHES[name])
        return self._invoke(name, cmd, args)

    def _invoke(self, name: str, cmd, args: list[str]) -> tuple[int, dict | None, str | None]:
        """Invoke the command itself, as the CLI does, and read its ``--json`` result."""
        has_json = any("--json" in getattr(param, "opts", ()) for param in cmd.params)
        argv = args + (["--json"] if has_json and "--json" not in args else [])
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            try:
                returned = cmd.main(args=argv, prog_name=f"magicanimate {name}", standalone_mode=False)
                code = returned if isinstance(returned, int) else 0
            except Exception as exc:
                kind, code, message = _click_outcome(exc)
                if kind == "usage":
                    return code, None, message
                if kind == "abort":
                    raise KeyboardInterrupt from None
                if kind != "exit":
                    raise
        if code == 130:
            raise KeyboardInterrupt
        data = _last_json(stdout.getvalue())
        if data is None:
            return code, None, None if code == 0 else f"'{name}' exited with code {code}"
        data.pop("ok", None)
        if code == 0:
            return 0, data, None
        error = data.pop("error", None)
        data.pop("exit_code", None)
        return code, data or None, str(error or f"'{name}' exited with code {code}; its result says what failed")

    def _run_with_model(self, name: str, cmd, args: list[str], cache: ModelCache) -> tuple[int, dict | None, str | None]:
        """Parse like the command, then call its library function with the cached model."""
        from ..progress import silent

        params = dict(cmd.make_context(name, list(args)).params)
        params.pop("as_json", None)
        try:
            model = self.model(name, cache, params)
            result = resolve(cache.function)(**params, progress=silent, **{cache.keyword: model})
        except UserError as exc:
            return 2, None, str(exc)
        except Exception as exc:  # the CLI's exit 1: report the failure, keep going
            return 1, None, f"{exc.__class__.__name__}: {exc}"
        return 0, result.to_dict(), None

    def model(self, name: str, cache: ModelCache, params: dict):
        """The model ``params`` ask for: the one already loaded, or a fresh one replacing it."""
        key = cache.key(params)
        held = self._models.get(name)
        if held is not None and held[0] == key:
            return held[1]
        self._models.pop(name, None)
        del held
        model = cache.load(params)
        self.loads += 1
        self._models[name] = (key, model)
        return model


class _Unknown(Exception):
    """A task names a command that does not exist."""


def _is_group(command) -> bool:
    return hasattr(command, "get_command") and hasattr(command, "list_commands")


def lost_record(task: dict, error: str) -> dict:
    """The record of a task whose worker was lost (no result, exit code 1)."""
    return {**task, "status": "failed", "exit_code": 1, "error": error, "result": None, "seconds": None, "worker": None, "models_loaded": None}


def _click_outcome(exc: BaseException) -> tuple[str, int, str]:
    """What a click/Typer exception means: ("usage", 2, message), ("exit", code, ""),
    ("abort", 130, "") or ("other", 1, ""). Duck-typed, so it holds for click and for the
    click that newer Typer versions carry inside (typer._click)."""
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int) and callable(getattr(exc, "format_message", None)):
        return "usage", code, exc.format_message()
    if isinstance(code, int) and type(exc).__name__ == "Exit":
        return "exit", code, ""
    if type(exc).__name__ == "Abort":
        return "abort", 130, ""
    return "other", 1, ""


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                return data
    return None
