"""The one atomic-write helper: temp names, no replace unless asked, all-or-none, sweeping killed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from magicanimate_cli import files
from magicanimate_cli.errors import UserError, first_line, shown


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_text_creates_and_refuses_to_replace(tmp_path):
    out = tmp_path / "a.json"
    files.write_text(out, "one", replace=False)
    assert out.read_text() == "one"
    with pytest.raises(UserError, match="appeared while"):
        files.write_text(out, "two", replace=False)
    assert out.read_text() == "one"
    files.write_text(out, "two", replace=True)
    assert out.read_text() == "two"
    assert _hidden(tmp_path) == []  # no temporary or lock left


def test_commit_requires_an_explicit_replace(tmp_path):
    tmp = files.temp_beside(tmp_path / "x.bin", directory=False)
    with pytest.raises(TypeError):
        files.commit(tmp, tmp_path / "x.bin")  # type: ignore[call-arg]
    files.discard(tmp)
    assert _hidden(tmp_path) == []


def test_temporaries_get_plain_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        f = files.temp_beside(tmp_path / "f.png", directory=False)
        d = files.temp_beside(tmp_path / "d")
        assert f.stat().st_mode & 0o777 == 0o640
        assert d.stat().st_mode & 0o777 == 0o750
        assert files.file_mode() == 0o640 and files.file_mode(directory=True) == 0o750
        assert f.name.startswith(".f.png.") and f.name.endswith(".partial.png")
    finally:
        os.umask(old)
        files.discard(f)
        files.discard(d)


@pytest.mark.parametrize("replace", [False, True])
def test_folder_commit(tmp_path, replace):
    final = tmp_path / "out"
    if replace:
        final.mkdir()
        (final / "old.png").write_bytes(b"old")
    tmp = files.temp_beside(final)
    (tmp / "new.png").write_bytes(b"new")
    files.commit(tmp, final, replace=replace)
    assert sorted(p.name for p in final.iterdir()) == ["new.png"]
    assert _hidden(tmp_path) == []


def test_folder_is_never_replaced_without_replace(tmp_path):
    final = tmp_path / "out"
    tmp = files.temp_beside(final)
    final.mkdir()  # appears from elsewhere meanwhile, with something in it (an empty one is taken: see below)
    (final / "theirs.png").write_bytes(b"theirs")
    with pytest.raises(UserError, match="appeared while"):
        files.commit(tmp, final, replace=False)
    files.discard(tmp)
    assert [p.name for p in final.iterdir()] == ["theirs.png"] and _hidden(tmp_path) == []


def test_commit_together_is_all_or_none(tmp_path):
    main, grid = tmp_path / "out.mp4", tmp_path / "out_grid.mp4"
    a = files.temp_beside(main, directory=False)
    b = files.temp_beside(grid, directory=False)
    a.write_bytes(b"main")
    b.write_bytes(b"grid")
    main.write_bytes(b"someone else's")  # the main output appears mid-run
    with pytest.raises(UserError, match="appeared while"):
        files.commit_together([(b, grid), (a, main)], replace=False)
    assert not grid.exists() and main.read_bytes() == b"someone else's"
    main.unlink()
    files.commit_together([(b, grid), (a, main)], replace=False)  # a re-run (here: a retry) works
    assert main.read_bytes() == b"main" and grid.read_bytes() == b"grid"
    assert _hidden(tmp_path) == []


def test_commit_together_replace_restores_on_failure(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two.png"
    one.mkdir()
    (one / "keep").write_bytes(b"1")
    a = files.temp_beside(one)
    b = files.temp_beside(two, directory=False)
    b.unlink()  # the second temporary vanished: its commit fails
    with pytest.raises(OSError):
        files.commit_together([(a, one), (b, two)], replace=True)
    assert (one / "keep").read_bytes() == b"1"  # the first output was put back


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_commit_together_replace_keeps_a_version_under_every_name_at_every_step(tmp_path, kind, monkeypatch):
    # a kill can land between any two system calls; at each one, each output holds its old or its new version
    finals = [tmp_path / "out", tmp_path / "out_grid"]
    pairs = []
    for final in finals:
        tmp = files.temp_beside(final, directory=kind == "folder")
        if kind == "folder":
            final.mkdir()
            (final / "v").write_text("old")
            (tmp / "v").write_text("new")
        else:
            final.write_text("old")
            tmp.write_text("new")
        pairs.append((tmp, final))

    def version(final):
        path = final / "v" if kind == "folder" else final
        return path.read_text() if path.exists() else None

    seen = []

    def spy(function):
        def call(*args, **kwargs):
            seen.append([version(f) for f in finals])
            result = function(*args, **kwargs)
            seen.append([version(f) for f in finals])
            return result

        return call

    for name in ("rename", "replace", "link"):
        monkeypatch.setattr(files.os, name, spy(getattr(files.os, name)))
    monkeypatch.setattr(files, "_exchange", spy(files._exchange))
    files.commit_together(pairs, replace=True)
    assert seen and all(None not in state for state in seen), seen
    assert [version(f) for f in finals] == ["new", "new"] and _hidden(tmp_path) == []


def test_commit_together_replace_puts_a_file_back_on_failure(tmp_path):
    one, two = tmp_path / "one.mp4", tmp_path / "two"
    one.write_bytes(b"old")
    a = files.temp_beside(one, directory=False)
    a.write_bytes(b"new")
    b = files.temp_beside(two)
    b.rmdir()  # the second temporary vanished: its commit fails
    with pytest.raises(OSError):
        files.commit_together([(a, one), (b, two)], replace=True)
    assert one.read_bytes() == b"old"


_CHILD = textwrap.dedent(
    """
    import sys, time
    from magicanimate_cli import files
    tmp = files.temp_beside(sys.argv[1], directory=sys.argv[2] == "dir")
    print(tmp, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_sweep_removes_a_killed_runs_temporary_but_not_a_live_one(tmp_path, kind):
    final = tmp_path / "out.mp4"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    live = subprocess.Popen([sys.executable, "-c", _CHILD, str(final), kind], stdout=subprocess.PIPE, text=True, env=env)
    dead = subprocess.Popen([sys.executable, "-c", _CHILD, str(final), kind], stdout=subprocess.PIPE, text=True, env=env)
    try:
        live_tmp = Path(live.stdout.readline().strip())
        dead_tmp = Path(dead.stdout.readline().strip())
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        assert dead_tmp.exists()  # debris, until the next run
        removed = files.sweep(final)
        assert removed == [dead_tmp]
        assert not dead_tmp.exists() and live_tmp.exists()
        left = _hidden(tmp_path)
        assert left == sorted([live_tmp.name, live_tmp.name[: live_tmp.name.rfind(".partial")] + ".lock"])
    finally:
        live.kill()
        dead.kill()
        live.wait()
    files.sweep(final)
    assert _hidden(tmp_path) == []


_CLAIMER = textwrap.dedent(
    """
    import sys, time
    from magicanimate_cli import files
    files.claim(sys.argv[1])
    print("claimed", flush=True)
    time.sleep(60)
    """
)


def test_one_run_at_a_time_per_output_and_a_killed_runs_claim_is_taken_over(tmp_path):
    final = tmp_path / "new" / "out.mp4"
    lock = final.with_name(".out.mp4.run.lock")
    with files.claim(final):
        assert lock.exists()
        with pytest.raises(UserError, match=f"^{final}: another run is writing it now; wait for that run to end"):
            files.claim(final)  # another run (flock: another open file, even in this process)
        assert files.sweep(final) == [] and lock.exists()  # a live run's claim stays
    assert sorted(p.name for p in final.parent.iterdir()) == []  # released: nothing left
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", _CLAIMER, str(final)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "claimed"
        with pytest.raises(UserError, match="another run is writing it now"):  # held by another process
            files.claim(final)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
        child.wait()
    assert lock.exists()  # what the killed run left, until the next run of the output
    files.claim(final).release()  # taken over: the OS dropped the killed run's lock
    assert not lock.exists()
    killed = subprocess.Popen([sys.executable, "-c", _CLAIMER, str(tmp_path / "other.mp4")], stdout=subprocess.PIPE, text=True, env=env)
    assert killed.stdout.readline().strip() == "claimed"
    killed.kill()
    killed.wait()
    assert files.sweep(tmp_path / "other.mp4") == [tmp_path / ".other.mp4.run.lock"]  # a command's check removes it
    assert not (tmp_path / ".other.mp4.run.lock").exists()


def test_sweep_leaves_this_process_temporaries_and_other_outputs(tmp_path):
    mine = files.temp_beside(tmp_path / "a.png", directory=False)
    other = tmp_path / ".a.png.x.partial"  # not a name temp_beside makes
    other.write_bytes(b"")
    assert files.sweep(tmp_path / "a.png") == []
    assert files.sweep(tmp_path / "a") == []
    assert mine.exists() and other.exists()
    files.discard(mine)


def test_first_line_and_shown():
    assert first_line(RuntimeError("\n  first\nsecond\n")) == "first"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert shown(Path("a/b.png")) == "a/b.png"
    assert shown("a\nb.png") == "'a\\nb.png'"
    assert "\n" not in str(UserError("bad\nname: no such file"))


@pytest.mark.parametrize("length", [200, 255])
def test_an_output_with_a_long_name_gets_temporaries_that_fit_and_are_swept(tmp_path, length):
    final = tmp_path / ("x" * (length - 4) + ".mp4")
    tmp = files.temp_beside(final, directory=False, suffix=".motion.u8")
    assert all(len(p.name.encode()) <= 255 for p in tmp_path.iterdir())
    assert files.output_of(tmp) == final
    files.discard(tmp)
    left = files.temp_beside(final, directory=False)
    files._release(left)  # as a killed run leaves it: no lock held
    assert files.sweep(final) == [left] and list(tmp_path.iterdir()) == []
    files.write_bytes(final, b"data", replace=False)
    assert final.read_bytes() == b"data"


def test_short_names_are_stable_and_cut_whole_characters():
    name = "é" * 120  # 240 bytes
    short = files.short_name(name, 64)
    assert short == files.short_name(name, 64) and len(short.encode()) + 64 <= 255
    assert short.startswith("é") and short.rsplit("~", 1)[0] == "é" * len(short.rsplit("~", 1)[0])
    assert files.short_name("short.mp4", 64) == "short.mp4"
    assert files.short_name(name, 64) != files.short_name(name[:-1] + "e", 64)


def test_a_refusal_by_the_file_system_is_one_line_naming_the_output(tmp_path):
    import errno

    final = tmp_path / "out"
    tmp = files.temp_beside(final)
    try:
        full = OSError(errno.ENOSPC, "No space left on device", str(tmp / "00003.png"))
        assert str(files.write_error(full)) == f"{final / '00003.png'}: cannot write it (No space left on device); free space on that disk or choose an output on another one"
        assert str(files.write_error(OSError(errno.ENOSPC, "No space left on device"), final)).startswith(f"{final}: cannot write it")
        assert files.write_error(OSError(errno.EIO, "Input/output error", str(tmp))) is None  # not the user's to fix
        rust = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")  # safetensors' words
        assert str(files.write_error(rust, final)).startswith(f"{final}: cannot write it (No space left on device)")
        assert files.write_error(RuntimeError("I/O error: Input/output error (os error 5)"), final) is None
        long = OSError(errno.ENAMETOOLONG, "File name too long", str(tmp_path / "n"))
        assert str(files.write_error(long)) == f"{tmp_path / 'n'}: File name too long; choose a shorter name"
        with pytest.raises(files.UserError, match="out: cannot write it .Disk quota exceeded"):
            with files.writing(final):
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
        with pytest.raises(PermissionError):  # only a full disk is the output's; the rest is named by the CLI
            with files.writing(final):
                raise PermissionError(errno.EACCES, "Permission denied", "/some/input")
    finally:
        files.discard(tmp)


def test_a_device_a_fifo_or_a_socket_is_never_replaced_by_an_output(tmp_path):
    import socket
    import stat

    from magicanimate_cli import media

    fifo, sock = tmp_path / "pipe", tmp_path / "sock"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    try:
        for path, kind in ((fifo, "a FIFO"), (sock, "a socket"), (Path("/dev/null"), "a device")):
            for overwrite in (False, True):
                with pytest.raises(UserError, match=f"{path}: is {kind}.*, not a file or folder"):
                    media.check_output(path, overwrite=overwrite)
            if path.parent == tmp_path:  # and the commit itself refuses, for a writer without the check
                for directory in (False, True):
                    tmp = files.temp_beside(path, directory=directory)
                    with pytest.raises(UserError, match=f"is {kind}"):
                        files.commit(tmp, path, replace=True)
                    with pytest.raises(UserError, match=f"is {kind}"):
                        files.commit_together([(tmp, path)], replace=True)
                    files.discard(tmp)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "sock"]
    finally:
        server.close()


def test_an_empty_folder_takes_a_folder_output_without_overwrite_and_nothing_else(tmp_path):
    # `mkdir -p out && magicanimate frames v.mp4 -o out`: nothing in an empty folder can be lost
    import numpy as np

    from magicanimate_cli import media

    empty, full, video_named = tmp_path / "out", tmp_path / "full", tmp_path / "v.mp4"
    for folder in (empty, full, video_named):
        folder.mkdir()
    (full / "notes.txt").write_text("mine")
    assert media.check_output(empty, overwrite=False) == empty
    for taken in (full, video_named):
        with pytest.raises(UserError, match="already exists"):
            media.check_output(taken, overwrite=False)
    with media.FrameWriter(empty) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in empty.iterdir()] == ["00000.png"]
    # a file never takes an empty folder's place, and a folder filled meanwhile is kept
    tmp = files.temp_beside(video_named, directory=False)
    with pytest.raises(UserError, match="appeared while"):
        files.commit(tmp, video_named, replace=False)
    files.discard(tmp)
    filling = tmp_path / "filling"
    filling.mkdir()
    tmp = files.temp_beside(filling)
    (filling / "theirs.txt").write_text("another job's")
    with pytest.raises(UserError, match="appeared while"):
        files.commit(tmp, filling, replace=False)
    files.discard(tmp)
    assert (filling / "theirs.txt").read_text() == "another job's" and (full / "notes.txt").read_text() == "mine"
    pair = [(files.temp_beside(tmp_path / "a"), tmp_path / "a"), (files.temp_beside(tmp_path / "b"), tmp_path / "b")]
    (tmp_path / "a").mkdir()
    files.commit_together(pair, replace=False)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "filling", "full", "out", "v.mp4"]


_FORKING_CLAIMER = textwrap.dedent(
    """
    import os, sys, time
    from magicanimate_cli import files
    files.claim(sys.argv[1])
    child = os.fork()
    if child == 0:  # a process the run started, which keeps the claim's descriptor (and lock) after the run ends
        quiet = os.open(os.devnull, os.O_RDWR)
        os.dup2(quiet, 1)  # not the test's pipe: the test reads to its end
        os.dup2(quiet, 2)
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)
    """
)


def test_a_refused_claim_names_its_holder_and_what_to_do_when_its_pid_has_ended(tmp_path):
    import socket

    final = tmp_path / "out.mp4"
    lock = tmp_path / ".out.mp4.run.lock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", _CLAIMER, str(final)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "claimed"
        with pytest.raises(UserError) as refused:
            files.claim(final)
    finally:
        child.kill()
        child.wait()
    message = str(refused.value)
    assert message.startswith(f"{final}: another run is writing it now; wait for that run to end (or stop it), or choose another "
                              f"output (held by pid {child.pid} on {socket.gethostname()} since ")
    assert message.endswith(f": python -c {final})")
    files.claim(final).release()  # the killed run's record went with its claim
    run = subprocess.run([sys.executable, "-c", _FORKING_CLAIMER, str(final)], capture_output=True, text=True, env=env, check=True)
    orphan = int(run.stdout)
    try:
        with pytest.raises(UserError, match=r"^\S+: another run is writing it now; .* \(held by pid (\d+) on .*; pid \1 has ended, so") as refused:
            files.claim(final)
        message = str(refused.value)
        assert message.endswith(f"has ended, so a process it started still holds the lock: stop that process, or if none is still "
                                f"writing, remove {lock})"), message
        lock.unlink()  # what the message says to do once no process writes it
        files.claim(final).release()
    finally:
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.parametrize("record", ['{"pid": 1, "host": "h", "since": 1e20, "command": "c"}', '{"pid": 1180591620717411303424, "host": "h", "since": 0, "command": "c"}',
                                    '{"pid": 1, "host": "h", "since": NaN, "command": "c"}', '[1, 2]', 'not json', '{"pid": 0, "host": "h", "since": 0, "command": "c"}', '{"pid": -1, "host": "h", "since": 0, "command": "c"}'])
def test_a_damaged_holder_record_names_no_one_instead_of_failing(tmp_path, record):
    # a lock file's record is only a courtesy: one that cannot be read is left out of the refusal
    lock = tmp_path / ".out.mp4.run.lock"
    lock.write_text(record.replace('"h"', f'"{__import__("socket").gethostname()}"'))
    assert files.holder_of(lock) == ""


def test_a_lock_file_this_user_may_not_read_names_no_one(tmp_path, monkeypatch):
    lock = tmp_path / ".out.mp4.run.lock"
    lock.write_text("{}")
    real_open = open

    def refused(path, *args, **kwargs):
        if Path(path) == lock:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refused)
    assert files.holder_of(lock) == ""


def test_commit_replaces_atomically(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = files.temp_beside(final)
    (tmp / "new.txt").write_text("new")
    files.commit(tmp, final, replace=True)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
