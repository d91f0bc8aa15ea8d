"""batch under kills and bad manifests: workers die with the batch, ``--resume`` recognises what a
killed task finished, clashing outputs and broken CSV quotes are refused before anything runs,
and a task gives the same bytes and one JSON object under Ray."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from typer.testing import CliRunner

from magicanimate_cli import processes
from magicanimate_cli.batch import run_batch
from magicanimate_cli.batch import tasks as batch_tasks
from magicanimate_cli.batch.manifest import Task
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError

import batch_helpers

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]


def jsonl(path: Path, *tasks) -> Path:
    path.write_text("".join(json.dumps({"command": command, "args": list(args)}) + "\n" for command, *args in tasks))
    return path


def env_with_tests() -> dict:
    path = os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path}


def start_batch(manifest: Path, shard: str | None = None) -> subprocess.Popen:
    """``run_batch(manifest, shard=shard)`` with the fake commands, in a process of its own (to kill it)."""
    script = ("import sys, batch_helpers\nfrom magicanimate_cli.batch import BatchInterrupted, run_batch\n"
              "try:\n    run_batch(sys.argv[1], shard=sys.argv[2] if len(sys.argv) > 2 else None, commands=batch_helpers.COMMANDS)\n"
              "except BatchInterrupted:\n    sys.exit(130)\n")
    return subprocess.Popen([sys.executable, "-c", script, str(manifest), *([shard] if shard else [])], env=env_with_tests(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_pid(pid_file: Path, what: str) -> int:
    """The pid a task wrote to ``pid_file`` as it started (``write --pid-file``), once it has."""
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), 120, what)
    return int(pid_file.read_text())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died
    except FileNotFoundError:
        return False


def reap(pid: int) -> None:
    """Kill a worker a failed test left behind (one that did not die with its batch)."""
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def record_of(manifest: Path, *task) -> dict:
    task_id = Task(1, task[0], tuple(task[1:])).id
    return json.loads((manifest.with_name(manifest.name + ".state") / f"{task_id}.json").read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_kill_9_of_the_batch_takes_its_worker_along_and_resume_runs_the_task(tmp_path):
    task = ("write", "-o", "slow.txt", "--sleep", "3", "--pid-file", "worker.pid")
    manifest = jsonl(tmp_path / "tasks.jsonl", task)
    batch = start_batch(manifest)
    worker = wait_for_pid(tmp_path / "worker.pid", "the worker to start the task")
    assert worker != batch.pid and alive(worker)
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    try:
        wait_for(lambda: not alive(worker), 5, "the orphaned worker to die")
    finally:
        reap(worker)
    time.sleep(3.5)  # what the task still needed: an orphan would have written its output by now
    assert not (tmp_path / "slow.txt").exists()
    assert record_of(manifest, *task)["status"] == "running"
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert (resumed.done, resumed.failed) == (1, 0)
    assert (tmp_path / "slow.txt").read_text() == "hello"


def test_a_second_run_of_the_same_shard_at_the_same_time_is_refused(tmp_path):
    # a job submitted again while the first still runs: it would record as failed what the first writes
    task = ("write", "-o", "slow.txt", "--sleep", "2", "--pid-file", "worker.pid")
    manifest = jsonl(tmp_path / "tasks.jsonl", task)
    first = start_batch(manifest)
    try:
        wait_for_pid(tmp_path / "worker.pid", "the first run's task")
        with pytest.raises(UserError, match=r"tasks.jsonl.state: another batch is running shard 0/1 with this state folder now; wait") as refused:
            run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
        assert f"its own --state DIR (held by pid {first.pid} on {socket.gethostname()} since " in str(refused.value)  # who runs it
        assert str(refused.value).endswith(f": python -c {manifest})")  # and what
        assert first.wait(60) == 0
    finally:
        first.kill()
    assert record_of(manifest, *task)["status"] == "done"
    again = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)  # once it ended
    assert [r["status"] for r in again.results] == ["skipped"]
    # the shard's lock file stays (removed, a run that had opened it could lock it while a third locks a new one),
    # emptied, in the state folder only: nothing beside the outputs
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.lock")) == [os.path.join("tasks.jsonl.state", ".run-0-of-1.lock")]
    assert (tmp_path / "tasks.jsonl.state" / ".run-0-of-1.lock").read_bytes() == b""


def test_a_run_of_another_split_sharing_a_task_with_a_running_one_is_refused(tmp_path):
    # the whole manifest runs; --shard 0/2 started beside it would run its first task a second time, at once
    tasks = [("write", "-o", "slow.txt", "--sleep", "3", "--pid-file", "worker.pid"), ("write", "-o", "b.txt")]
    manifest = jsonl(tmp_path / "tasks.jsonl", *tasks)
    first = start_batch(manifest)
    try:
        wait_for_pid(tmp_path / "worker.pid", "the first run's task")
        with pytest.raises(UserError, match=r"another batch is running shard 0/1 with this state folder now, which shares tasks with shard 0/2"):
            run_batch(manifest, shard="0/2", resume=True, commands=batch_helpers.COMMANDS)
        assert first.wait(60) == 0
    finally:
        first.kill()
    (tmp_path / "worker.pid").unlink()
    assert [r["status"] for r in run_batch(manifest, shard="0/2", resume=True, commands=batch_helpers.COMMANDS).results] == ["skipped"]
    # shards with no task in common run side by side: 1/4 (task 2) beside 0/2 (task 1)
    manifest = jsonl(tmp_path / "other.jsonl", *tasks[:1], ("write", "-o", "c.txt"))
    first = start_batch(manifest, shard="0/2")
    try:
        wait_for_pid(tmp_path / "worker.pid", "the task of shard 0/2")
        assert [r["status"] for r in run_batch(manifest, shard="1/4", commands=batch_helpers.COMMANDS).results] == ["done"]
        assert first.wait(60) == 0
    finally:
        first.kill()


@pytest.mark.slow
def test_a_stopped_batch_lets_its_running_task_remove_its_temporaries(tmp_path):
    # SIGTERM (or Ctrl-C) of the batch: the worker stops its task as the command alone would stop,
    # its partial frames removed, instead of being killed with them left behind
    from preprocess_helpers import make_video

    make_video(tmp_path / "talk.mp4", count=600, width=320, height=240, moving=True)
    manifest = jsonl(tmp_path / "tasks.jsonl", ("frames", "talk.mp4", "-o", "out"))
    batch = subprocess.Popen([sys.executable, "-m", "magicanimate_cli", "batch", str(manifest), "--json"], env=env_with_tests(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        partial = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.is_dir() and any(p.iterdir())]  # noqa: E731
        wait_for(partial, 120, "the task's partial frames")
        batch.send_signal(signal.SIGTERM)
        stdout, stderr = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 130, stderr
    assert json.loads(stdout)["interrupted"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "tasks.jsonl", "tasks.jsonl.state"]


def test_a_stopped_batch_prints_and_writes_its_summary_and_exits_130(tmp_path):
    # Slurm's preemption (SIGTERM) or Ctrl-C: the summary of what ended, the rest "interrupted"
    tasks = [("write", "-o", "a.txt"), ("write", "-o", "b.txt", "--sleep", "30", "--pid-file", "b.pid"), ("write", "-o", "c.txt")]
    manifest = jsonl(tmp_path / "tasks.jsonl", *tasks)
    script = ("import sys, batch_helpers\nfrom magicanimate_cli.batch import tasks\ntasks.COMMANDS = batch_helpers.COMMANDS\n"
              "from magicanimate_cli.cli import app\napp(sys.argv[1:], prog_name='magicanimate')\n")
    batch = subprocess.Popen([sys.executable, "-c", script, "batch", str(manifest), "--json"], env=env_with_tests(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_pid(tmp_path / "b.pid", "the second task to start")
        batch.send_signal(signal.SIGTERM)
        stdout, stderr = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 130, stderr
    summary = json.loads(stdout)
    assert (summary["ok"], summary["exit_code"], summary["done"], summary["failed"], summary["interrupted"]) == (False, 130, 1, 0, 2)
    assert [r["status"] for r in summary["results"]] == ["done", "interrupted", "interrupted"]
    assert summary["error"] == "interrupted: 2 of 3 tasks did not end; run the batch again with --resume"
    assert json.loads(Path(summary["summary"]).read_text()) == summary
    assert not (tmp_path / "b.txt").exists() and not (tmp_path / "c.txt").exists()
    manifest.write_text(manifest.read_text().replace('"--sleep", "30", ', ""))  # b's id changes: a new task, as an edit makes one
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in resumed.results] == ["skipped", "done", "done"] and resumed.exit_code == 0


def test_resume_never_takes_an_output_made_by_hand_after_a_stop_for_the_tasks_own(tmp_path):
    # the batch was stopped (Ctrl-C) in a task, then the user made its output by hand: --resume
    # fails the task ("already exists") instead of replacing the user's file
    task = ("write", "-o", "slow.txt", "--sleep", "30", "--pid-file", "worker.pid")
    manifest = jsonl(tmp_path / "tasks.jsonl", task)
    batch = start_batch(manifest)
    try:
        wait_for_pid(tmp_path / "worker.pid", "the worker to start the task")
        batch.send_signal(signal.SIGINT)
        assert batch.wait(60) == 130  # BatchInterrupted, after the summary
    finally:
        batch.kill()
    record = record_of(manifest, *task)
    assert record["status"] == "running" and record["stopped"] >= record["started"]
    from magicanimate_cli.batch import State, _mark_stopped

    _mark_stopped(State(tmp_path / "tasks.jsonl.state", tmp_path), [Task(1, task[0], tuple(task[1:]))])  # a later run stopped before it
    assert record_of(manifest, *task)["stopped"] == record["stopped"]  # started the task again: the first stop still counts
    (tmp_path / "slow.txt").write_text("mine")
    later = record["stopped"] + 10  # made by hand after the stop (beyond coarse file-system clocks)
    os.utime(tmp_path / "slow.txt", (later, later))
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert resumed.failed == 1 and "already exists" in resumed.results[0]["error"]
    assert (tmp_path / "slow.txt").read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_resume_recognises_an_output_its_task_wrote_just_before_the_kill(tmp_path):
    """The task commits its output, then the batch is killed before it records the task."""
    (tmp_path / "mine.txt").write_text("the user's")  # an output that was there before: never replaced
    hang = ("write", "-o", "done.txt", "--text", "new", "--hang-once", "hung.marker", "--pid-file", "worker.pid")
    theirs = ("write", "-o", "mine.txt", "--text", "batch's")
    manifest = jsonl(tmp_path / "tasks.jsonl", hang, theirs)
    batch = start_batch(manifest)
    wait_for(lambda: (tmp_path / "hung.marker").exists(), 120, "the task to commit its output")
    worker = int((tmp_path / "worker.pid").read_text())
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    try:
        wait_for(lambda: not alive(worker), 5, "the worker to die with the batch")
    finally:
        reap(worker)
    assert (tmp_path / "done.txt").read_text() == "new" and record_of(manifest, *hang)["status"] == "running"
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    records = {r["line"]: r for r in resumed.results}
    assert records[1]["status"] == "done", records[1]  # not "done.txt: already exists"
    assert records[1]["result"]["pid"] != worker and (tmp_path / "done.txt").read_text() == "new"
    # the user's file was there before the task started: still refused, still theirs
    assert records[2]["exit_code"] == 2 and "already exists" in records[2]["error"]
    assert (tmp_path / "mine.txt").read_text() == "the user's"


def test_a_worker_killed_after_its_output_is_retried_over_its_own_output(tmp_path):
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "out.txt", "--text", "x", "--die-once", "died.marker"))
    result = run_batch(manifest, commands=batch_helpers.COMMANDS)
    assert (result.done, result.failed) == (1, 0), result.results
    assert (tmp_path / "died.marker").exists() and (tmp_path / "out.txt").read_text() == "x"


# ----------------------------------------------------------------------------- refused up front


def test_two_tasks_writing_the_same_output_refuse_the_manifest(tmp_path, fake_commands):
    (tmp_path / "sub").mkdir()
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "out/a.txt", "--text", "1"),
        ("write", "-o", "b.txt"),
        ("write", "--output=./out/../out/a.txt", "--text", "2"),  # the same file, spelled otherwise
        ("sub write", "-o", str(tmp_path / "b.txt"), "--text", "3"),  # and absolute
    )
    result = CliRunner().invoke(app, ["batch", str(manifest), "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert "line 3 (write): writes" in error and "as line 1 does" in error and "line 4 (sub write)" in error and "as line 2 does" in error
    assert result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("**/*.txt")) and not (tmp_path / "tasks.jsonl.state").exists()
    # an output inside another task's output folder is the same clash
    nested = jsonl(tmp_path / "nested.jsonl", ("write", "-o", "out"), ("write", "-o", "out/inner.txt"))
    with pytest.raises(UserError, match=r"line 2 \(write\): writes .*inside .*the output of line 1"):
        run_batch(nested, commands=batch_helpers.COMMANDS)


@pytest.mark.parametrize(("task", "state"), [(("write", "-o", "tasks.jsonl.state/x.txt"), None), (("write", "-o", "out/x.txt"), "out"),
                                             (("write", "-o", "st"), "st/inner"),
                                             (("preprocess", "v.mp4", "-o", "tasks.jsonl.state"), None),  # a folder it fills: no output of its own
                                             (("download", "abcdefghijk", "-o", "dl"), "dl/state")])
def test_a_task_that_writes_where_the_batch_keeps_its_records_refuses_the_manifest(tmp_path, task, state):
    # inside the state folder it would block every --resume ("holds files that are not a batch's
    # records"); holding it, the task would fail "already exists" on the folder the batch made
    from magicanimate_cli.batch.registry import COMMANDS

    fake = task[0] == "write"
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "fine.txt") if fake else ("crop", "v.mp4", "-o", "fine.mp4"), task)
    with pytest.raises(UserError, match=rf"tasks.jsonl: line 2 \({task[0]}\): writes .* where the batch keeps its records .*another --state"
                                        r"; fix these tasks, nothing was run$"):
        run_batch(manifest, state=tmp_path / state if state else None, commands=batch_helpers.COMMANDS if fake else COMMANDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.jsonl"]


def test_a_task_that_reads_what_another_task_writes_refuses_the_manifest(tmp_path):
    # tasks run in any order and at once: with --jobs 2 the reader ran beside its writer and failed
    # "no such file" (or, later, read an output made from an input that has changed since)
    from magicanimate_cli.batch.registry import COMMANDS

    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "made/a.txt"), ("write", "-o", "b.txt", "--source", "./made/../made/a.txt"),
                     ("write", "-o", "made/c.txt", "--source", "made/c.txt"))  # its own output (the command's business): no dependency
    with pytest.raises(UserError, match=r"tasks.jsonl: line 2 \(write\): reads '.*made/a\.txt', which line 1 writes; tasks run in any "
                                        r"order and at once: run it in a later batch; fix these tasks, nothing was run$"):
        run_batch(manifest, jobs=2, commands=batch_helpers.COMMANDS)
    # inside another's output (a clip that `frames` makes), or a folder that another task fills
    clips = jsonl(tmp_path / "clips.jsonl", ("frames", "v.mp4", "-o", "clip"), ("crop", "clip/images", "-o", "small"),
                  ("preprocess", "w.mp4", "-o", "clips"), ("matte", "clips/w"))
    with pytest.raises(UserError, match=r"line 2 \(crop\): reads .*clip/images', which line 1 writes; .*; line 4 \(matte\): reads .*clips/w', which line 3"):
        run_batch(clips, commands=COMMANDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.jsonl", "tasks.jsonl"]
    # a folder that holds another task's output is not one: matte and densepose both read CLIP, writing CLIP/masks, CLIP/densepose
    from magicanimate_cli.batch import _check_tasks
    from magicanimate_cli.batch.manifest import read_manifest

    both = jsonl(tmp_path / "both.jsonl", ("matte", "clip"), ("densepose", "clip"))
    _check_tasks(both, read_manifest(both), batch_tasks.TaskRunner(COMMANDS, tmp_path))


def test_two_names_for_one_folder_are_the_same_output(tmp_path, fake_commands):
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to("out")
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "out/a.txt", "--text", "1"), ("write", "-o", "link/a.txt", "--text", "2"))
    with pytest.raises(UserError, match=r"line 2 \(write\): writes .*out/a\.txt.* as line 1 does"):
        run_batch(manifest, commands=batch_helpers.COMMANDS)
    assert list((tmp_path / "out").iterdir()) == []


def test_animate_grid_output_counts_as_a_task_output(tmp_path):
    # the real registry: `animate -o out/x --grid` also writes out/x_grid, which another task writes here
    from magicanimate_cli.batch.registry import COMMANDS

    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("crop", "clip.mp4", "-o", "out/x_grid"),
        ("animate", "ref.png", "poses", "-o", "out/x", "--grid"),
        ("animate", "ref.png", "poses", "-o", "out/y.mp4", "--grid"),
        ("crop", "clip.mp4", "-o", "out/y_grid.mp4"),
    )
    with pytest.raises(UserError, match=r"line 2 \(animate\): writes .*x_grid.* as line 1 does.*line 4 \(crop\): writes .*y_grid\.mp4.* as line 3 does"):
        run_batch(manifest, commands=COMMANDS)
    assert not (tmp_path / "out").exists()


def test_a_clip_folders_default_outputs_count_as_task_outputs(tmp_path):
    # `matte CLIP` writes CLIP/masks and `densepose CLIP` CLIP/densepose and CLIP/densepose_labels
    # though no option names them
    from magicanimate_cli.batch.registry import COMMANDS

    (tmp_path / "clip" / "images").mkdir(parents=True)
    (tmp_path / "frames").mkdir()
    manifest = jsonl(tmp_path / "tasks.jsonl", ("matte", "clip"), ("matte", "clip", "-o", "clip/masks", "--threshold", "0.4"))
    with pytest.raises(UserError, match=r"line 2 \(matte\): writes .*clip/masks.* as line 1 does"):
        run_batch(manifest, commands=COMMANDS)
    manifest = jsonl(tmp_path / "tasks.jsonl", ("densepose", "clip", "-o", "a.mp4"), ("flip", "clip", "-o", "clip/densepose_labels/x"))
    with pytest.raises(UserError, match=r"line 2 \(flip\): writes .*inside"):
        run_batch(manifest, commands=COMMANDS)
    assert not (tmp_path / "tasks.jsonl.state").exists()
    runner = batch_tasks.TaskRunner(COMMANDS, tmp_path)
    clip = tmp_path / "clip"
    assert runner.outputs("densepose", ["clip"]) == [str(clip / "densepose"), str(clip / "densepose_labels")]
    assert runner.outputs("densepose", ["clip", "-o", "a.mp4", "--labels", "l"]) == [str(tmp_path / "a.mp4"), str(tmp_path / "l")]
    assert runner.outputs("matte", ["clip", "-o", "m"]) == [str(tmp_path / "m")]
    # a video is no clip: its labels go only where --labels says; a folder may be a clip by the time the task runs
    assert runner.outputs("densepose", ["v.mp4", "-o", "a.mp4"]) == [str(tmp_path / "a.mp4")]
    assert runner.outputs("densepose", ["frames", "-o", "a.mp4"]) == [str(tmp_path / "a.mp4"), str(tmp_path / "frames" / "densepose_labels")]


def test_wrong_types_and_missing_arguments_refuse_the_manifest_naming_their_lines(tmp_path, fake_commands):
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "a.txt"),
        ("write", "-o", "b.txt", "--sleep", "soon"),
        ("write", "--text", "no output"),
    )
    result = CliRunner().invoke(app, ["batch", str(manifest)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "line 2 (write): Invalid value for '--sleep': 'soon' is not a valid float" in result.stderr
    assert "line 3 (write): Missing option '-o' / '--output'" in result.stderr and "nothing was run" in result.stderr
    assert not (tmp_path / "a.txt").exists()


@pytest.mark.parametrize(
    "text, line",
    [
        ('command,args\nwrite,"-o a.txt\nwrite,-o b.txt\n', 2),  # never closed: swallows the rest
        ('command,args\nwrite,-o a.txt\nwrite,"-o b.txt\nwrite,-o c.txt"\n', 3),  # closed lines later
        ('command,args\nwrite,"-o" c.txt\n', 2),  # text after a closing quote
    ],
)
def test_a_csv_quote_left_open_is_one_line_exit_2(tmp_path, fake_commands, text, line):
    (tmp_path / "tasks.csv").write_text(text)
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "tasks.csv")])
    assert result.exit_code == 2, result.output
    assert f"tasks.csv line {line}:" in result.stderr and "quote" in result.stderr and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.txt"))


@pytest.mark.timeout(120)  # it hung: the failure to write was taken for a worker gone, and the batch waited for it
def test_a_state_that_cannot_be_written_at_the_start_is_one_line_and_the_next_run_is_a_fresh_one(tmp_path, fake_commands, monkeypatch):
    import errno

    import magicanimate_cli.batch as batch

    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "a.txt"))
    state = tmp_path / "tasks.jsonl.state"
    written = batch.write_json

    def full(path, data):  # the disk fills up as the batch writes its first record
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(batch, "write_json", full)
    failed = CliRunner().invoke(app, ["batch", str(manifest)])
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    line = failed.output.splitlines()[-1]  # the record it could not write, named
    assert line.startswith(f"error: {state}{os.sep}") and line.endswith(".json: cannot write it (No space left on device); free space "
                                                                        "on that disk or choose an output on another one")
    assert [p.name for p in state.iterdir() if not p.name.startswith(".")] == [] and not (tmp_path / "a.txt").exists()

    monkeypatch.setattr(batch, "write_json", written)
    again = CliRunner().invoke(app, ["batch", str(manifest), "--json"])  # no --resume: nothing of the failed run is a record
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["done"] == 1 and (tmp_path / "a.txt").read_text() == "hello"


def test_a_task_that_ends_in_the_stop_grace_is_recorded_as_done(tmp_path):
    # its worker sent the record while the batch waited for it to stop, and the record was dropped:
    # the summary said interrupted, the record stayed "running", --resume ran the task again, and
    # the batch waited out the whole grace for a worker with nothing left to do
    tasks = [("write", "-o", "a.txt", "--sleep", "3", "--unstoppable", "--pid-file", "a.pid"), ("write", "-o", "b.txt")]
    manifest = jsonl(tmp_path / "tasks.jsonl", *tasks)
    script = ("import sys, batch_helpers\nfrom magicanimate_cli.batch import tasks\ntasks.COMMANDS = batch_helpers.COMMANDS\n"
              "from magicanimate_cli.cli import app\napp(sys.argv[1:], prog_name='magicanimate')\n")
    batch = subprocess.Popen([sys.executable, "-c", script, "batch", str(manifest), "--jobs", "1", "--json"], env=env_with_tests(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_pid(tmp_path / "a.pid", "the first task to start")
        batch.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        stdout, stderr = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 130, stderr
    assert time.monotonic() - stopped < processes.STOP_GRACE_SECONDS  # not the whole grace
    summary = json.loads(stdout)
    assert [r["status"] for r in summary["results"]] == ["done", "interrupted"]
    record = json.loads((tmp_path / "tasks.jsonl.state" / f"{summary['results'][0]['id']}.json").read_text())
    assert record["status"] == "done" and (tmp_path / "a.txt").read_text() == "hello"
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in resumed.results] == ["skipped", "done"]


# ----------------------------------------------------------------------------- damaged records


@pytest.mark.parametrize("damage", ['"done"', "[1]", '{"status": "done", "result": "out.txt"}',
                                    '{"status": "running", "fresh_outputs": "out.txt", "started": "soon"}'])
def test_a_damaged_record_runs_its_task_again_instead_of_crashing_the_batch(tmp_path, damage):
    # records are written atomically, but a state folder edited by hand or a damaged disk can hold
    # anything: such a record is no record (was AttributeError/ValueError, the whole batch exit 1)
    task = ("write", "-o", "out.txt", "--text", "x")
    manifest = jsonl(tmp_path / "tasks.jsonl", task, ("write", "-o", "other.txt"))
    assert run_batch(manifest, commands=batch_helpers.COMMANDS).done == 2
    (tmp_path / "out.txt").unlink()
    (manifest.with_name("tasks.jsonl.state") / f"{Task(1, task[0], task[1:]).id}.json").write_text(damage)
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in resumed.results] == ["done", "skipped"] and (tmp_path / "out.txt").read_text() == "x"


# ----------------------------------------------------------------------------- changed inputs


def test_resume_runs_again_a_done_task_whose_input_file_changed_replacing_only_its_own_output(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text(f"{name}1")
    manifest = jsonl(tmp_path / "tasks.jsonl", *[("write", "-o", f"{name.upper()}.txt", "--source", f"{name}.txt") for name in "abc"])
    assert run_batch(manifest, commands=batch_helpers.COMMANDS).done == 3
    (tmp_path / "a.txt").write_text("a2, re-downloaded")  # was skipped as done, its output made from the old input
    (tmp_path / "c.txt").unlink()  # an input deleted once processed: its task stays done
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in resumed.results] == ["done", "skipped", "skipped"], resumed.results
    assert (tmp_path / "A.txt").read_text() == "a2, re-downloaded" and (tmp_path / "B.txt").read_text() == "b1"
    # an output edited by hand after its task ended is not the task's own any more: never replaced
    (tmp_path / "b.txt").write_text("b2")
    later = time.time() + 10
    (tmp_path / "B.txt").write_text("mine")
    os.utime(tmp_path / "B.txt", (later, later))
    again = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in again.results] == ["skipped", "failed", "skipped"] and "already exists" in again.results[1]["error"]
    assert (tmp_path / "B.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- outputs gone


@pytest.mark.parametrize("gone", ["OUT_grid.txt", "labels.txt"])
def test_resume_runs_again_a_done_task_one_of_whose_other_outputs_is_gone(tmp_path, gone):
    # only the result's `output` was looked at: a deleted grid (animate --grid's OUT_grid.mp4, a
    # derived output) or --labels output left the task skipped as done, and never made again
    manifest = jsonl(tmp_path / "tasks.jsonl", ("pair", "-o", "OUT.txt", "--labels", "labels.txt"), ("write", "-o", "other.txt"))
    assert run_batch(manifest, commands=batch_helpers.COMMANDS).done == 2
    (tmp_path / gone).unlink()
    resumed = run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS)
    assert [r["status"] for r in resumed.results] == ["done", "skipped"], resumed.results
    assert all((tmp_path / name).read_text() == "pair" for name in ("OUT.txt", "OUT_grid.txt", "labels.txt"))
    assert [r["status"] for r in run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS).results] == ["skipped", "skipped"]


def test_resume_skips_a_done_task_that_did_not_write_an_output_it_names(tmp_path):
    # an output a task names but need not write (densepose's folder beside a frames folder that
    # is no clip) is not recorded as left: the task does not run again at every --resume
    manifest = jsonl(tmp_path / "tasks.jsonl", ("pair", "-o", "OUT.txt", "--no-grid"))
    assert run_batch(manifest, commands=batch_helpers.COMMANDS).done == 1
    assert not (tmp_path / "OUT_grid.txt").exists()
    assert [r["status"] for r in run_batch(manifest, resume=True, commands=batch_helpers.COMMANDS).results] == ["skipped"]
