"""What a batch task can be: command names mapped onto library functions, and their arguments.

A ``Command`` is one line: the name a manifest writes, the library function the CLI command calls
(``"module:function"``), which of its parameters are positional arguments, and which name the
files the task writes. Everything else is read off the function's signature: each keyword
parameter with a CLI type (``str``, ``int``, ``float``, ``bool``, ``Path``, optional or a list of
them) is an option ``--name-with-dashes`` with the function's default; a ``bool`` is a flag
(``--no-name`` too when it defaults to true); ``output`` is also ``-o``. Parameters of other types
(a loaded model, a callback) are not options. ``SPELLINGS`` and ``Command.types`` hold the few
exceptions. tests/batch/test_registry.py keeps this table equal to the CLI's commands.

``parse(command, args)`` turns a manifest line into the function's keyword arguments, with the
CLI's rules and messages (unknown option, wrong type, missing argument), without importing the
CLI and without running anything.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

KINDS = ("str", "int", "float", "bool", "path", "path_or_name")
"""``path``: read against the manifest's folder. ``path_or_name``: the same when such a file
exists there, else passed as written (a model-zoo name, say)."""

SPELLINGS = {"output": ("-o", "--output"), "extra_references": ("--extra-reference",)}
"""Option spellings that are not ``--name-with-dashes``, for every command."""

IGNORED = ("--json", "--debug")
"""CLI switches a task may carry and a batch ignores (results are always collected as JSON)."""

NOT_TASKS = ("batch", "demo", "serve")  # the demo and serve are servers, not tasks
NOT_OPTIONS = ("progress",)


class Unknown(Exception):
    """A task names a command that does not exist."""


class Usage(Exception):
    """A task's arguments do not fit its command (the CLI's usage error)."""


@dataclass(frozen=True)
class ModelCache:
    """How a command's model is loaded once per worker and handed to its library function.

    The loaded model goes in as ``keyword``. ``key(params)`` says which model the task's keyword
    arguments ask for (tasks with the same key share it) and ``load(params)`` loads it.
    ``needed(params)``, when given, says whether the task uses the model at all (``animate
    --devices 0,1`` starts a process per device, each loading its own); a task that does not
    gets none, and a model held for earlier tasks is let go, to leave its device's memory free.
    ``check(params)``, when given, runs for every task before the model is reused or replaced:
    the command's own checks before its work (``check_animate``, ...: settings, weights folder,
    inputs, outputs). A task naming a missing input, a taken output or a broken weights folder
    fails at once, without loading a model or dropping the loaded one, and a reused model's files
    are still checked against their record.
    """

    keyword: str
    key: Callable[[dict], Hashable]
    load: Callable[[dict], Any]
    check: Callable[[dict], None] | None = None
    needed: Callable[[dict], bool] | None = None


@dataclass(frozen=True)
class Param:
    """One argument or option of a command."""

    name: str
    kind: str
    flags: tuple[str, ...] = ()  # options: the spellings; empty for a positional argument
    negative: tuple[str, ...] = ()  # a flag's --no-NAME
    default: Any = None
    required: bool = False
    many: bool = False

    @property
    def positional(self) -> bool:
        return not self.flags

    @property
    def label(self) -> str:
        if self.positional:
            return f"'{self.name.upper()}{'...' if self.many else ''}'"
        return " / ".join(f"'{flag}'" for flag in self.flags)


@dataclass(frozen=True)
class Command:
    """One task command: ``name`` in the manifest, the library ``function`` it calls, which of the
    function's parameters are positional ``arguments`` (``"inputs..."``: one or more), which
    parameters name files the task writes (``outputs``: no two tasks of a manifest may share one),
    ``types`` for parameters whose annotation does not say (``(("inputs", "path"),)``),
    ``exclude`` for parameters that are not options, a ``model`` loaded once per worker,
    ``gpu`` when Ray should give its tasks a GPU, and ``derived(params)`` for the paths a task
    writes that no option names (``animate --grid`` writes ``OUTPUT_grid`` too; ``matte CLIP``
    writes ``CLIP/masks``). ``tells`` pairs a callback parameter the CLI gives (without ``--json``)
    with the function that makes its argument the text the CLI prints on stderr (``models
    download``'s plan), so that a ``serve`` task tells its client the same."""

    name: str
    function: str
    arguments: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    types: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    model: ModelCache | None = field(default=None, compare=False)
    gpu: bool = False
    derived: Callable[[dict], list] | None = field(default=None, compare=False)  # outputs named by no option (animate's grid, a clip's folders)
    tells: tuple[tuple[str, str], ...] = ()  # (callback, "module:formatter"): what the CLI prints on stderr meanwhile (a plan)

    def load(self) -> Callable:
        return resolve(self.function)

    @cached_property
    def params(self) -> tuple[Param, ...]:
        return tuple(_params(self))

    @cached_property
    def _options(self) -> dict[str, tuple[Param, bool]]:
        table = {}
        for param in self.params:
            for flag in param.flags:
                table[flag] = (param, True)
            for flag in param.negative:
                table[flag] = (param, False)
        return table

    def parse(self, args: Iterable[str]) -> dict:
        """The function's keyword arguments for ``args`` (defaults filled in; paths as written).

        Raises ``Usage`` with the CLI's one-line message when they do not fit.
        """
        values: dict[str, Any] = {}
        words: list[str] = []
        rest = list(args)
        while rest:
            word = rest.pop(0)
            if word == "--":
                words.extend(rest)
                break
            if not word.startswith("-") or word == "-" or _is_number(word):
                words.append(word)
                continue
            if word in IGNORED:
                continue
            if word in ("--help", "-h", "--version"):
                raise Usage("the arguments ask for help or a version instead of running the command")
            flag, eq, attached = word.partition("=") if word.startswith("--") else (word[:2], "", word[2:])
            attached_value = eq or (not word.startswith("--") and attached)
            if flag not in self._options:
                raise Usage(f"No such option: {flag}")
            param, positive = self._options[flag]
            if param.kind == "bool":
                if attached_value:
                    raise Usage(f"Option '{flag}' does not take a value.")
                values[param.name] = positive
                continue
            if attached_value:
                value = attached
            elif rest:
                value = rest.pop(0)
            else:
                raise Usage(f"Option '{flag}' requires an argument.")
            if param.many:  # a repeatable option (animate --extra-reference): each one adds a value
                values.setdefault(param.name, []).append(_convert(param, value, flag))
            else:
                values[param.name] = _convert(param, value, flag)
        for param in self.params:
            if not param.positional:
                continue
            if param.many:
                taken, words = words, []
                if taken:
                    values[param.name] = [_convert(param, word, param.label) for word in taken]
            elif words:
                values[param.name] = _convert(param, words.pop(0), param.label)
        if words:
            raise Usage(f"Got unexpected extra argument{'s' if len(words) > 1 else ''} ({' '.join(words)})")
        for param in self.params:
            if param.name not in values:
                if param.required:
                    what = "argument" if param.positional else "option"
                    raise Usage(f"Missing {what} {param.label}.")
                values[param.name] = [] if param.many and param.default is None else param.default
        return values

    def paths(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind in ("path", "path_or_name"))


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _convert(param: Param, value: str, where: str):
    where = where if where.startswith("'") else f"'{where}'"
    if param.kind == "int":
        try:
            return int(value)
        except ValueError:
            raise Usage(f"Invalid value for {where}: {value!r} is not a valid integer.") from None
    if param.kind == "float":
        try:
            return float(value)
        except ValueError:
            raise Usage(f"Invalid value for {where}: {value!r} is not a valid float.") from None
    return value


# ----------------------------------------------------------------------------- signatures

_BASIC = {"Path": "path", "str": "str", "int": "int", "float": "float", "bool": "bool"}
_PRIORITY = ("path", "str", "float", "int", "bool")


def _kind_of(annotation: str) -> tuple[str | None, bool, bool]:
    """``(kind, many, optional)`` of an annotation written as a string; kind None when it is not
    a CLI type (a model, a callback)."""
    kinds, many, optional = set(), False, False
    for token in _split_union(annotation):
        if token == "None":
            optional = True
            continue
        inner = token
        for container in ("list[", "tuple[", "Sequence[", "Iterable["):
            if token.startswith(container) and token.endswith("]"):
                inner, many = token[len(container) : -1].split(",")[0].strip(), True
        if inner.startswith("Optional[") and inner.endswith("]"):
            inner, optional = inner[9:-1], True
        for part in _split_union(inner):  # Sequence[Path | str]: each of its types
            if part not in _BASIC:
                return None, False, False
            kinds.add(_BASIC[part])
    kind = next((k for k in _PRIORITY if k in kinds), None)
    return kind, many, optional


def _split_union(annotation: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def _annotation_text(annotation) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace("typing.", "").replace("pathlib.", "")


def _params(command: Command) -> Iterable[Param]:
    signature = inspect.signature(command.load())
    overrides = dict(command.types)
    model = command.model.keyword if command.model else None
    positional = [a.rstrip(".") for a in command.arguments]
    for name, parameter in signature.parameters.items():
        if name in NOT_OPTIONS or name in command.exclude or name == model:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        text = _annotation_text(parameter.annotation)
        has_default = parameter.default is not inspect.Parameter.empty
        kind, many, optional = _kind_of(text) if text else (None, False, False)
        if not text and has_default and parameter.default is not None:
            kind = _BASIC.get(type(parameter.default).__name__)
        if name in overrides:
            kind = overrides[name]
        if name in positional:
            many = command.arguments[positional.index(name)].endswith("...")
        if kind is None:
            continue  # not a CLI value: a loaded model, a callback, ...
        if kind not in KINDS:
            raise ValueError(f"{command.name}: unknown kind {kind!r} for {name}")
        default = parameter.default if has_default else None
        required = not has_default and not optional
        if name in positional:
            yield Param(name, kind, default=default, required=required, many=many)
            continue
        flags = SPELLINGS.get(name, ("--" + name.replace("_", "-"),))
        negative = ("--no-" + name.replace("_", "-"),) if kind == "bool" and default is True else ()
        yield Param(name, kind, flags=flags, negative=negative, default=default, required=required, many=many)
    missing = set(positional) - set(signature.parameters)
    if missing:
        raise ValueError(f"{command.name}: {command.function} has no parameter {sorted(missing)[0]!r}")


# ----------------------------------------------------------------------------- the registry


class Registry:
    """Commands by name; a name of several words is a command of a group (``models download``)."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands = {command.name: command for command in commands}
        self._next: dict[str, list[str]] = {}
        for name in self.commands:
            words = name.split()
            for i, word in enumerate(words):
                below = self._next.setdefault(" ".join(words[:i]), [])
                if word not in below:
                    below.append(word)

    def __iter__(self):
        return iter(self.commands.values())

    def __getitem__(self, name: str) -> Command:
        return self.commands[name]

    def _below(self, group: str) -> list[str]:
        """The next words after ``group`` ("" for the top level) that the commands have."""
        return sorted(self._next.get(group, ()))

    def lookup(self, command: str, args: Iterable[str]) -> tuple[Command, list[str]]:
        """The command a task names and its own arguments; a group's command may also be the
        first argument (``"models"`` with ``["download", ...]``). Raises ``Unknown``."""
        words, rest = command.split(), list(args)
        if words and words[0] in NOT_TASKS:
            raise Unknown(f"'{command}' cannot be a task of a batch")
        name = ""
        while name not in self.commands:
            if words:
                word = words.pop(0)
            elif name and rest and not rest[0].startswith("-"):
                word = rest.pop(0)
            else:
                raise Unknown(f"'{name}' needs a subcommand ({', '.join(self._below(name))})")
            if word not in self._below(name):
                where = f"'{name}' has no subcommand" if name else "unknown command"
                raise Unknown(f"{where} {word!r} (commands: {', '.join(self._below(name))})")
            name = f"{name} {word}".strip()
        if words:
            raise Unknown(f"'{name}' has no subcommands; {words[0]!r} belongs in args")
        return self.commands[name], rest


# ----------------------------------------------------------------------------- this package's commands


def _animate_key(params: dict) -> Hashable:
    """Which animator a task needs: the models folder, and the device and dtype as this machine
    resolves them (``auto``, ``cuda`` and ``cuda:0`` on a one-GPU machine are one pipeline)."""
    from ..animate import pin_cpu_kernels, resolve_device_dtype
    from ..animate.distributed import check_devices, parse_devices
    from ..weights_layout import resolve_models_dir

    pin_cpu_kernels()  # this imports torch: the kernels are pinned first, as for the load
    import torch

    devices = parse_devices(params.get("devices"))  # --devices 0: the one GPU, in this process
    check_devices(devices)
    device = devices[0] if devices else params.get("device", "auto")
    device, dtype = resolve_device_dtype(device, params.get("dtype", "auto"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return (str(resolve_models_dir(params.get("models")).resolve()), str(device), str(dtype).removeprefix("torch."))


def _animate_check(params: dict) -> None:
    from ..animate import check_animate

    check_animate(**params)


def _animate_load(params: dict):
    from ..animate import load_pipeline

    _, device, dtype = _animate_key(params)  # pins the CPU kernels before torch is imported
    return load_pipeline(params.get("models"), device, dtype)


def _animate_needed(params: dict) -> bool:
    from ..animate.distributed import parse_devices

    return len(parse_devices(params.get("devices"))) <= 1


ANIMATE_MODEL = ModelCache("pipeline", _animate_key, _animate_load, _animate_check, _animate_needed)


def _animate_grid(params: dict) -> list:
    from ..animate import grid_path

    return [grid_path(Path(params["output"]))] if params.get("grid") and params.get("output") else []


def _matte_defaults(params: dict) -> list:
    """``matte CLIP`` without ``-o`` writes ``CLIP/masks``."""
    from ..clip import MASKS

    return [os.path.join(params["input"], MASKS)] if params.get("input") and params.get("output") is None else []


def _densepose_defaults(params: dict) -> list:
    """``densepose CLIP`` writes ``CLIP/densepose`` and ``CLIP/densepose_labels`` unless ``-o`` and
    ``--labels`` name others (an input without ``-o`` can only be a clip folder). A folder that is
    not a clip yet when the manifest is checked may be one when the task runs: counted too."""
    from ..clip import DENSEPOSE, LABELS
    from ..media import is_video

    source = params.get("input")
    if not source or (params.get("output") is not None and is_video(Path(source))):  # a video is no clip: labels only where --labels says
        return []
    return [os.path.join(source, name) for key, name in (("output", DENSEPOSE), ("labels", LABELS)) if params.get(key) is None]


def _file_state(path: Path) -> tuple | None:
    """A weights file's identity: a file replaced under the same name loads again."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _densepose_key(params: dict) -> Hashable:
    """Which DensePose estimator a task needs: the model and weights its labels depend on (as
    ``densepose`` keys its resumable work), the weights file as it is now, the models folder, the
    device as this machine resolves it, and the score and people limits built into the model."""
    from ..densepose.estimator import model_key, resolve_model, weights_path
    from ..device import resolve_device

    weights, (spec, _) = params.get("weights"), resolve_model(params.get("config"))
    file = Path(weights).expanduser() if weights is not None else weights_path(spec, params.get("models")) if spec is not None else None
    return (model_key(params.get("config"), weights)[1], _file_state(file) if file is not None else None,
            resolve_device(params.get("device", "auto")), params.get("min_score"), params.get("max_people"))  # fmt: skip


def _densepose_check(params: dict) -> None:
    from ..densepose import check_densepose

    check_densepose(**params)


def _densepose_load(params: dict):
    from ..densepose import DensePoseConfig
    from ..densepose.estimator import load_estimator

    defaults = DensePoseConfig()
    return load_estimator(params.get("config"), params.get("weights"), params.get("models"), params.get("device", "auto"),
                          params.get("min_score", defaults.min_score), params.get("max_people", defaults.max_people))  # fmt: skip


DENSEPOSE_MODEL = ModelCache("estimator", _densepose_key, _densepose_load, _densepose_check)


def _matte_key(params: dict) -> Hashable:
    """Which matting network a task needs: the model, its weights file as it is now, the device asked."""
    from ..matting import DEFAULT_MODEL, weights_path

    model = params.get("model", DEFAULT_MODEL)
    device = params.get("device", "auto")
    return (model, _file_state(weights_path(model, params.get("models"))), "gpu" if device == "cuda" else device)


def _matte_check(params: dict) -> None:
    from ..matting import check_matte

    check_matte(**params)


def _matte_load(params: dict):
    from ..matting import DEFAULT_MODEL, load_segmenter

    return load_segmenter(params.get("model", DEFAULT_MODEL), params.get("models"), params.get("device", "auto"))


MATTE_MODEL = ModelCache("segmenter", _matte_key, _matte_load, _matte_check)

COMMANDS = Registry(
    [
        Command("animate", "magicanimate_cli.animate:animate", ("reference", "motion"), ("output",), model=ANIMATE_MODEL, gpu=True,
                derived=_animate_grid),  # fmt: skip
        Command("align", "magicanimate_cli.align:align", ("reference", "motion"), ("output",)),
        Command("densepose", "magicanimate_cli.densepose:densepose", ("input",), ("output", "labels"), (("config", "path_or_name"),),
                model=DENSEPOSE_MODEL, gpu=True, derived=_densepose_defaults),  # fmt: skip
        Command("matte", "magicanimate_cli.matting:matte", ("input",), ("output",), model=MATTE_MODEL, derived=_matte_defaults),
        Command("eval", "magicanimate_cli.evaluate:evaluate", ("generated", "ground_truth")),
        Command("download", "magicanimate_cli.download:download", ("sources...",)),
        Command("frames", "magicanimate_cli.frames:frames", ("video",), ("output",)),
        Command("crop", "magicanimate_cli.crop:crop", ("input",), ("output",)),
        Command("flip", "magicanimate_cli.flip:flip", ("clip",), ("output",)),
        Command("preprocess", "magicanimate_cli.preprocess:preprocess", ("inputs...",), types=(("inputs", "path"),)),
        Command("models download", "magicanimate_cli.models:download", tells=(("on_plan", "magicanimate_cli.models:format_plan"),)),
        Command("models convert", "magicanimate_cli.models:convert"),
        Command("models list", "magicanimate_cli.models:list_models"),
        Command("doctor", "magicanimate_cli.doctor:doctor"),
    ]
)
"""Every command of the CLI that a batch can run (all but ``batch``, ``demo`` and ``serve``: ``NOT_TASKS``)."""


def resolve(path: str):
    """The object named by ``"module:attribute"`` (a ``Registry``, a command's function)."""
    module, _, attribute = path.partition(":")
    target = importlib.import_module(module)
    for name in attribute.split(".") if attribute else ():
        target = getattr(target, name)
    return target


def resolve_path(value: str, root: Path | str | None) -> str:
    """``value`` read against ``root`` (the manifest's folder) unless it is absolute (``~`` is
    the user's home, as for a command typed in a shell). An empty ``value`` stays empty: the stage
    refuses it (``media.output_path``) instead of taking the manifest's folder for it."""
    if not value:
        return value
    expanded = os.path.expanduser(value)
    if root is None or os.path.isabs(expanded):
        return expanded if os.path.isabs(expanded) else value
    return os.path.join(str(root), value)
