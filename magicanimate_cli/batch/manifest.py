"""Batch manifests: which commands to run, and which slice of them this process runs.

A manifest is a list of tasks; a task is one command of this CLI with its arguments, exactly
as it would be typed after ``magicanimate``. Two formats, chosen by the file extension:

* JSONL (``.jsonl``, ``.ndjson``): one object per line,
  ``{"command": "animate", "args": ["ref.png", "pose.mp4", "-o", "out.mp4", "--steps", "25"]}``.
  ``args`` is a list of strings (numbers are accepted and turned into strings); blank lines
  and lines starting with ``#`` are ignored.
* CSV (``.csv``): a header row with a ``command`` column and an ``args`` column; ``args`` holds
  the arguments as one command line, split like a POSIX shell splits words (``shlex``: quotes
  group words, nothing is expanded or executed). Blank rows and lines starting with ``#`` are
  ignored. A row is one line: a quote left open (which would swallow the next lines) is an error
  naming the line.

Tasks are identified by a hash of their command and arguments (``Task.id``), so editing a
task's arguments makes it a new task, and moving it to another line does not.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import UserError

JSONL_EXTENSIONS = (".jsonl", ".ndjson")
CSV_EXTENSIONS = (".csv",)
JSONL_KEYS = ("command", "args")


@dataclass(frozen=True)
class Task:
    """One command line of the manifest; ``line`` is where it is written (1-based)."""

    line: int
    command: str
    args: tuple[str, ...]

    @cached_property
    def id(self) -> str:
        """A stable key: the first 16 hex digits of the SHA-256 of ``[command, args]`` as JSON."""
        text = json.dumps([self.command, list(self.args)], separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"line": self.line, "id": self.id, "command": self.command, "args": list(self.args)}


def read_manifest(path: Path | str) -> list[Task]:
    """The tasks of a CSV or JSONL manifest, in file order (bad syntax raises ``UserError``)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the manifest file in it (a .jsonl or .csv list of tasks)")
    if not path.is_file():
        raise UserError(f"{path}: no such manifest file; give a .jsonl or .csv list of tasks")
    suffix = path.suffix.lower()
    if suffix not in JSONL_EXTENSIONS + CSV_EXTENSIONS:
        raise UserError(f"{path}: unknown manifest format {suffix or '(no extension)'}; name it .jsonl or .csv")
    from ..files import check_utf8

    check_utf8(path)
    tasks = _read_jsonl(path) if suffix in JSONL_EXTENSIONS else _read_csv(path)
    if not tasks:
        raise UserError(f"{path}: holds no tasks; add one task per line (see docs/batch.md)")
    seen: dict[str, int] = {}
    for task in tasks:
        if task.id in seen:
            raise UserError(f"{path} line {task.line}: the same task as line {seen[task.id]}; remove one of them")
        seen[task.id] = task.line
    return tasks


def _check_command(path: Path, line: int, command) -> str:
    if not isinstance(command, str) or not command.strip():
        raise UserError(f"{path} line {line}: \"command\" must be a command name such as \"animate\"")
    command = command.strip()
    if command == "magicanimate":
        raise UserError(f"{path} line {line}: write the command without the leading 'magicanimate' (e.g. \"animate\")")
    return command


def _read_jsonl(path: Path) -> list[Task]:
    tasks = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno}); write one object per line") from None
            if not isinstance(data, dict):
                raise UserError(f"{path} line {number}: expected an object like {{\"command\": \"animate\", \"args\": [...]}}")
            unknown = sorted(set(data) - set(JSONL_KEYS))
            if unknown:
                raise UserError(f"{path} line {number}: unknown key {unknown[0]!r}; a task has only \"command\" and \"args\"")
            command = _check_command(path, number, data.get("command"))
            args = data.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
                raise UserError(f"{path} line {number}: \"args\" must be a list of strings, e.g. [\"ref.png\", \"pose.mp4\", \"-o\", \"out.mp4\"]")
            tasks.append(Task(number, command, tuple(str(a) for a in args)))
    return tasks


def _read_csv(path: Path) -> list[Task]:
    tasks = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    text = re.sub(r"(?m)^[ \t]*#[^\r\n]*", "", text)  # comment lines: blank, so the line numbers stay
    lines = text.splitlines()
    stream = io.StringIO(text, newline="")
    head = csv.reader(stream, strict=True)

    def next_row(after: int) -> int:  # the line a row starts on: the first non-blank one after ``after``
        return next((n for n in range(after + 1, len(lines) + 1) if lines[n - 1].strip()), after + 1)

    try:
        columns = [name.strip() for name in next((row for row in head if any(cell.strip() for cell in row)), [])]  # after comments
    except csv.Error as exc:
        raise UserError(f"{path} line {next_row(0)}: {exc}; check the quotes of the header row") from None
    reader, header = csv.DictReader(stream, strict=True), head.line_num  # the rows after the header; line numbers count from the file's start
    if "command" not in columns:
        raise UserError(f"{path}: the first row must name the columns: command,args")
    unknown = [name for name in columns if name not in ("command", "args")]
    if unknown:
        raise UserError(f"{path}: unknown column {unknown[0]!r}; a task has only the columns command and args")
    reader.fieldnames = columns
    while True:
        ended = header + reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UserError(f"{path} line {next_row(ended)}: {exc} (a quote left open?); close each quote on the line it opens") from None
        number = next_row(ended)
        if number != header + reader.line_num:
            raise UserError(f"{path} line {number}: a quote opened here closes on line {header + reader.line_num}; close each quote on the line it opens")
        if None in row:
            raise UserError(f"{path} line {number}: more cells than columns; quote an args cell that holds commas")
        if not any((value or "").strip() for value in row.values()):
            continue
        command = _check_command(path, number, row.get("command"))
        try:
            args = shlex.split(row.get("args") or "", comments=False, posix=True)
        except ValueError as exc:
            raise UserError(f"{path} line {number}: cannot split the args cell ({exc}); check its quotes") from None
        tasks.append(Task(number, command, tuple(args)))
    return tasks


# ----------------------------------------------------------------------------- shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) as ``(I, N)``."""
    index, sep, count = str(text).partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(index), int(count)
    except ValueError:
        raise UserError(f"--shard {text}: write it as I/N, e.g. 0/4 for the first of four shards") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {text}: need N >= 1 and 0 <= I < N (shards count from 0)")
    return index, count


def shard_from_env(env: dict | None = None) -> tuple[int, int] | None:
    """The shard of a Slurm array task, from ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``.

    Arrays that do not start at 0 or have a step (``--array=1-8``, ``--array=0-30:10``) are
    numbered from 0 with ``SLURM_ARRAY_TASK_MIN`` and ``SLURM_ARRAY_TASK_STEP``; an irregular list
    (``--array=3,7``) cannot be numbered from the environment and needs ``--shard``.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task_id = int(env["SLURM_ARRAY_TASK_ID"])
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", 1)) or 1
        last = int(env.get("SLURM_ARRAY_TASK_MAX", first + step * (count - 1)))
    except ValueError:
        raise UserError("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not numbers; pass --shard I/N") from None
    offset = task_id - first
    if last - first != step * (count - 1) or offset % step or not 0 <= offset // step < count:
        raise UserError(
            f"Slurm array task {task_id} (min {first}, step {step}, count {count}) does not map to a shard; "
            "use a plain range like --array=0-9 or pass --shard I/N"
        )
    return offset // step, count


def select_shard(tasks: list[Task], index: int, count: int) -> list[Task]:
    """Every ``count``-th task starting at ``index``: shards are disjoint, cover the manifest, and
    keep their tasks when tasks are appended to the manifest."""
    return tasks[index::count]
