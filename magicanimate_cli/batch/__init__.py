"""``magicanimate batch``: run a manifest of CLI commands, resumably, on one machine or a Ray cluster.

``run_batch()`` reads the manifest (``manifest.py``), checks every task before running any,
takes this process's shard, skips what an earlier run finished, runs the rest with the local
engine (``local.py``) or Ray (``ray_engine.py``), records each task as it ends and returns a
summary. See docs/batch.md for the formats and for Slurm and Ray recipes.

State: every finished task leaves ``STATE/<task id>.json`` (its record: status, exit code,
error, result), written atomically when the task ends; ``STATE`` defaults to
``MANIFEST.state/`` beside the manifest. With ``resume`` a task is skipped when its record says
done and, if its result names an ``output``, that output still exists; tasks that failed or were
cut off run again. Each run also writes ``STATE/summary-I-of-N.json``. Relative paths in tasks
are read against the manifest's folder, whichever folder the batch is started from.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .manifest import Task, parse_shard, read_manifest, select_shard, shard_from_env
from .tasks import GPU_COMMANDS, ModelCache, TaskRunner, register_model_cache

ENGINES = ("local", "ray")
MAX_LISTED_PROBLEMS = 3

__all__ = ["BatchResult", "ModelCache", "GPU_COMMANDS", "register_model_cache", "run_batch"]


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

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict:
        return {
            "ok": not self.failed,
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
            "seconds": self.seconds,
            "results": self.results,
        }

    def for_humans(self) -> dict:
        """The summary without the per-task list, for reading on a terminal."""
        failures = [f"line {r['line']} {r['command']}: {r['error']} (exit {r['exit_code']})" for r in self.results if r["status"] == "failed"]
        data = {key: value for key, value in self.to_dict().items() if key not in ("results", "ok", "exit_code")}
        data["failures"] = "\n  " + "\n  ".join(failures) if failures else None
        return data


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON under ``path`` atomically (temp file in the folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class State:
    """The per-task records of a batch, one JSON file per task id."""

    def __init__(self, folder: Path, workdir: Path) -> None:
        self.folder = folder
        self.workdir = workdir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{folder}: cannot create the batch state folder ({exc.strerror}); pass --state DIR") from None

    def path(self, task_id: str) -> Path:
        return self.folder / f"{task_id}.json"

    def read(self, task: Task) -> dict | None:
        try:
            return json.loads(self.path(task.id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_done(self, record: dict | None) -> bool:
        if not record or record.get("status") != "done":
            return False
        output = (record.get("result") or {}).get("output")
        return not isinstance(output, str) or (self.workdir / output).exists()

    def write(self, record: dict) -> None:
        write_json(self.path(record["id"]), record)


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
    """Run the tasks of ``manifest`` (this process's ``shard``) and return the summary.

    ``shard`` is ``"I/N"``; by default it comes from a Slurm array (``SLURM_ARRAY_TASK_ID``,
    ``SLURM_ARRAY_TASK_COUNT``), else the whole manifest. ``jobs`` is the number of worker
    processes (local: default one per ``gpus`` entry, else 1, in this process) or the most actors
    of a kind (Ray). ``commands`` ("module:attribute") names the Typer app whose commands the
    tasks are; default this CLI's.
    """
    from . import tasks as task_module

    commands = commands or task_module.COMMANDS
    started = time.perf_counter()
    manifest = Path(manifest)
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    if engine == "local" and address:
        raise UserError("--address is for --engine ray; leave it out or add --engine ray")
    if engine == "ray" and gpus:
        raise UserError("--gpus is for --engine local; Ray gives each animate/densepose task a GPU itself")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs}: need at least 1")
    index, count = parse_shard(shard) if shard else (shard_from_env() or (0, 1))
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()

    tasks = read_manifest(manifest)
    workdir = manifest.resolve().parent
    _check_tasks(manifest, tasks, commands, workdir)
    mine = select_shard(tasks, index, count)
    folder = Path(state) if state else manifest.with_name(manifest.name + ".state")
    store = State(folder.resolve() if not folder.is_absolute() else folder, workdir)

    records: dict[str, dict] = {}
    to_run: list[Task] = []
    earlier = 0
    for task in mine:
        record = store.read(task)
        earlier += record is not None
        if resume and store.is_done(record):
            records[task.id] = {**task.to_dict(), "status": "skipped", "exit_code": 0, "error": None, **{k: record.get(k) for k in ("result", "seconds", "worker", "models_loaded")}}
        else:
            to_run.append(task)
    if earlier and not resume:
        raise UserError(
            f"{folder}: holds the records of an earlier run of {earlier} of these tasks; pass --resume to skip "
            "the ones done there and run the rest, or delete the folder to start over"
        )

    total, finished = len(mine), len(mine) - len(to_run)
    if progress:
        progress("tasks", finished, total)

    def on_record(record: dict) -> None:
        nonlocal finished
        store.write(record)
        records[record["id"]] = record
        finished += 1
        if progress:
            progress("tasks", finished, total)

    payload = [task.to_dict() for task in to_run]
    if engine == "ray":
        from .ray_engine import run_ray

        run_ray(payload, on_record, jobs=jobs, address=address, workdir=workdir, commands=commands)
    else:
        from .local import run_local

        run_local(payload, on_record, jobs=jobs, gpus=gpus, workdir=workdir, commands=commands)

    results = [records[task.id] for task in mine]
    summary = store.folder / f"summary-{index}-of-{count}.json"
    result = BatchResult(
        manifest=str(manifest),
        state=str(store.folder),
        summary=str(summary),
        shard=f"{index}/{count}",
        engine=engine,
        tasks=total,
        done=sum(r["status"] == "done" for r in results),
        skipped=sum(r["status"] == "skipped" for r in results),
        failed=sum(r["status"] == "failed" for r in results),
        seconds=round(time.perf_counter() - started, 3),
        results=results,
    )
    write_json(summary, result.to_dict())
    return result


def _check_tasks(manifest: Path, tasks: list[Task], commands: str, workdir: Path) -> None:
    """Refuse the whole manifest (exit 2) when a task names no command or its arguments do not parse."""
    runner = TaskRunner(commands, workdir)
    problems = []
    for task in tasks:
        problem = runner.check(task.command, task.args)
        if problem:
            problems.append(f"line {task.line} ({task.command}): {problem}")
    if problems:
        more = f"; and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        listed = "; ".join(" ".join(p.split()) for p in problems[:MAX_LISTED_PROBLEMS])
        raise UserError(f"{manifest}: {listed}{more}; fix these tasks, nothing was run")
