"""How processes end: child processes that end with their parent (batch workers and the ffmpeg
that writes frames), and commands that stop on SIGTERM and SIGHUP as on Ctrl-C.

On Linux a process can ask the kernel for SIGKILL when its parent goes (``PR_SET_PDEATHSIG``); the
parent is the thread that started it, which the callers keep alive as long as the child runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import contextmanager


def parent_death_signal() -> Callable[[int], None] | None:
    """A function that, called in a child with its parent's pid, has Linux kill the child when that
    parent goes, and kills it at once if the parent went before; None where there is no such call.
    The C function is looked up here, so that a forked child (``preexec_fn``) only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm(parent: int) -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it went before the line above took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def set_environment(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set these environment variables of this process (``None`` unsets one); return what they
    were before, which given back to this function undoes the change."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return before


@contextmanager
def environment(values: Mapping[str, str | None]):
    """``set_environment`` for the block; the variables are as they were after it."""
    before = set_environment(values)
    try:
        yield
    finally:
        set_environment(before)


STOP_SIGNALS = ("SIGTERM", "SIGHUP")
"""What stops a command as Ctrl-C does: SIGTERM (what Slurm's ``scancel`` and time limit, systemd,
``timeout`` and ``kill`` send) and SIGHUP (a closed terminal or a dropped SSH session)."""


@contextmanager
def stop_on_signals():
    """Within the block, ``STOP_SIGNALS`` raise ``KeyboardInterrupt`` as Ctrl-C does, so a command
    cleans up, removes its temporaries, keeps what resumes it and reports "interrupted" (exit 130);
    the handlers it replaced are back when the block ends. A signal that was ignored when the
    block began (``nohup`` ignores SIGHUP) stays ignored. Only the main thread can take signals:
    elsewhere it does nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_once_on(*signals: int) -> None:
    """In a child process (a batch worker, a ``--devices`` process): the first of ``signals`` raises
    ``KeyboardInterrupt``, so its work cleans up as a command does on Ctrl-C; later ones are
    ignored, so that a second signal (Ctrl-C reaches the whole process group, and the parent then
    sends SIGTERM too, ``stop_children``) does not cut that clean-up short."""

    def stop(signum, frame):
        for number in signals:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt

    for number in signals:
        signal.signal(number, stop)


STOP_GRACE_SECONDS = 20.0
"""How long stopped child processes may take to clean up before they are killed."""


def stop_children(processes) -> None:
    """Stop ``processes`` (``multiprocessing`` processes that called ``stop_once_on(SIGTERM, ...)``)
    with SIGTERM, and kill those still running after ``STOP_GRACE_SECONDS``, or at once on a second
    Ctrl-C here."""
    import time

    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        try:
            os.kill(process.pid, signal.SIGTERM)
        except OSError:  # ended meanwhile
            pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    try:
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        pass
    finally:
        for process in alive:
            if process.is_alive():
                process.kill()
                process.join()
