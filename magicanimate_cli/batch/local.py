"""The local engine: ``--jobs`` worker processes on this machine, optionally pinned to GPUs.

Each worker is a fresh process (``spawn``) that runs one task at a time and keeps its models
between tasks, so a crash, an out-of-memory kill or a leak in one task cannot take the batch
down with it. Worker ``k`` sees only GPU ``gpus[k % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``), so
``--gpus 0,1,2,3`` runs four tasks at once, one per GPU, and ``--jobs 8 --gpus 0,1,2,3`` two per
GPU; without ``--gpus`` the workers see what this process sees. A worker that dies in a task
(killed, out of memory, a crash in native code) is replaced and the task is run again, up to
``WORKER_RETRIES`` more times; then it is recorded as failed and the batch goes on.

Workers die with the batch: each asks the kernel for SIGKILL when its parent goes (Linux
``PR_SET_PDEATHSIG``) and, everywhere, watches its parent's pid and ends itself when it changes, so
a ``kill -9`` of the batch never leaves a worker finishing a task that nobody records.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from ..errors import UserError
from ..processes import stop_children, stop_once_on
from .tasks import COMMANDS, TaskRunner, lost_record

WORKER_RETRIES = 2
PARENT_CHECK_SECONDS = 0.2


def parse_gpus(gpus: str | None, env: dict | None = None) -> list[str]:
    """``--gpus`` as the ``CUDA_VISIBLE_DEVICES`` value of each GPU to use.

    ``0,1`` are device numbers as this process sees them: when ``CUDA_VISIBLE_DEVICES`` is set
    (Slurm sets it for ``--gres=gpu:N``), number ``k`` is its ``k``-th entry. ``all`` is every
    GPU this process sees. Other names (``GPU-<uuid>``, ``MIG-<uuid>``) pass through.
    """
    env = os.environ if env is None else env
    if gpus is None or not str(gpus).strip():
        return []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    entries = [item.strip() for item in visible.split(",") if item.strip()] if visible is not None else None
    if str(gpus).strip() == "all":
        if entries is None:
            entries = [str(index) for index in range(_cuda_count())]
        if not entries:
            raise UserError("--gpus all: no GPU is visible to this process; leave --gpus out to run on CPU")
        return entries
    chosen = []
    for item in str(gpus).split(","):
        item = item.strip()
        number = item.isascii() and item.isdigit()  # not "²", which isdigit() also takes
        if not (number or item.startswith(("GPU-", "MIG-"))):
            raise UserError(f"--gpus {gpus}: write GPU numbers separated by commas, e.g. 0,1 (or GPU-/MIG- UUIDs)")
        if number:
            seen = len(entries) if entries is not None else _cuda_count()
            if int(item) >= seen:
                where = f"CUDA_VISIBLE_DEVICES={visible}" if entries is not None else f"this process sees {seen} GPU(s)"
                raise UserError(f"--gpus {gpus}: GPU {item} is not visible ({where}); leave --gpus out to run on CPU")
            if entries is not None:
                item = entries[int(item)]
        chosen.append(item)
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--gpus {gpus}: a GPU is listed twice; use --jobs to run several tasks per GPU")
    return chosen


def _cuda_count() -> int:
    """GPUs this process sees (imports torch: only asked when ``--gpus`` gives numbers)."""
    import torch

    return torch.cuda.device_count()


def plan_workers(jobs: int | None, gpus: list[str]) -> list[dict[str, str]]:
    """The environment each worker adds to its own: one dict per worker.

    ``jobs`` defaults to one worker per GPU (or one worker without GPUs); worker ``k`` gets
    ``CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)]``.
    """
    if jobs is None:
        jobs = max(1, len(gpus))
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: need at least 1")
    if not gpus:
        return [{} for _ in range(jobs)]
    return [{"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]} for k in range(jobs)]


def run_local(
    tasks: list[dict],
    on_record: Callable[[dict], None],
    *,
    jobs: int | None = None,
    gpus: str | None = None,
    workdir: Path | str | None = None,
    commands: str = COMMANDS,
    on_start: Callable[[dict], dict] | None = None,
) -> None:
    """Run ``tasks`` (``Task.to_dict()``), calling ``on_record`` with each record as it finishes.

    ``on_start(task)``, called before each attempt at a task, returns what the worker gets."""
    plan = plan_workers(jobs, parse_gpus(gpus))
    if tasks:
        _Pool(plan[: len(tasks)], workdir, commands, on_start).run(tasks, on_record)


def die_with_parent(parent: int) -> None:
    """End this process (SIGKILL) as soon as process ``parent`` is gone."""
    from ..processes import parent_death_signal

    arm = parent_death_signal()
    if arm is not None:
        arm(parent)
    elif os.getppid() != parent:  # it went already
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:  # everywhere else, and for parents that hand workers to a subreaper
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _worker_main(conn, env: dict, workdir, commands: str, parent: int) -> None:
    """A worker process: run the tasks the parent sends, send back their records."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers on Ctrl-C: with SIGTERM (_Pool.run)
    stop_once_on(signal.SIGTERM)
    os.environ.update(env)
    os.dup2(2, 1)  # stray native prints go to stderr; stdout stays the parent's JSON
    runner = TaskRunner(commands, workdir)
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            conn.send(runner.run(task))
    except KeyboardInterrupt:  # stopped by the parent: the task has cleaned up as a command does
        return


class _Slot:
    def __init__(self, env: dict) -> None:
        self.env = env
        self.process = None
        self.conn = None
        self.task: dict | None = None
        self.attempts = 0


def _sent(slot: _Slot) -> dict | None:
    """The record ``slot``'s worker sent and the pool has not read, if any."""
    try:
        return slot.conn.recv() if slot.conn.poll() else None
    except (EOFError, OSError):
        return None


class _Pool:
    def __init__(self, plan: list[dict], workdir, commands: str, on_start: Callable[[dict], dict] | None = None) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot(env) for env in plan]
        self.workdir = str(workdir) if workdir is not None else None
        self.commands = commands
        self.on_start = on_start or (lambda task: task)

    def _start(self, slot: _Slot) -> None:
        parent, child = self.context.Pipe()
        slot.process = self.context.Process(
            target=_worker_main, args=(child, slot.env, self.workdir, self.commands, os.getpid()), name="magicanimate-batch-worker"
        )
        slot.process.start()
        child.close()
        slot.conn = parent

    def _stop(self, slot: _Slot) -> None:
        if slot.process is None:
            return
        try:
            slot.conn.send(None)
        except (OSError, ValueError):
            pass
        slot.process.join(timeout=5)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join()
        slot.conn.close()
        slot.process = slot.conn = None

    def run(self, tasks: list[dict], on_record: Callable[[dict], None]) -> None:
        from multiprocessing.connection import wait

        queue = deque((task, 0) for task in tasks)
        stopping = False
        try:
            while queue or any(slot.task is not None for slot in self.slots):
                for slot in self.slots:
                    if slot.task is None and queue:
                        if slot.process is None:
                            self._start(slot)
                        task, attempts = queue.popleft()
                        sent = self.on_start(task)  # a failure here (the state's disk full) ends the batch, said as such
                        slot.task, slot.attempts = task, attempts
                        try:
                            slot.conn.send(sent)
                        except (OSError, ValueError):
                            pass  # the worker is gone: its sentinel wakes the wait below
                busy = [slot for slot in self.slots if slot.task is not None]
                ready = set(wait([s.conn for s in busy] + [s.process.sentinel for s in busy]))
                for slot in busy:
                    if slot.conn not in ready and slot.process.sentinel not in ready:
                        continue
                    record = _sent(slot)
                    if record is not None:
                        slot.task = None
                        on_record(record)
                        continue
                    if slot.process.is_alive():  # woke up for nothing
                        continue
                    self._died(slot, queue, on_record)
        except KeyboardInterrupt:
            stopping = True
            raise
        finally:  # stopped (Ctrl-C, SIGTERM) or done: busy workers stop their task cleanly, or are killed after a grace
            try:
                busy = [slot for slot in self.slots if slot.task is not None and slot.process is not None]
                for slot in busy if stopping else []:  # no next task: a worker whose task ends in the grace then exits at once
                    with suppress(OSError, ValueError):
                        slot.conn.send(None)
                stop_children([slot.process for slot in busy])
                if stopping:  # a task that ended in the grace (before its SIGTERM came) is recorded as it ended: done is done
                    for slot in busy:
                        record = _sent(slot)
                        if record is not None:
                            slot.task = None
                            on_record(record)
            finally:
                for slot in self.slots:
                    self._stop(slot)

    def _died(self, slot: _Slot, queue: deque, on_record: Callable[[dict], None]) -> None:
        """The worker died in a task: run it again on a fresh worker, or record the failure."""
        slot.process.join()
        code = slot.process.exitcode
        task, attempts = slot.task, slot.attempts + 1
        slot.task = None
        slot.conn.close()
        slot.process = slot.conn = None
        if attempts <= WORKER_RETRIES:
            queue.appendleft((task, attempts))
        else:
            how = f"exit code {code}"
            if code is not None and code < 0:
                try:
                    how = f"signal {signal.Signals(-code).name}"
                except ValueError:
                    how = f"signal {-code}"
            on_record(lost_record(task, f"the worker process died running this task ({how}), {attempts} times"))
