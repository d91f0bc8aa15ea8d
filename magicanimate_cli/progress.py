"""Progress reporting: Rich bars on a terminal, plain lines in batch logs, silence with ``--json``.

Library functions take a ``Progress`` callback, ``progress(stage, done, total)``; they never
print. The CLI picks the reporter with ``rich_progress(enabled)``:

* ``enabled=None`` (auto): Rich bars when stderr is a terminal; otherwise (Slurm logs, pipes,
  ``nohup``) ``PlainProgress``: one plain line per stage at each further 10 % of the work, or
  every 30 s when progress is slower than that, and one when the stage completes;
* ``enabled=False``: silent (``--json``, whose stdout holds only its one object);
* ``enabled=True``: Rich bars even when stderr is not a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

Progress = Callable[[str, int, int], None]

#: a plain line at each further STEP_PERCENT of a stage, or after INTERVAL_S seconds without one
STEP_PERCENT = 10
INTERVAL_S = 30.0


def silent(stage: str, done: int, total: int) -> None:
    """A progress callback that does nothing."""


@dataclass
class _Stage:
    started: float
    last_time: float
    last_step: int  # the 10 % step of the last line (-1: none yet)
    finished: bool = False


class PlainProgress:
    """A ``Progress`` that writes plain lines to ``stream`` at a modest rate (for batch logs).

    A line is written when a stage starts, each time its work reaches a further ``step`` percent
    of ``total``, when ``interval`` seconds passed since the stage's last line, and when it
    completes (``done == total``); never twice for the same state. ``clock`` and ``stream`` are
    injectable for tests. Lines look like ``densepose: 45/90 (50%) 12s``.
    """

    def __init__(self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.monotonic,
                 step: int = STEP_PERCENT, interval: float = INTERVAL_S) -> None:
        self.stream = stream
        self.clock = clock
        self.step = step
        self.interval = interval
        self._stages: dict[str, _Stage] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        state = self._stages.get(stage)
        if state is None or (state.finished and done < total):  # a new stage, or the same name run again
            state = self._stages[stage] = _Stage(now, now, -1)
            self._write(stage, done, total, state, now)
            return
        if state.finished:
            return
        step = (100 * done // total) // self.step if total > 0 else -1
        complete = total > 0 and done >= total
        if complete or step > state.last_step or now - state.last_time >= self.interval:
            self._write(stage, done, total, state, now)

    def _write(self, stage: str, done: int, total: int, state: _Stage, now: float) -> None:
        state.last_time = now
        if total > 0:
            state.last_step = (100 * done // total) // self.step
            state.finished = done >= total
            counts = f"{done}/{total} ({100 * done // total}%)"
        else:
            counts = str(done)
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"{stage}: {counts} {now - state.started:.0f}s\n")
        stream.flush()


@contextmanager
def rich_progress(enabled: bool | None = None, *, stream: TextIO | None = None) -> Iterator[Progress]:
    """The CLI's progress callback: Rich bars, plain lines or silence (see the module docstring).

    ``stream`` (default ``sys.stderr``) is where the bars or lines go; ``None`` for ``enabled``
    chooses by whether it is a terminal.
    """
    stream = stream if stream is not None else sys.stderr
    if enabled is False:
        yield silent
        return
    if enabled is None and not _is_terminal(stream):
        yield PlainProgress(stream)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with RichProgress(*columns, console=Console(file=stream), transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False
