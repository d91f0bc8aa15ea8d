"""How commands and their child processes stop (`processes.py`)."""

import multiprocessing
import os
import signal
import threading
import time

import pytest
from conftest import wait_for

from magicanimate_cli import processes

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


def test_sigterm_in_the_block_stops_as_ctrl_c_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with processes.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_ignored_before_the_block_stays_ignored():  # nohup ignores SIGHUP
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with processes.stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGHUP, before)


def _child(folder: str, cleanup_seconds: float) -> None:
    """A child as batch workers and --devices processes are: the first SIGTERM stops its work,
    the clean-up then runs to its end (or until it is killed) whatever signals follow."""
    processes.stop_once_on(signal.SIGINT, signal.SIGTERM)
    open(os.path.join(folder, f"{os.getpid()}.started"), "w").close()
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not cut the clean-up short
        time.sleep(cleanup_seconds)
        open(os.path.join(folder, f"{os.getpid()}.cleaned"), "w").close()


def _start(tmp_path, cleanup_seconds: float, count: int = 2):
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_child, args=(str(tmp_path), cleanup_seconds)) for _ in range(count)]
    for child in children:
        child.start()
    wait_for(lambda: len(list(tmp_path.glob("*.started"))) == count, 30, "the children to start")
    return children


def test_stopped_children_finish_their_clean_up_within_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "STOP_GRACE_SECONDS", 30.0)
    children = _start(tmp_path, cleanup_seconds=0.5)
    processes.stop_children(children)
    assert not any(child.is_alive() for child in children)
    assert sorted(p.stem for p in tmp_path.glob("*.cleaned")) == sorted(str(child.pid) for child in children)
    assert all(child.exitcode == 0 for child in children)


def test_children_still_cleaning_up_after_the_grace_are_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "STOP_GRACE_SECONDS", 1.0)
    children = _start(tmp_path, cleanup_seconds=60)
    started = time.monotonic()
    processes.stop_children(children)
    assert time.monotonic() - started < 20
    assert all(child.exitcode == -signal.SIGKILL for child in children)
    assert not list(tmp_path.glob("*.cleaned"))


def test_a_second_ctrl_c_during_the_grace_kills_them_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "STOP_GRACE_SECONDS", 120.0)
    children = _start(tmp_path, cleanup_seconds=60)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C again, while it waits
    timer.start()
    started = time.monotonic()
    try:
        processes.stop_children(children)
    except KeyboardInterrupt:  # may come out of it, once they are killed
        pass
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 30
    assert all(child.exitcode == -signal.SIGKILL for child in children)


def test_environment_sets_and_unsets_for_the_block_and_puts_back_what_was_there(monkeypatch):
    monkeypatch.setenv("MA_TEST_KEPT", "before")
    monkeypatch.setenv("MA_TEST_UNSET", "there")
    monkeypatch.delenv("MA_TEST_NEW", raising=False)
    with pytest.raises(KeyError):
        with processes.environment({"MA_TEST_KEPT": "during", "MA_TEST_UNSET": None, "MA_TEST_NEW": "new"}):
            assert (os.environ["MA_TEST_KEPT"], os.environ.get("MA_TEST_UNSET"), os.environ["MA_TEST_NEW"]) == ("during", None, "new")
            raise KeyError("the block failed")  # what was there comes back all the same
    assert (os.environ["MA_TEST_KEPT"], os.environ["MA_TEST_UNSET"], os.environ.get("MA_TEST_NEW")) == ("before", "there", None)
