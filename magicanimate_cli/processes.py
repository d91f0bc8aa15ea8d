"""How processes end: child processes that end with their parent (batch workers and the ffmpeg
that writes frames), and long-running commands that stop on SIGTERM as on Ctrl-C.

On Linux a process can ask the kernel for SIGKILL when its parent goes (``PR_SET_PDEATHSIG``); the
parent is the thread that started it, which the callers keep alive as long as the child runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
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


@contextmanager
def stop_on_sigterm():
    """Within the block, SIGTERM (what Slurm, systemd and ``kill`` send) raises ``KeyboardInterrupt``
    as Ctrl-C does, so a serving command cleans up and prints its result; the handler it replaced
    is back when the block ends. Only the main thread can take signals: elsewhere it does nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
