"""``batch --engine ray`` from the command line, in a process of its own, on a local Ray cluster
bound to 127.0.0.1: one JSON object on stdout whatever Ray prints (a worker is killed and its task
retried), and a task gives the same bytes and the same torch thread count as run alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
FIXTURE_WEIGHTS = Path(os.environ.get("MAGICANIMATE_PARITY_DIR", REPO.parent / "shared" / "parity")) / "A" / "weights"
SMALL = ["--size", "64", "--steps", "2", "--context-frames", "2", "--context-overlap", "1", "--device", "cpu"]

pytest.importorskip("ray")


def environment(*paths: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray binds and addresses 127.0.0.1 only
    return env


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """One ``magicanimate batch --engine ray --json`` of a fake task whose worker is killed once,
    a thread-count probe and a real animate task; and the same animate task run alone."""
    if not (FIXTURE_WEIGHTS / "MagicAnimate").is_dir():
        pytest.skip(f"{FIXTURE_WEIGHTS}: fixture A's weights are not here")
    from magicanimate_cli import media

    work = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(0)
    media.write_png(work / "ref.png", rng.integers(0, 256, (80, 64, 3), dtype=np.uint8), replace=False)
    media.write_frames(work / "pose", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    (work / "mixed.py").write_text(
        "import batch_helpers\n"
        "from magicanimate_cli.batch import Registry\n"
        "from magicanimate_cli.batch.registry import COMMANDS\n"
        "REGISTRY = Registry([*COMMANDS, *batch_helpers.REGISTRY])\n"
    )
    animate = ["ref.png", "pose", "--models", str(FIXTURE_WEIGHTS), *SMALL]
    tasks = [
        ("write", "-o", "k.txt", "--crash-once", "killed-once.pid", "--sleep", "0.2"),
        ("write", "-o", "threads.txt", "--report-threads"),
        ("animate", *animate, "-o", "via_ray"),
    ]
    (work / "tasks.jsonl").write_text("".join(json.dumps({"command": c, "args": list(a)}) + "\n" for c, *a in tasks))
    script = (
        "import sys\n"
        "from magicanimate_cli.batch import tasks\n"
        "tasks.COMMANDS = 'mixed:REGISTRY'\n"
        "from magicanimate_cli.cli import entrypoint\n"
        "sys.argv = ['magicanimate', 'batch', 'tasks.jsonl', '--engine', 'ray', '--json']\n"
        "entrypoint()\n"
    )
    env = environment(work)
    batch = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=800)
    alone = subprocess.run([sys.executable, "-m", "magicanimate_cli", "animate", *animate, "-o", "alone", "--json"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env, capture_output=True, text=True)
    return work, batch, alone, int(threads.stdout)


def test_json_is_one_object_on_stdout_when_a_ray_worker_dies(ray_run):
    work, batch, _, _ = ray_run
    lines = [line for line in batch.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, batch.stdout
    assert "Started a local Ray instance" not in batch.stderr and "Token authentication" not in batch.stderr  # Ray's notices stay off
    summary = json.loads(lines[0])
    assert batch.returncode == 0, (summary, batch.stderr[-2000:])
    records = {r["line"]: r for r in summary["results"]}
    assert summary["engine"] == "ray" and [records[n]["status"] for n in (1, 2, 3)] == ["done"] * 3
    # the retry case: the first worker killed itself, a fresh one finished the task
    assert int((work / "killed-once.pid").read_text()) != records[1]["result"]["pid"]


@pytest.mark.slow
def test_a_task_gives_the_same_frames_through_ray_as_alone(ray_run):
    from magicanimate_cli import media

    work, batch, alone, threads_alone = ray_run
    assert alone.returncode == 0, alone.stderr
    summary = json.loads((work / "tasks.jsonl.state" / "summary-0-of-1.json").read_text())
    assert {r["line"]: r for r in summary["results"]}[2]["result"]["threads"] == threads_alone
    names = sorted(p.name for p in (work / "alone").glob("*.png"))
    assert names == ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in (work / "via_ray").glob("*.png")) == names
    for name in names:
        assert np.array_equal(media.read_image(work / "via_ray" / name), media.read_image(work / "alone" / name)), name



def stop_a_ray_batch(work: Path, *tasks) -> tuple[subprocess.Popen, str, str]:
    """``magicanimate batch --engine ray --jobs 1 --json`` of the fake ``tasks``, sent SIGTERM once
    its first task wrote ``a.pid`` (as it started)."""
    import signal

    from conftest import wait_for

    (work / "tasks.jsonl").write_text("".join(json.dumps({"command": c, "args": list(a)}) + "\n" for c, *a in tasks))
    script = ("import sys, batch_helpers\nfrom magicanimate_cli.batch import tasks\ntasks.COMMANDS = batch_helpers.COMMANDS\n"
              "from magicanimate_cli.cli import app\napp(sys.argv[1:], prog_name='magicanimate')\n")
    batch = subprocess.Popen([sys.executable, "-c", script, "batch", "tasks.jsonl", "--engine", "ray", "--jobs", "1", "--json"],
                             cwd=work, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (work / "a.pid").exists() and (work / "a.pid").read_text(), 120, "the first task to start")
        batch.send_signal(signal.SIGTERM)
        stdout, stderr = batch.communicate(timeout=60)
    finally:
        batch.kill()
    return batch, stdout, stderr


def test_sigterm_during_a_ray_run_writes_the_summary_and_exits_130(tmp_path):
    # Slurm's preemption sends SIGTERM: ray.init had replaced the batch's handler with its own
    # sys.exit, so the batch died with no summary, exit 1, and its tasks' records never said it stopped
    batch, stdout, stderr = stop_a_ray_batch(tmp_path, ("write", "-o", "a.txt", "--sleep", "30", "--pid-file", "a.pid"), ("write", "-o", "b.txt"))
    assert batch.returncode == 130, stderr[-2000:]
    summary = json.loads(stdout)
    assert (summary["exit_code"], summary["interrupted"]) == (130, 2)
    assert json.loads((tmp_path / "tasks.jsonl.state" / "summary-0-of-1.json").read_text()) == summary
    record = json.loads((tmp_path / "tasks.jsonl.state" / f"{summary['results'][0]['id']}.json").read_text())
    assert record["status"] == "running" and "stopped" in record  # --resume never takes a later hand-made a.txt for its own


def test_a_stopped_ray_batch_lets_its_running_task_remove_its_temporaries(tmp_path):
    # as with the local engine: the actor's task stops as the command would on Ctrl-C, instead of
    # its process being killed with its temporary (a stage's partial frames) left beside the output
    batch, stdout, stderr = stop_a_ray_batch(tmp_path, ("write", "-o", "a.txt", "--sleep", "30", "--temp-first", "--pid-file", "a.pid"))
    assert batch.returncode == 130, stderr[-2000:]
    assert json.loads(stdout)["interrupted"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pid", "tasks.jsonl", "tasks.jsonl.state"]


def test_a_task_that_ends_in_the_stop_grace_is_recorded_as_done(tmp_path):
    # its record came back while the batch waited for the stopped actors, and was dropped: the
    # summary said interrupted, the record stayed "running", and --resume ran the task again
    batch, stdout, stderr = stop_a_ray_batch(tmp_path, ("write", "-o", "a.txt", "--sleep", "3", "--unstoppable", "--pid-file", "a.pid"), ("write", "-o", "b.txt"))
    assert batch.returncode == 130, stderr[-2000:]
    summary = json.loads(stdout)
    assert (summary["done"], summary["interrupted"]) == (1, 1)
    assert [r["status"] for r in summary["results"]] == ["done", "interrupted"]
    record = json.loads((tmp_path / "tasks.jsonl.state" / f"{summary['results'][0]['id']}.json").read_text())
    assert record["status"] == "done" and (tmp_path / "a.txt").read_text() == "hello"


def test_sigterm_while_ray_starts_writes_the_summary_exits_130_and_leaves_no_ray_process(tmp_path):
    # ray.init sets its own SIGTERM handler (sys.exit) as it begins: a SIGTERM while the local
    # cluster started ended the batch with exit 15, no summary and nothing on stdout
    import shutil
    import signal
    import tempfile

    from conftest import wait_for

    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (tmp_path / "tasks.jsonl").write_text(json.dumps({"command": "write", "args": ["-o", "a.txt"]}) + "\n")
        script = ("import sys, batch_helpers\nfrom magicanimate_cli.batch import tasks\ntasks.COMMANDS = batch_helpers.COMMANDS\n"
                  "from magicanimate_cli.cli import app\napp(sys.argv[1:], prog_name='magicanimate')\n")
        batch = subprocess.Popen([sys.executable, "-c", script, "batch", "tasks.jsonl", "--engine", "ray", "--json"], cwd=tmp_path,
                                 env={**environment(), "RAY_TMPDIR": str(ray_tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def ray_processes() -> list[str]:
            listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
            return [line for line in listing if str(ray_tmp) in line]

        try:
            wait_for(lambda: any(ray_tmp.glob("ray/session_*/logs/gcs_server*")), 120, "Ray to start its cluster")
            assert batch.poll() is None
            batch.send_signal(signal.SIGTERM)
            stdout, stderr = batch.communicate(timeout=120)
        finally:
            batch.kill()
        assert batch.returncode == 130, stderr[-2000:]
        summary = json.loads(stdout)
        assert (summary["exit_code"], summary["interrupted"]) == (130, 1)
        assert json.loads((tmp_path / "tasks.jsonl.state" / "summary-0-of-1.json").read_text()) == summary
        wait_for(lambda: not ray_processes(), 30, f"Ray's processes to end: {ray_processes()}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
