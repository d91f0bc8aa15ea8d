"""magicanimate batch: manifests, shards, resume, the local engine (in process and pinned worker
processes), the Ray engine, and real ``animate`` tasks sharing one loaded pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli.batch import local, run_batch
from magicanimate_cli.batch import tasks as batch_tasks
from magicanimate_cli.batch.local import parse_gpus, plan_workers
from magicanimate_cli.batch.manifest import Task, parse_shard, read_manifest, select_shard, shard_from_env
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError

import batch_helpers

TESTS = Path(__file__).resolve().parents[1]


def jsonl(path: Path, *tasks) -> Path:
    path.write_text("".join(json.dumps({"command": command, "args": list(args)}) + "\n" for command, *args in tasks))
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def one_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


# ----------------------------------------------------------------------------- manifests


def test_jsonl_and_csv_manifests_give_the_same_tasks(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        "# animate two pairs\n"
        '{"command": "animate", "args": ["ref one.png", "pose.mp4", "-o", "out.mp4", "--steps", 25]}\n'
        "\n"
        '{"command": "flip", "args": ["clip"]}\n'
    )
    (tmp_path / "a.csv").write_text('# animate, then "flip"\ncommand,args\n  # a pair, quoted\nanimate,"\'ref one.png\' pose.mp4 -o out.mp4 --steps 25"\n,\nflip,clip\n')
    from_jsonl, from_csv = read_manifest(tmp_path / "a.jsonl"), read_manifest(tmp_path / "a.csv")
    assert [(t.command, t.args) for t in from_jsonl] == [(t.command, t.args) for t in from_csv]
    assert from_jsonl[0].args == ("ref one.png", "pose.mp4", "-o", "out.mp4", "--steps", "25")
    assert [t.line for t in from_jsonl] == [2, 4] and [t.line for t in from_csv] == [4, 6]  # comments count as lines
    assert [t.id for t in from_jsonl] == [t.id for t in from_csv]
    assert from_jsonl[0].id != Task(2, "animate", ("ref one.png", "pose.mp4", "-o", "out.mp4")).id
    # the id does not depend on the line, and the command is never run through a shell
    assert Task(9, "animate", from_jsonl[0].args).id == from_jsonl[0].id


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("m.jsonl", '{"command": "animate", "args": []}\n{"command": \n', "m.jsonl line 2: not valid JSON"),
        ("m.jsonl", '{"command": "animate", "arg": []}\n', "unknown key 'arg'"),
        ("m.jsonl", '{"command": "animate", "args": "ref.png pose.mp4"}\n', "line 1: \"args\" must be a list"),
        ("m.jsonl", '{"command": "magicanimate", "args": ["animate"]}\n', "without the leading 'magicanimate'"),
        ("m.jsonl", '{"command": "flip", "args": ["a"]}\n{"command": "flip", "args": ["a"]}\n', "line 2: the same task as line 1"),
        ("m.jsonl", "# nothing\n\n", "holds no tasks"),
        ("m.csv", "cmd,args\nflip,a\n", "must name the columns: command,args"),
        ("m.csv", 'command,args\nflip,"a \'b"\n', "line 2: cannot split the args cell"),
        ("m.csv", "command,args\nflip,a,b\n", "line 2: more cells than columns"),
        ("m.yaml", "- flip\n", "unknown manifest format .yaml"),
    ],
)
def test_bad_manifests_are_one_line_user_errors(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError) as caught:
        read_manifest(tmp_path / name)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_manifest_or_a_folder_is_said_as_such(tmp_path):
    with pytest.raises(UserError, match="none.jsonl: no such manifest file; give a .jsonl or .csv list"):
        read_manifest(tmp_path / "none.jsonl")
    with pytest.raises(UserError, match=r"jobs: is a folder; give the manifest file in it \(a .jsonl or .csv list"):
        read_manifest((tmp_path / "jobs").mkdir() or tmp_path / "jobs")


def test_a_manifest_that_is_not_utf8_is_a_user_error(tmp_path):  # was UnicodeDecodeError, exit 1
    (tmp_path / "u.jsonl").write_bytes('{"command": "flip", "args": ["a"]}\n'.encode("utf-16"))
    with pytest.raises(UserError, match=r"u.jsonl: not UTF-8 text \(byte 0: .*\); save it as UTF-8"):
        read_manifest(tmp_path / "u.jsonl")
    (tmp_path / "u.csv").write_bytes(b"command,args\nflip,\xff\n")
    with pytest.raises(UserError, match=r"u.csv: not UTF-8 text \(byte 18: .*\); save it as UTF-8"):
        read_manifest(tmp_path / "u.csv")
    line = b'{"command": "flip", "args": ["a"]}\n'  # the offset counts from the file's start, past any read chunk
    (tmp_path / "long.jsonl").write_bytes(b"\xef\xbb\xbf" + line * 600 + b"\xff\n")
    with pytest.raises(UserError, match=rf"long.jsonl: not UTF-8 text \(byte {3 + len(line) * 600}: "):
        read_manifest(tmp_path / "long.jsonl")


def test_shards_are_disjoint_cover_the_manifest_and_survive_appends():
    tasks = [Task(i + 1, "flip", (str(i),)) for i in range(10)]
    shards = [select_shard(tasks, i, 3) for i in range(3)]
    assert sorted(t.line for shard in shards for t in shard) == list(range(1, 11))
    assert [len(s) for s in shards] == [4, 3, 3]
    more = tasks + [Task(11 + i, "flip", (f"x{i}",)) for i in range(5)]
    for i in range(3):
        assert select_shard(more, i, 3)[: len(shards[i])] == shards[i]


def test_shard_comes_from_slurm_array_variables():
    assert shard_from_env({}) is None
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "1"}) == (4, 5)
    env = {"SLURM_ARRAY_TASK_ID": "20", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "10"}
    assert shard_from_env(env) == (2, 4)
    with pytest.raises(UserError, match="pass --shard"):
        shard_from_env({**env, "SLURM_ARRAY_TASK_ID": "25"})
    listed = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "7"}
    with pytest.raises(UserError, match="pass --shard"):  # --array=3,7: no way to tell which shard 3 is
        shard_from_env(listed)
    assert parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_gpu_placement_pins_one_gpu_per_worker(monkeypatch):
    assert plan_workers(None, []) == [{}]
    assert plan_workers(3, []) == [{}, {}, {}]
    assert plan_workers(None, ["0", "1"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [w["CUDA_VISIBLE_DEVICES"] for w in plan_workers(5, ["0", "1"])] == ["0", "1", "0", "1", "0"]
    with pytest.raises(UserError, match="--jobs 0"):
        plan_workers(0, [])
    assert parse_gpus(None, {}) == []
    monkeypatch.setattr(local, "_cuda_count", lambda: 0)  # a CPU machine without CUDA_VISIBLE_DEVICES
    for bad, message in (("7", r"GPU 7 is not visible \(this process sees 0 GPU"), ("abc", "write GPU numbers"),
                         ("-1", "write GPU numbers"), (",0", "write GPU numbers")):
        with pytest.raises(UserError, match=message):
            parse_gpus(bad, {})
    monkeypatch.setattr(local, "_cuda_count", lambda: 2)
    assert parse_gpus("0,1", {}) == ["0", "1"]
    with pytest.raises(UserError, match="write GPU numbers"):
        parse_gpus("\u00b2", {})  # "²".isdigit() is true, int("²") is not
    # numbers are the devices this process sees: Slurm's CUDA_VISIBLE_DEVICES=4,6 makes 1 mean 6
    assert parse_gpus("1", {"CUDA_VISIBLE_DEVICES": "4,6"}) == ["6"]
    assert parse_gpus("all", {"CUDA_VISIBLE_DEVICES": "4,6"}) == ["4", "6"]
    assert parse_gpus("GPU-3f1c,MIG-77a0", {}) == ["GPU-3f1c", "MIG-77a0"]
    with pytest.raises(UserError, match="not visible"):
        parse_gpus("2", {"CUDA_VISIBLE_DEVICES": "4,6"})
    with pytest.raises(UserError, match="listed twice"):
        parse_gpus("0,0", {})
    with pytest.raises(UserError, match="no GPU is visible"):
        parse_gpus("all", {"CUDA_VISIBLE_DEVICES": ""})


# ----------------------------------------------------------------------------- the CLI, in process


def test_a_network_failure_is_exit_1_with_its_own_message(tmp_path, fake_commands):
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "n.txt", "--fail", "network"))
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 1, result.output
    (record,) = one_json(result.stdout)["results"]
    assert (record["status"], record["exit_code"], record["error"]) == ("failed", 1, "n.txt: no answer from the server; run again")


def test_a_state_folder_of_the_users_is_refused_and_its_own_is_reused(tmp_path, fake_commands):
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "a.txt"))
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "00000.png").write_bytes(b"the user's")
    refused = invoke("batch", manifest, "--state", tmp_path / "frames")
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert f"{tmp_path / 'frames'}: holds files that are not a batch's records (00000.png, ...)" in refused.output
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00000.png"] and not (tmp_path / "a.txt").exists()
    (tmp_path / "notes.txt").write_text("mine")
    assert "notes.txt: is a file; pass --state a folder" in invoke("batch", manifest, "--state", tmp_path / "notes.txt").output
    assert invoke("batch", manifest, "--state", tmp_path / "state").exit_code == 0  # new: made
    again = invoke("batch", manifest, "--state", tmp_path / "state", "--resume")  # its own records and summary: reused
    assert again.exit_code == 0 and "skipped" in again.output


def test_batch_runs_every_task_records_them_and_exits_1_when_one_failed(tmp_path, fake_commands, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    manifest = jsonl(
        jobs / "tasks.jsonl",
        ("write", "-o", "out/a.txt", "--text", "A"),
        ("write", "-o", "out/b.txt", "--fail", "user"),
        ("write", "-o", "out/c.txt", "--fail", "bug"),
        ("model", "-o", "out/d.txt"),
        ("model", "-o", "out/e.txt"),
        ("sub write", "-o", "out/f.txt"),
        ("sub", "write", "-o", "out/g.txt", "--text", "G"),
    )
    monkeypatch.chdir(tmp_path)  # relative paths are read against the manifest's folder, not here
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 1, result.output
    summary = one_json(result.stdout)
    assert (summary["ok"], summary["exit_code"], summary["tasks"], summary["done"], summary["skipped"], summary["failed"]) == (False, 1, 7, 5, 0, 2)
    by_line = {r["line"]: r for r in summary["results"]}
    assert [by_line[n]["status"] for n in range(1, 8)] == ["done", "failed", "failed", "done", "done", "done", "done"]
    assert (jobs / "out" / "f.txt").read_text() == "hello" and (jobs / "out" / "g.txt").read_text() == "G"
    assert by_line[2]["exit_code"] == 2 and by_line[2]["error"] == "out/b.txt: told to fail; fix the task"
    assert by_line[3]["exit_code"] == 1 and by_line[3]["error"].startswith("RuntimeError: told to crash")
    assert (jobs / "out" / "a.txt").read_text() == "A" and not (tmp_path / "out").exists()
    assert not (jobs / "out" / "b.txt").exists()
    # one worker process ran the tasks; it loaded the model once and used it for both tasks
    assert len({r["worker"] for r in summary["results"]}) == 1 and by_line[1]["result"]["pid"] != os.getpid()
    assert by_line[4]["result"]["model"] == by_line[5]["result"]["model"] == 1
    assert by_line[5]["result"]["loads"] == 1 and by_line[5]["models_loaded"] == 1
    # each task left its record; the summary file is what was printed
    state = jobs / "tasks.jsonl.state"
    for record in summary["results"]:
        assert json.loads((state / f"{record['id']}.json").read_text())["status"] == record["status"]
    assert json.loads(Path(summary["summary"]).read_text()) == summary
    # a task's result is what the command prints when run on its own
    alone = CliRunner().invoke(batch_helpers.app, ["write", "-o", str(tmp_path / "alone.txt"), "--text", "A", "--json"])
    assert one_json(alone.stdout).keys() - {"ok"} == by_line[1]["result"].keys()


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_each_record_lists_its_own_tasks_warnings_even_when_it_failed(tmp_path, fake_commands):
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "out/a.txt", "--warn", "odd poses", "--fail", "user"),
        ("write", "-o", "out/b.txt", "--warn", "odd poses", "--fail", "bug"),
        ("write", "-o", "out/c.txt", "--warn", "odd poses"),
        ("write", "-o", "out/d.txt"),
    )
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 1, result.output
    records = {r["line"]: r for r in one_json(result.stdout)["results"]}
    assert [records[n]["status"] for n in (1, 2, 3, 4)] == ["failed", "failed", "done", "done"]
    # a failed task's result: its warnings, as the CLI's failure JSON lists them (named as the manifest names the paths)
    assert records[1]["result"] == {"warnings": ["out/a.txt: odd poses"]} and records[2]["result"] == {"warnings": ["out/b.txt: odd poses"]}
    assert records[3]["result"]["warnings"] == ["out/c.txt: odd poses"]  # one worker ran them all: no task's warning in another's
    assert "warnings" not in records[4]["result"]
    alone = CliRunner().invoke(batch_helpers.app, ["write", "-o", str(tmp_path / "alone.txt"), "--warn", "odd poses", "--fail", "user", "--json"])
    assert one_json(alone.stdout).keys() - {"ok", "error", "exit_code"} == records[1]["result"].keys()


def test_rerunning_needs_resume_then_skips_what_is_done_and_redoes_the_rest(tmp_path, fake_commands):
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "a.txt"),
        ("write", "-o", "b.txt", "--fail", "user"),
        ("write", "-o", "c.txt"),
        ("write", "-o", "d.txt"),
    )
    first = one_json(invoke("batch", manifest, "--json").stdout)
    assert (first["done"], first["failed"]) == (3, 1)
    again = invoke("batch", manifest, "--json")
    assert again.exit_code == 2 and "pass --resume" in one_json(again.stdout)["error"]
    (tmp_path / "c.txt").unlink()  # an output that went missing is made again
    cut_off = {r["line"]: r for r in first["results"]}[4]
    (tmp_path / "tasks.jsonl.state" / f"{cut_off['id']}.json").unlink()  # as if the run was killed in task 4
    (tmp_path / "d.txt").unlink()
    resumed = invoke("batch", manifest, "--resume", "--json")
    assert resumed.exit_code == 1
    summary = one_json(resumed.stdout)
    assert [r["status"] for r in summary["results"]] == ["skipped", "failed", "done", "done"]
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 1, 1)
    assert (tmp_path / "c.txt").exists() and (tmp_path / "d.txt").exists()
    # fix the failing task's input: now everything is done and the batch exits 0
    manifest.write_text(manifest.read_text().replace(', "--fail", "user"', ""))
    final = invoke("batch", manifest, "--resume")
    assert final.exit_code == 0, final.output
    assert "skipped: 3" in final.stdout and "done: 1" in final.stdout


def test_resume_finds_an_output_written_under_the_home_folder(tmp_path, fake_commands, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "~/a.txt"))
    first = one_json(invoke("batch", manifest, "--json").stdout)
    assert first["results"][0]["result"]["output"] == "~/a.txt" and (tmp_path / "home" / "a.txt").exists()
    resumed = invoke("batch", manifest, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stdout
    assert [r["status"] for r in one_json(resumed.stdout)["results"]] == ["skipped"]


def test_run_batch_reads_its_paths_as_the_command_line_does(tmp_path, monkeypatch):
    # run_batch("~/t.jsonl") said "no such manifest file", and state="~/records" made a folder named
    # `~` in the current one, while `magicanimate batch` expanded both; "" took the current folder
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    jsonl(home / "tasks.jsonl", ("write", "-o", "a.txt"))
    result = run_batch("~/tasks.jsonl", state="~/records", commands=batch_helpers.COMMANDS)
    assert result.exit_code == 0 and result.state == str(home / "records") and (home / "a.txt").exists()
    assert (home / "records").is_dir() and list(work.iterdir()) == []
    for manifest, state, said in [("", None, '"": an empty input path'), ("~/tasks.jsonl", "", '--state "": an empty output path')]:
        with pytest.raises(UserError, match=said) as caught:
            run_batch(manifest, state=state, commands=batch_helpers.COMMANDS)
        assert "\n" not in str(caught.value)
    assert list(work.iterdir()) == []


def test_a_bad_task_refuses_the_manifest_before_anything_runs(tmp_path, fake_commands):
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "a.txt"),
        ("wirte", "-o", "b.txt"),
        ("write", "-o", "c.txt", "--colour", "red"),
        ("batch", "other.jsonl"),
        ("sub", "wrte", "-o", "d.txt"),
        ("sub",),
    )
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 2
    error = one_json(result.stdout)["error"]
    assert "line 2 (wirte): unknown command 'wirte'" in error and "line 3 (write): No such option: --colour" in error
    assert "line 4 (batch): 'batch' cannot be a task" in error and "nothing was run" in error
    assert "and 2 more" in error  # the first three problems are named, the count of the others
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "a.txt").exists() and not (tmp_path / "tasks.jsonl.state").exists()
    assert invoke("batch", tmp_path / "missing.jsonl").exit_code == 2
    assert "--address is for --engine ray" in invoke("batch", manifest, "--address", "auto").stderr
    good = jsonl(tmp_path / "good.jsonl", ("write", "-o", "a.txt"))
    for gpus in ("abc", "-1"):  # once passed on to the workers as CUDA_VISIBLE_DEVICES, and run on the CPU
        result = invoke("batch", good, "--gpus", gpus)
        assert result.exit_code == 2 and f"--gpus {gpus}: write GPU numbers" in result.stderr
    assert not (tmp_path / "a.txt").exists() and not (tmp_path / "good.jsonl.state").exists()


def test_shard_from_slurm_runs_only_its_slice(tmp_path, fake_commands, monkeypatch):
    manifest = jsonl(tmp_path / "tasks.jsonl", *[("write", "-o", f"{i}.txt") for i in range(5)])
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    summary = one_json(invoke("batch", manifest, "--json").stdout)
    assert summary["shard"] == "1/2" and [r["line"] for r in summary["results"]] == [2, 4]
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["1.txt", "3.txt"]
    other = one_json(invoke("batch", manifest, "--shard", "0/2", "--json").stdout)  # no --resume needed: other tasks
    assert other["done"] == 3 and Path(other["summary"]).name == "summary-0-of-2.json"
    assert len(list(tmp_path.glob("*.txt"))) == 5


def test_no_summary_of_an_earlier_run_is_left_to_contradict_a_later_one(tmp_path, fake_commands):
    # the whole run's summary-0-of-1.json (task 1 failed) stayed beside the summaries of the shards
    # that redid task 1: summing STATE/summary-*.json still counted it as failed
    manifest = jsonl(tmp_path / "tasks.jsonl", *[("write", "-o", f"{i}.txt") for i in range(4)])
    state = tmp_path / "tasks.jsonl.state"

    def summaries() -> dict:
        return {p.name: json.loads(p.read_text()) for p in state.glob("summary-*.json")}

    (tmp_path / "1.txt").write_text("mine")
    assert one_json(invoke("batch", manifest, "--json").stdout)["failed"] == 1
    assert invoke("batch", manifest, "--json").exit_code == 2  # refused (no --resume): nothing changes
    assert list(summaries()) == ["summary-0-of-1.json"]
    (tmp_path / "1.txt").unlink()
    for shard in ("0/2", "1/2"):
        assert invoke("batch", manifest, "--shard", shard, "--resume", "--json").exit_code == 0
    assert sorted(summaries()) == ["summary-0-of-2.json", "summary-1-of-2.json"]
    assert sum(s["failed"] for s in summaries().values()) == 0 and sum(s["tasks"] for s in summaries().values()) == 4
    assert invoke("batch", manifest, "--shard", "1/4", "--resume", "--json").exit_code == 0  # task 1 only: 0/2 holds none of it
    assert sorted(summaries()) == ["summary-0-of-2.json", "summary-1-of-4.json"]


def test_ray_engine_without_ray_is_a_clear_exit_2(tmp_path, fake_commands, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "a.txt"))
    result = invoke("batch", manifest, "--engine", "ray")
    assert result.exit_code == 2 and "--engine ray needs Ray: pip install" in result.stderr
    assert not (tmp_path / "a.txt").exists()


# ----------------------------------------------------------------------------- worker processes


def test_workers_are_pinned_to_gpus_keep_their_models_and_survive_a_killed_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "_cuda_count", lambda: 2)  # two GPUs, as far as --gpus is concerned
    marker = tmp_path / "killed-once.pid"
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        *[("model", "-o", f"m{i}.txt") for i in range(4)],
        ("write", "-o", "k.txt", "--crash-once", marker.name),
        ("write", "-o", "x.txt", "--crash"),
        ("write", "-o", "u.txt", "--fail", "user"),
    )
    result = run_batch(manifest, jobs=2, gpus="0,1", commands=batch_helpers.COMMANDS)
    records = {r["line"]: r for r in result.results}
    assert (result.done, result.failed) == (5, 2)
    devices = {}
    for line in range(1, 6):
        done = records[line]["result"]
        assert done["cuda_visible_devices"] in ("0", "1")
        assert devices.setdefault(done["pid"], done["cuda_visible_devices"]) == done["cuda_visible_devices"]
    for line in range(1, 5):  # one load per worker process, reused by its later tasks
        assert records[line]["result"]["loads"] == 1
    # the killed task ran again on a fresh worker pinned to the same kind of slot, and finished
    assert records[5]["status"] == "done" and int(marker.read_text()) != records[5]["result"]["pid"]
    assert (tmp_path / "k.txt").read_text() == "hello"
    assert records[6]["status"] == "failed" and "died" in records[6]["error"] and "SIGKILL" in records[6]["error"]
    assert records[7]["exit_code"] == 2
    assert sorted(p.name for p in tmp_path.glob("m*.txt")) == ["m0.txt", "m1.txt", "m2.txt", "m3.txt"]


# ----------------------------------------------------------------------------- real animate tasks


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_a_tasks_warnings_are_in_its_records_result_as_in_its_json(tmp_path):
    from magicanimate_cli import media

    from preprocess_helpers import add_sound, make_video, with_empty_sound

    empty = with_empty_sound(add_sound(make_video(tmp_path / "dance.mp4", count=5), 0.2), tmp_path / "empty.mkv")
    manifest = jsonl(tmp_path / "tasks.jsonl", ("crop", "empty.mkv", "-o", "lost.mp4", "--size", "16"),
                     ("crop", "dance.mp4", "-o", "kept.mp4", "--size", "16"))
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 0, result.output
    records = one_json(result.stdout)["results"]
    assert [r["status"] for r in records] == ["done", "done"]
    (said,) = records[0]["result"]["warnings"]  # named as the manifest names them, not as the worker resolved them
    assert said.startswith("lost.mp4: written without the sound of empty.mkv (ffmpeg: ")
    assert "warnings" not in records[1]["result"] and media.audio_streams(tmp_path / "kept.mp4") == ["aac"]
    alone = CliRunner().invoke(app, ["crop", str(empty), "-o", str(tmp_path / "alone.mp4"), "--size", "16", "--json"])
    assert json.loads(alone.stdout).keys() - {"ok"} == records[0]["result"].keys()


@pytest.mark.slow
def test_animate_tasks_share_one_pipeline_and_match_running_animate_alone(tmp_path, tiny_weights):
    from magicanimate_cli import media

    rng = np.random.default_rng(0)
    media.write_png(tmp_path / "ref.png", rng.integers(0, 256, (80, 64, 3), dtype=np.uint8), replace=False)
    media.write_frames(tmp_path / "pose", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    common = ["--models", str(tiny_weights), "--size", "64", "--steps", "2", "--context-frames", "2", "--context-overlap", "1", "--device", "cpu"]
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("animate", "ref.png", "pose", "-o", "out1", *common),
        ("animate", "ref.png", "pose", "-o", "out2", "--seed", "7", *common),
        ("animate", "ref.png", "missing", "-o", "out3", *common),
    )
    result = invoke("batch", manifest, "--json")
    assert result.exit_code == 1, result.output
    summary = one_json(result.stdout)
    records = summary["results"]
    assert [r["status"] for r in records] == ["done", "done", "failed"]
    assert records[2]["exit_code"] == 2 and "missing" in records[2]["error"]
    assert records[0]["worker"] == records[1]["worker"] == records[2]["worker"]
    assert records[0]["models_loaded"] == records[1]["models_loaded"] == records[2]["models_loaded"] == 1
    assert records[0]["result"]["frames"] == 3 and records[1]["result"]["seed"] == 7
    assert len(records[0]["result"]["warnings"]) == 1 and "does not look like DensePose" in records[0]["result"]["warnings"][0]  # noise poses
    # the same command run on its own, from the shell (a fresh process, as a batch worker is)
    alone = subprocess.run(
        [sys.executable, "-m", "magicanimate_cli", "animate", "ref.png", "pose", "-o", "alone", *common, "--json"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert alone.returncode == 0, alone.stderr
    for name in ("00000.png", "00001.png", "00002.png"):
        assert np.array_equal(media.read_image(tmp_path / "out1" / name), media.read_image(tmp_path / "alone" / name))
    assert not np.array_equal(media.read_image(tmp_path / "out1" / "00000.png"), media.read_image(tmp_path / "out2" / "00000.png"))
    assert one_json(alone.stdout).keys() - {"ok"} == records[0]["result"].keys()


# ----------------------------------------------------------------------------- Ray


def test_an_unreachable_ray_address_is_exit_2_at_once(tmp_path, fake_commands):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest = jsonl(tmp_path / "tasks.jsonl", ("write", "-o", "a.txt"))
    result = invoke("batch", manifest, "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert result.exit_code == 2 and "nothing answers there" in result.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster on 127.0.0.1 whose workers can import batch_helpers."""
    loopback = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds and addresses 127.0.0.1 only (read at import)
    before = os.environ.get(loopback)
    os.environ[loopback] = "0"
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path, loopback: "0"}})
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop(loopback, None)
    else:
        os.environ[loopback] = before


def test_ray_runs_the_manifest_retries_a_killed_worker_and_reports_failures(tmp_path, ray_cluster):
    marker = tmp_path / "killed-once.pid"
    manifest = jsonl(
        tmp_path / "tasks.jsonl",
        ("write", "-o", "k.txt", "--crash-once", marker.name, "--sleep", "0.2"),
        *[("model", "-o", f"m{i}.txt") for i in range(4)],
        ("write", "-o", "u.txt", "--fail", "user"),
        ("write", "-o", "b.txt", "--fail", "bug"),
    )
    seen = []
    result = run_batch(manifest, engine="ray", commands=batch_helpers.COMMANDS, progress=lambda stage, done, total: seen.append(done))
    records = {r["line"]: r for r in result.results}
    assert (result.engine, result.tasks, result.done, result.failed) == ("ray", 7, 5, 2)
    assert seen == list(range(8))  # streamed back one by one
    assert records[1]["status"] == "done" and int(marker.read_text()) != records[1]["result"]["pid"]
    assert (tmp_path / "k.txt").read_text() == "hello"
    for line in range(2, 6):
        assert records[line]["status"] == "done" and records[line]["result"]["loads"] == 1
    assert len({records[line]["result"]["pid"] for line in range(2, 6)}) <= 2  # two actors at most, each loads once
    assert (records[6]["exit_code"], records[7]["exit_code"]) == (2, 1)
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["k.txt", "m0.txt", "m1.txt", "m2.txt", "m3.txt"]
    # the same state folder as the local engine: a resumed run skips everything done
    again = run_batch(manifest, engine="ray", resume=True, commands=batch_helpers.COMMANDS)
    assert (again.skipped, again.failed, again.done) == (5, 2, 0)


@pytest.mark.parametrize("output", ["../out/g.mp4", "./g.mp4", "~/g.mp4"])
def test_paths_made_from_a_tasks_paths_are_named_as_the_task_wrote_them(tmp_path, monkeypatch, output):
    # a message or result names a resolved path in any form a stage prints it (joined with "..",
    # normalised, as a Path), or one made beside it (animate's OUT_grid.mp4): all as written
    from magicanimate_cli.animate import grid_path
    from magicanimate_cli.batch.registry import COMMANDS

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = batch_tasks.TaskRunner(COMMANDS, tmp_path / "sub")
    _, params, written = runner.parse("animate", ["ref.png", "../poses", "-o", output, "--grid"])
    resolved = params["output"]
    forms = {resolved, os.path.normpath(resolved), str(Path(resolved))}
    expected = os.path.normpath(output)
    for form in forms:
        other = os.path.splitext(form)[0] + "x.mp4"  # another file whose name starts with the output's: as it is
        message = f"{grid_path(Path(form))}: kept; {form}: written; {params['motion']}/00001.png; {other} stays"
        named = batch_tasks._as_written(message, written)
        stem = os.path.splitext(expected)[0]
        assert named == f"{stem}_grid.mp4: kept; {expected}: written; ../poses/00001.png; {other} stays", form
