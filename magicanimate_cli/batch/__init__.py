"""``magicanimate batch``: run a manifest of commands, resumably, on one machine or a Ray cluster.

``run_batch()`` reads the manifest (``manifest.py``), checks every task against the registry of
commands (``registry.py``) before running any, takes this process's shard, skips what an earlier
run finished, runs the rest with the local engine (``local.py``) or Ray (``ray_engine.py``),
records each task as it starts and ends and returns a summary. A task calls the library function
of its command (``tasks.py``); the CLI is never imported. See docs/batch.md for the formats and
for Slurm and Ray recipes.

State: every task leaves ``STATE/<task id>.json``, written atomically: ``running`` when it starts
(with the outputs it will write that do not exist yet), then its final record (status, exit code,
error, result) when it ends. ``STATE`` defaults to ``MANIFEST.state/`` beside the manifest. With
``resume`` a task is skipped when its record says done, if its result names an ``output``,
that output still exists, so do the other outputs it left (``State.finish``), and its input files are as they were when it started
(``State.changed_inputs``); tasks that failed, were cut off or whose input changed run again, and a task cut off after
it had written its outputs (a kill between the output and the record) may replace them: they
did not exist when it started. Each run also writes ``STATE/summary-I-of-N.json``, and
removes as it starts the summaries it makes out of date (``_drop_stale_summaries``). Relative
paths in tasks are read against the manifest's folder, whichever folder the batch is started from.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .manifest import Task, parse_shard, read_manifest, select_shard, shard_from_env
from .registry import Command, ModelCache, Registry, Unknown, Usage, resolve_path
from .tasks import TaskRunner

ENGINES = ("local", "ray")
MAX_LISTED_PROBLEMS = 3
MTIME_SLACK = 2.0  # seconds: file systems that keep coarse modification times

__all__ = ["BatchInterrupted", "BatchResult", "Command", "ModelCache", "Registry", "run_batch"]


@dataclass(frozen=True)
class BatchResult:
    manifest: str
    state: str
    summary: str
    shard: str
    engine: str
    tasks: int
    done: int
    skipped: int
    failed: int
    seconds: float
    results: list = field(default_factory=list)
    interrupted: int = 0  # tasks that did not end because the batch was stopped (Ctrl-C, SIGTERM)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed else 0

    @property
    def failure(self) -> str:
        if self.interrupted:
            return f"interrupted: {self.interrupted} of {self.tasks} tasks did not end; run the batch again with --resume"
        return f"{self.failed} of {self.tasks} tasks failed (their errors: {self.summary})"

    def to_dict(self) -> dict:
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "manifest": self.manifest,
            "state": self.state,
            "summary": self.summary,
            "shard": self.shard,
            "engine": self.engine,
            "tasks": self.tasks,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            **({"interrupted": self.interrupted} if self.interrupted else {}),
            "seconds": self.seconds,
            **({"error": self.failure} if self.exit_code else {}),
            "results": self.results,
        }

    def for_humans(self) -> dict:
        """The summary without the per-task list, for reading on a terminal."""
        failures = [f"line {r['line']} {r['command']}: {r['error']} (exit {r['exit_code']})" for r in self.results if r["status"] == "failed"]
        data = {key: value for key, value in self.to_dict().items() if key not in ("results", "ok", "exit_code", "error")}
        data["failures"] = [f"  {line}" for line in failures] or None
        return data


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON under ``path`` atomically, replacing what is there (``files``)."""
    from ..files import write_text

    write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n", replace=True)


_STATE_NAME = re.compile(r"[0-9a-f]{16}\.json|summary-\d+-of-\d+\.json|\..*")  # records, summaries, their temporaries


class State:
    """The per-task records of a batch, one JSON file per task id (and its summaries)."""

    def __init__(self, folder: Path, workdir: Path) -> None:
        self.folder = folder
        self.workdir = workdir
        try:
            foreign = next((entry for entry in sorted(os.listdir(folder)) if not _STATE_NAME.fullmatch(entry)), None)
        except NotADirectoryError:
            raise UserError(f"{folder}: is a file; pass --state a folder for the batch's records") from None
        except OSError:
            foreign = None  # made below
        if foreign is not None:  # never mix the batch's records into a folder of the user's
            raise UserError(f"{folder}: holds files that are not a batch's records ({foreign}, ...); pass --state a new or empty folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{folder}: cannot create the batch state folder ({exc.strerror}); pass --state DIR") from None

    def path(self, task_id: str) -> Path:
        return self.folder / f"{task_id}.json"

    def read(self, task: Task | dict) -> dict | None:
        """The task's record; None when there is none, or it is damaged (not a JSON object: the task runs again)."""
        try:
            record = json.loads(self.path(task.id if isinstance(task, Task) else task["id"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def is_done(self, record: dict | None) -> bool:
        if not record or record.get("status") != "done":
            return False
        result = record.get("result")
        if result is not None and not isinstance(result, dict):  # damaged: run it again
            return False
        output = (result or {}).get("output")
        if isinstance(output, str) and not os.path.exists(resolve_path(output, self.workdir)):  # as written: ~/out too
            return False
        if any(not os.path.lexists(path) for path in _paths(record.get("outputs"))):  # a grid, a labels folder deleted since
            return False
        return not self.changed_inputs(record)

    def changed_inputs(self, record: dict) -> list[str]:
        """The input files of a task that changed (another size or modification time) since it
        started; an input that is gone is not counted (clips are often deleted once processed)."""
        seen = record.get("inputs")
        if not isinstance(seen, dict):  # a record from before inputs were recorded, or damaged
            return []
        changed = []
        for path, identity in seen.items():
            now = _identity(path)
            if now is not None and now != identity:
                changed.append(path)
        return changed

    def write(self, record: dict) -> None:
        write_json(self.path(record["id"]), record)

    def finish(self, record: dict) -> None:
        """Write the record of a task that ended, keeping what its ``running`` record knew (when it
        started, its own outputs, its inputs) and when it ended: a task run again because an input
        changed (``changed_inputs``) replaces the outputs it made, and only those (``begin``). A
        done task's record also lists the outputs it names that exist as it ends (``outputs``: an
        ``animate --grid``'s grid, a ``densepose --labels`` folder), which ``is_done`` wants still
        there; one it named but did not write is not listed, so it never runs again for it."""
        earlier = self.read(record) or {}
        kept = {key: earlier[key] for key in ("started", "fresh_outputs", "inputs") if key in earlier} if earlier.get("status") == "running" else {}
        if record.get("status") == "done" and earlier.get("status") == "running":  # the outputs it left: --resume runs it again when one goes
            kept["outputs"] = [path for path in _paths(earlier.get("outputs")) if os.path.lexists(path)]
        self.write({**record, **kept, "ended": time.time()})

    def begin(self, task: dict, outputs: list[str], inputs: list[str] = ()) -> dict:
        """Record that ``task`` starts, and return what its worker gets.

        The record lists the task's ``outputs`` that do not exist yet, or that an earlier attempt
        of this task left (listed by that attempt as not existing, made since, and not after the
        batch stopped, when it recorded that: ``_mark_stopped``, or after the attempt ended, for a
        task that ran again because an input changed): the task's own, and the size and time of
        each of its ``inputs`` that is a file (``changed_inputs``).
        When every output that exists is its own, the worker may replace them (``reclaim``)."""
        earlier = self.read(task)
        now = time.time()
        claimed, since, until = [], now, math.inf
        if earlier and earlier.get("status") in ("running", "done"):
            claimed, since = _paths(earlier.get("fresh_outputs")), _time(earlier.get("started"), now)
            until = _time(earlier.get("stopped") if earlier["status"] == "running" else earlier.get("ended"), math.inf)
            # until: a stopped batch's time, or the attempt's end; an output made after it was made by hand
        existing = [path for path in outputs if os.path.lexists(path)]
        own = [path for path in existing if path in claimed and since - MTIME_SLACK <= _mtime(path) <= until + MTIME_SLACK]
        fresh = [path for path in outputs if path not in existing or path in own]
        read = {path: identity for path in inputs if (identity := _identity(path)) is not None}
        self.write({**task, "status": "running", "started": since if own else now, "fresh_outputs": fresh, "inputs": read, "outputs": list(outputs)})
        return {**task, "reclaim": True} if existing and len(own) == len(existing) else task


def _paths(value) -> list[str]:
    """A record's list of paths (a damaged record's: none)."""
    return [path for path in value if isinstance(path, str)] if isinstance(value, list) else []


def _time(value, default: float) -> float:
    """A record's time (a damaged record's: ``default``)."""
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _identity(path: str) -> list[int] | None:
    """A regular file's size and modification time (ns); None for a folder or nothing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns] if stat.S_ISREG(info.st_mode) else None


def _mtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def run_batch(
    manifest: Path | str,
    *,
    jobs: int | None = None,
    shard: str | None = None,
    engine: str = "local",
    address: str | None = None,
    resume: bool = False,
    gpus: str | None = None,
    state: Path | str | None = None,
    progress=None,
    commands: str | None = None,
) -> BatchResult:
    """Run the tasks of ``manifest`` (this process's ``shard``) and return the summary; stopped
    (Ctrl-C, SIGTERM), it raises ``BatchInterrupted`` holding the summary of what ended.

    ``shard`` is ``"I/N"``; by default it comes from a Slurm array (``SLURM_ARRAY_TASK_ID``,
    ``SLURM_ARRAY_TASK_COUNT``), else the whole manifest. ``jobs`` is the number of worker
    processes (local: default one per ``gpus`` entry, else 1) or the most actors of a kind (Ray).
    ``commands`` ("module:attribute") names the ``Registry`` the tasks' commands come from;
    default ``registry.COMMANDS``, every command of this package but ``batch``.
    """
    from .. import media
    from . import tasks as task_module

    started = time.perf_counter()
    commands = commands or task_module.COMMANDS
    manifest = media.input_path(manifest)
    state = media.output_path(state, "--state") if state is not None else None
    index, count = _check_options(engine, address, gpus, jobs, shard)
    tasks = read_manifest(manifest)
    workdir = manifest.resolve().parent
    folder = _state_folder(manifest, state)
    outputs, inputs = _check_tasks(manifest, tasks, TaskRunner(commands, workdir), folder)
    mine = select_shard(tasks, index, count)
    store = State(folder, workdir)
    stopped = False
    with _running(store, index, count, len(tasks)):
        records, to_run = _skip_done(mine, store, resume)
        _drop_stale_summaries(store.folder, index, count, len(tasks))
        try:
            _run_tasks(to_run, store, records, outputs, inputs, len(mine), progress, engine=engine, jobs=jobs, gpus=gpus, address=address, workdir=workdir, commands=commands)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (Slurm's preemption): the summary of what ended, then exit 130
            _mark_stopped(store, [task for task in to_run if task.id not in records])
            stopped = True
        result = _summarize(manifest, store, [records.get(task.id) or _not_ended(task) for task in mine], index, count, engine, started)
    if stopped:
        raise BatchInterrupted(result)
    return result


class BatchInterrupted(KeyboardInterrupt):
    """``run_batch`` was stopped (Ctrl-C, SIGTERM) after it wrote its summary, which is ``result``
    (``exit_code`` 130; the tasks that did not end are ``interrupted``). The CLI prints it."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__("interrupted")
        self.result = result


@contextmanager
def _running(store: State, index: int, count: int, total: int):
    """Hold this shard of the state folder for the run: a second run of the same shard at the same
    time (a job submitted again while the first still runs) is refused, exit 2, instead of recording
    as failed ("already exists") the tasks the first one is writing, over its records; so is a run
    of a shard of another split of the ``total`` tasks (``--shard 0/2`` beside the whole manifest)
    that has a task in common with one running now, which both would run at once."""
    from filelock import FileLock, Timeout

    from ..files import file_mode, holder_of, record_holder

    path = store.folder / f".run-{index}-of-{count}.lock"
    lock = FileLock(str(path), mode=file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{store.folder}: another batch is running shard {index}/{count} with this state folder now; wait for it to end "
            f"(then --resume), or give this run its own --state DIR{holder_of(path)}"
        ) from None
    except (OSError, NotImplementedError):  # a file system without locks (Lustre without flock): run as before
        yield
        return
    record_holder(path)  # who runs it, for the refusal of a second run
    try:
        _refuse_overlapping_runs(store.folder, index, count, total)
        yield
    finally:
        with suppress(OSError):
            os.truncate(path, 0)  # the lock file stays (filelock's): no record of a run that ended
        lock.release()


_RUN_LOCK = re.compile(r"\.run-(\d+)-of-(\d+)\.lock")


def _refuse_overlapping_runs(folder: Path, index: int, count: int, total: int) -> None:
    """Refuse (exit 2) while a run of a shard ``J/M`` of another split, one that shares a task with
    ``index/count``, holds its lock in ``folder``. Only non-empty lock files are tried (an ended
    run's is empty). Two races are left, both on the safe side: two such runs that start in the
    same instant may refuse each other, and a run of ``J/M`` starting during this brief look at
    the lock a killed run left may be refused (its re-run goes)."""
    from filelock import FileLock, Timeout

    from ..files import holder_of

    for name in sorted(os.listdir(folder)):
        match = _RUN_LOCK.fullmatch(name)
        if not match or int(match[2]) == count:
            continue
        other, others = int(match[1]), int(match[2])
        if not _share_a_task(index, count, other, others, total):
            continue
        path = folder / name
        try:
            if os.path.getsize(path) == 0:
                continue
            probe = FileLock(str(path))
            probe.acquire(timeout=0)
        except Timeout:
            raise UserError(
                f"{folder}: another batch is running shard {other}/{others} with this state folder now, which shares tasks "
                f"with shard {index}/{count}; wait for it to end (then --resume), or split the manifest the same way{holder_of(path)}"
            ) from None
        except (OSError, NotImplementedError):
            continue
        probe.release()


def _share_a_task(index: int, count: int, other: int, others: int, total: int) -> bool:
    """Shard ``index/count`` and shard ``other/others`` of ``total`` tasks have a task in common."""
    return any(k % others == other for k in range(index, total, count))


_SUMMARY = re.compile(r"summary-(\d+)-of-(\d+)\.json")


def _drop_stale_summaries(folder: Path, index: int, count: int, total: int) -> None:
    """Remove, as shard ``index/count`` starts, the summaries its run makes out of date: its own
    (written again when it ends; a run killed meanwhile leaves none) and those of another split
    that share a task with it (``summary-0-of-1.json`` once ``--shard 0/2`` runs), which would go
    on saying what that task did before. The records stay."""
    for name in sorted(os.listdir(folder)):
        match = _SUMMARY.fullmatch(name)
        if match and (int(match[2]) == count and int(match[1]) == index
                      or int(match[2]) != count and _share_a_task(index, count, int(match[1]), int(match[2]), total)):
            with suppress(FileNotFoundError):  # a run beside this one removed it too
                (folder / name).unlink()


def _mark_stopped(store: State, tasks: list[Task]) -> None:
    """Record when the batch stopped in the ``running`` records of ``tasks`` (their workers have
    stopped by now): an output made after that was made by someone else, so ``--resume`` never
    takes it for the task's own (``State.begin``)."""
    stopped = time.time()
    for task in tasks:
        record = store.read(task)
        if record is not None and record.get("status") == "running" and "stopped" not in record:  # an earlier stop's stays:
            store.write({**record, "stopped": stopped})  # a task that started again has a new record, without it


def _not_ended(task: Task) -> dict:
    """The summary's record of a task the batch was stopped before it ended (``--resume`` runs it)."""
    return {**task.to_dict(), "status": "interrupted", "exit_code": None, "error": None, "result": None, "seconds": None,
            "worker": None, "models_loaded": None}


def _check_options(engine: str, address: str | None, gpus: str | None, jobs: int | None, shard: str | None) -> tuple[int, int]:
    """Refuse option combinations that cannot work; return the shard ``(I, N)``."""
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if engine == "local" and address:
        raise UserError("--address is for --engine ray; leave it out or add --engine ray")
    if engine == "ray" and gpus:
        raise UserError("--gpus is for --engine local; Ray gives each animate/densepose task a GPU itself")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs}: need at least 1")
    if gpus:
        from .local import parse_gpus

        parse_gpus(gpus)  # before the state folder or any task
    index, count = parse_shard(shard) if shard else (shard_from_env() or (0, 1))
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()
    return index, count


def _check_tasks(manifest: Path, tasks: list[Task], runner: TaskRunner, state: Path | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Refuse the whole manifest (exit 2) when a task names no command, its arguments do not fit
    it, it writes what another task writes, it reads what another task writes (tasks run in any
    order, at once), or it writes into the ``state`` folder (or holds it); else return each
    task's outputs and inputs by task id."""
    problems, outputs, inputs, writers, filling = [], {}, {}, _Writers(), {}
    records = os.path.realpath(state) if state is not None else None
    for task in tasks:
        try:
            outputs[task.id] = runner.outputs(task.command, task.args)
            inputs[task.id] = runner.inputs(task.command, task.args)
        except (Unknown, Usage) as exc:
            problems.append(f"line {task.line} ({task.command}): {exc}")
            continue
        filled = runner.folders_filled(task.command, task.args)
        for path in outputs[task.id] + filled:
            real = os.path.realpath(path)
            if records is not None and (real == records or records in _parents(real) or real in _parents(records)):  # in it, or holding it
                problems.append(f"line {task.line} ({task.command}): writes {path!r}, where the batch keeps its records ({records}); "
                                "give the task another output, or the batch another --state")
                continue
            if path in filled:  # shared by tasks (preprocess -o OUT): no clash
                filling.setdefault(real, task.line)
                continue
            clash = writers.add(real, task.line)  # two names for one place (a symlinked folder) clash too
            if clash:
                problems.append(f"line {task.line} ({task.command}): {clash}; give each task its own output")
    written = {**filling, **writers.outputs}
    for task in tasks:
        for path in inputs.get(task.id, []):
            real = os.path.realpath(path)
            line = next((written[place] for place in (real, *_parents(real)) if written.get(place, task.line) != task.line), None)
            if line is not None:  # the input is another task's output, or inside it (a folder holding one is fine: a clip)
                problems.append(f"line {task.line} ({task.command}): reads {path!r}, which line {line} writes; tasks run in any order "
                                "and at once: run it in a later batch")
    if problems:
        more = f"; and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        listed = "; ".join(" ".join(p.split()) for p in problems[:MAX_LISTED_PROBLEMS])
        raise UserError(f"{manifest}: {listed}{more}; fix these tasks, nothing was run")
    return outputs, inputs


class _Writers:
    """The outputs of the tasks seen so far, to find two tasks that write the same file or folder."""

    def __init__(self) -> None:
        self.outputs: dict[str, int] = {}  # output -> line
        self.inside: dict[str, int] = {}  # every folder above an output -> line

    def add(self, path: str, line: int) -> str | None:
        if path in self.outputs:
            return f"writes {path!r} as line {self.outputs[path]} does"
        if path in self.inside:
            return f"writes {path!r}, which holds the output of line {self.inside[path]}"
        parents = _parents(path)
        for parent in parents:
            if parent in self.outputs:
                return f"writes {path!r} inside {parent!r}, the output of line {self.outputs[parent]}"
        self.outputs[path] = line
        for parent in parents:
            self.inside.setdefault(parent, line)
        return None


def _parents(path: str) -> list[str]:
    parents, parent = [], os.path.dirname(path)
    while parent and parent not in parents and parent != path:
        parents.append(parent)
        path, parent = parent, os.path.dirname(parent)
    return parents


def _state_folder(manifest: Path, state: Path | str | None) -> Path:
    """Where the batch keeps its records: ``--state``, else ``MANIFEST.state/`` beside the manifest."""
    folder = Path(state) if state else manifest.with_name(manifest.name + ".state")
    return folder.resolve() if not folder.is_absolute() else folder


def _skip_done(mine: list[Task], store: State, resume: bool) -> tuple[dict[str, dict], list[Task]]:
    """The records of the tasks an earlier run finished (with ``resume``) and the tasks to run.

    Without ``resume``, records of an earlier run refuse the batch: two runs are never mixed."""
    records: dict[str, dict] = {}
    to_run: list[Task] = []
    earlier = 0
    for task in mine:
        record = store.read(task)
        earlier += record is not None
        if resume and store.is_done(record):
            kept = {key: record.get(key) for key in ("result", "seconds", "worker", "models_loaded")}
            records[task.id] = {**task.to_dict(), "status": "skipped", "exit_code": 0, "error": None, **kept}
        else:
            to_run.append(task)
    if earlier and not resume:
        raise UserError(
            f"{store.folder}: holds the records of an earlier run of {earlier} of these tasks; pass --resume to skip "
            "the ones done there and run the rest, or delete the folder to start over"
        )
    return records, to_run


def _run_tasks(to_run, store: State, records: dict, outputs: dict, inputs: dict, total: int, progress, *, engine, jobs, gpus, address, workdir, commands) -> None:
    """Run ``to_run`` on the engine, recording each task as it starts and as it ends."""
    finished = total - len(to_run)
    if progress:
        progress("tasks", finished, total)

    def on_start(task: dict) -> dict:
        return store.begin(task, outputs.get(task["id"], []), inputs.get(task["id"], []))

    def on_record(record: dict) -> None:
        nonlocal finished
        store.finish(record)
        records[record["id"]] = record
        finished += 1
        if progress:
            progress("tasks", finished, total)

    payload = [task.to_dict() for task in to_run]
    if engine == "ray":
        from .ray_engine import run_ray

        run_ray(payload, on_record, jobs=jobs, address=address, workdir=workdir, commands=commands, on_start=on_start)
    else:
        from .local import run_local

        run_local(payload, on_record, jobs=jobs, gpus=gpus, workdir=workdir, commands=commands, on_start=on_start)


def _summarize(manifest: Path, store: State, results: list[dict], index: int, count: int, engine: str, started: float) -> BatchResult:
    """The batch's result, also written to ``STATE/summary-I-of-N.json``."""
    summary = store.folder / f"summary-{index}-of-{count}.json"
    result = BatchResult(
        manifest=str(manifest),
        state=str(store.folder),
        summary=str(summary),
        shard=f"{index}/{count}",
        engine=engine,
        tasks=len(results),
        done=sum(r["status"] == "done" for r in results),
        skipped=sum(r["status"] == "skipped" for r in results),
        failed=sum(r["status"] == "failed" for r in results),
        seconds=round(time.perf_counter() - started, 3),
        results=results,
        interrupted=sum(r["status"] == "interrupted" for r in results),
    )
    write_json(summary, result.to_dict())
    return result
