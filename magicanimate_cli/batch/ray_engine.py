"""The Ray engine: the same tasks on a Ray cluster, models kept in long-lived actors.

``--address auto`` (or ``ray://…`` / ``HOST:PORT``) joins a running cluster; without
``--address`` a local cluster is started for the run and stopped after it. Tasks of
commands marked ``gpu`` in the registry (animate, densepose) go to actors that hold one GPU each when the cluster has
GPUs; every other task, and all tasks on a cluster without GPUs, go to actors that hold one CPU.
Each actor is a ``TaskRunner``: it loads a model on its first task and reuses it for the next
ones. When an actor's process dies in a task, a fresh actor runs the task again; after
``WORKER_RETRIES`` retries the task is recorded as failed. Records come back as tasks finish and
go into the same state folder and summary as the local engine's. Stopped (Ctrl-C, SIGTERM), the
driver sends SIGTERM to each busy actor's process, so its task stops as the command would on
Ctrl-C, and kills the actors after ``STOP_GRACE_SECONDS`` at most.

Every actor computes with the thread count of the driver's environment, not the one thread Ray
gives a one-CPU worker, so a task gives the same bytes here as alone. Whatever Ray prints (worker
failures, shutdown notes) goes to stderr: stdout stays the caller's, for one ``--json`` object.

The cluster's workers must reach the same files under the same paths (a shared filesystem) and
have this package installed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from pathlib import Path

from ..errors import UserError, first_line
from ..processes import STOP_GRACE_SECONDS, STOP_SIGNALS, stop_once_on
from .local import WORKER_RETRIES
from .registry import Unknown, resolve
from .tasks import COMMANDS, TaskRunner, lost_record, thread_settings, use_thread_settings, worker_name


class RayWorker:
    """A Ray actor that runs tasks in its process and keeps its models between them."""

    def __init__(self, commands: str, workdir: str | None, threads: dict | None = None) -> None:
        use_thread_settings(threads)
        with suppress(ValueError):  # tasks run in the actor's main thread: a SIGTERM stops one as Ctrl-C stops the command
            stop_once_on(signal.SIGTERM)
        self.runner = TaskRunner(commands, workdir)

    def run(self, task: dict) -> dict:
        return self.runner.run(task)

    def where(self) -> str:
        return worker_name()

    def process(self) -> tuple[str, int]:
        """The Ray node and the pid of this actor's process, for the driver's stop (``_stop``)."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()


def _terminate(pid: int) -> None:
    """A Ray task on an actor's node: SIGTERM the actor's process, so its task stops cleanly."""
    with suppress(OSError):
        os.kill(pid, signal.SIGTERM)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'ray>=2.9' (in a checkout: pip install -e '.[ray]')") from None
    return ray


def run_ray(
    tasks: list[dict],
    on_record: Callable[[dict], None],
    *,
    jobs: int | None = None,
    address: str | None = None,
    workdir: Path | str | None = None,
    commands: str = COMMANDS,
    on_start: Callable[[dict], dict] | None = None,
) -> None:
    """Run ``tasks`` on Ray, calling ``on_record`` with each record as it finishes.

    ``on_start(task)``, called before each attempt at a task, returns what the actor gets."""
    ray = import_ray()
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs}: need at least 1")
    with stdout_to_stderr():
        _run(ray, tasks, on_record, jobs, address, workdir, commands, on_start or (lambda task: task))


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout, by Python or by native code, to stderr meanwhile."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        os.dup2(2, 1)
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run(ray, tasks, on_record, jobs, address, workdir, commands, on_start) -> None:
    started = False
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
        # Ray's own INFO and WARNING lines ("Started a local Ray instance", its token notice) stay
        # off a batch job's stderr unless --debug asks for library logs; its errors still come through
        level = logging.INFO if logging.getLogger("magicanimate_cli").isEnabledFor(logging.DEBUG) else logging.ERROR
        try:
            with _signal_handlers_kept():
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level=level)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False, logging_level=level)
        except (ConnectionError, TimeoutError) as exc:
            raise UserError(f"--address {address}: cannot reach a Ray cluster ({first_line(exc)}); start one with `ray start --head`") from None
        except KeyboardInterrupt:  # stopped while Ray started: stop what it started, then the batch's stop
            ray.shutdown()
            raise
        started = True
    actors: list = []
    try:
        if tasks:
            _dispatch(ray, tasks, on_record, on_start, jobs, str(workdir) if workdir is not None else None, commands, actors)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Put back, after ``ray.init``, the handlers it replaces: it sets SIGTERM to exit the driver at
    once (``sys.exit``), which would skip the batch's stop (``processes.stop_on_signals``: the
    summary, the ``interrupted`` tasks, exit 130) when Slurm preempts the job. A stop signal that
    comes during ``ray.init`` (Ray's handler's ``SystemExit`` with that signal's number) is a
    ``KeyboardInterrupt``, as it is before and after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = [getattr(signal, name) for name in ("SIGINT", *STOP_SIGNALS) if hasattr(signal, name)]
    saved = {number: signal.getsignal(number) for number in numbers}
    try:
        yield
    except SystemExit as exc:
        if exc.code not in numbers:
            raise
        raise KeyboardInterrupt from None
    finally:
        for number, handler in saved.items():
            if handler is not None:  # set from outside Python: leave Ray's
                signal.signal(number, handler)


class _Kind:
    """Actors of one resource shape and the tasks waiting for them."""

    def __init__(self, ray, options: dict, size: int, commands: str, workdir: str | None, actors: list) -> None:
        self.actor_class = ray.remote(RayWorker).options(max_restarts=0, max_task_retries=0, **options)
        self.size = size
        self.commands, self.workdir = commands, workdir
        self.threads = thread_settings()
        self.queue: deque = deque()
        self.idle: list = []
        self.actors = actors
        self.processes: dict = {}  # actor -> the ref of its (node, pid)

    def new_actor(self):
        actor = self.actor_class.remote(self.commands, self.workdir, self.threads)
        self.actors.append(actor)
        self.processes[actor] = actor.process.remote()  # answered before its first task
        return actor


def _needs_gpu(registry, task: dict) -> bool:
    try:
        return registry.lookup(task["command"], task["args"])[0].gpu
    except Unknown:
        return False


def _dispatch(ray, tasks, on_record, on_start, jobs, workdir, commands, actors) -> None:
    resources = ray.cluster_resources()
    cluster_gpus = int(resources.get("GPU", 0))
    cluster_cpus = max(1, int(resources.get("CPU", 1)))
    limit = jobs or len(tasks)
    registry = resolve(commands)
    on_gpu = [bool(cluster_gpus) and _needs_gpu(registry, task) for task in tasks]
    gpu_tasks = [task for task, gpu in zip(tasks, on_gpu) if gpu]
    cpu_tasks = [task for task, gpu in zip(tasks, on_gpu) if not gpu]
    kinds = []
    if gpu_tasks:
        size = min(cluster_gpus, len(gpu_tasks), limit)
        kind = _Kind(ray, {"num_cpus": 1, "num_gpus": 1}, size, commands, workdir, actors)
        kind.queue.extend((task, 0) for task in gpu_tasks)
        kinds.append(kind)
    if cpu_tasks:
        spare = cluster_cpus - (kinds[0].size if kinds else 0)
        size = min(max(1, spare), len(cpu_tasks), limit)
        kind = _Kind(ray, {"num_cpus": 1}, size, commands, workdir, actors)
        kind.queue.extend((task, 0) for task in cpu_tasks)
        kinds.append(kind)
    for kind in kinds:
        kind.idle = [kind.new_actor() for _ in range(kind.size)]

    running: dict = {}
    try:
        _loop(ray, kinds, running, on_record, on_start)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the running tasks stop as the command alone would, then _run kills the actors
        _stop(ray, running, on_record)
        raise


def _stop(ray, running: dict, on_record) -> None:
    """SIGTERM the process of each actor in ``running`` (on its node, by a Ray task), so that its task
    stops as the command does on Ctrl-C (its temporaries removed, an ``animate`` checkpoint kept), and
    wait for them ``STOP_GRACE_SECONDS`` at most, or until a second Ctrl-C. A task that ended
    meanwhile (it finished before its SIGTERM came) is recorded (``on_record``) as it ended: done
    is done, and ``--resume`` skips it."""
    if not running:
        return
    import time

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    terminate = ray.remote(num_cpus=0, max_retries=0)(_terminate)
    deadline = time.monotonic() + STOP_GRACE_SECONDS  # one grace for the whole stop, however many actors

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    try:
        for kind, actor, _, _ in running.values():
            try:
                node, pid = ray.get(kind.processes[actor], timeout=left())
            except ray.exceptions.RayError:  # the actor is gone already (or did not answer in time)
                continue
            terminate.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(pid)
        ended, _ = ray.wait(list(running), num_returns=len(running), timeout=left())
    except KeyboardInterrupt:  # a second Ctrl-C: kill them now
        return
    for ref in ended:
        try:
            record = ray.get(ref, timeout=0)
        except ray.exceptions.RayError:  # stopped in its task, or its actor is gone: interrupted
            continue
        on_record(record)


def _loop(ray, kinds, running: dict, on_record, on_start) -> None:
    while running or any(kind.queue for kind in kinds):
        for kind in kinds:
            while kind.idle and kind.queue:
                actor, (task, attempts) = kind.idle.pop(), kind.queue.popleft()
                running[actor.run.remote(on_start(task))] = (kind, actor, task, attempts)
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            kind, actor, task, attempts = running.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # its process died: a fresh actor tries again
                ray.kill(actor, no_restart=True)
                actor = kind.new_actor()
                if attempts < WORKER_RETRIES:
                    kind.queue.appendleft((task, attempts + 1))
                    kind.idle.append(actor)
                    continue
                record = lost_record(task, f"the Ray worker died running this task, {attempts + 1} times ({first_line(exc)})")
            except ray.exceptions.RayError as exc:
                record = lost_record(task, f"Ray: {first_line(exc)}")
            kind.idle.append(actor)
            on_record(record)


def _check_reachable(address: str) -> None:
    """Fail at once, not after Ray's minutes of retries, when ``HOST:PORT`` refuses connections."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise UserError(f"--address {address}: nothing answers there ({exc.strerror or exc}); start Ray with `ray start --head --port {port}`") from None


