"""``magicanimate serve`` and ``--server``: tasks run in a process that keeps its models loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import __version__, server
from magicanimate_cli.cli import app
from magicanimate_cli.errors import InputWarning, UserError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
runner = CliRunner()


def start(socket_path: Path, code: str | None = None, cwd: Path | None = None, command: list[str] | None = None,
          env: dict | None = None, umask: int = -1) -> subprocess.Popen:
    """A server process on ``socket_path`` (the CLI's ``serve --json``, ``code`` run with the socket
    path as ``sys.argv[1]``, or ``command``), once its socket exists; ``env`` on top of this
    process's environment (None: unset)."""
    if command is None:
        command = [sys.executable, "-m", "magicanimate_cli", "serve", "--socket", str(socket_path), "--json"]
    if code is not None:
        command = [sys.executable, "-c", code, str(socket_path)]
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    env = {name: value for name, value in env.items() if value is not None and name != "MAGICANIMATE_SERVER"}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=umask)
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not start: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> dict:
    """SIGTERM the server; its one JSON summary (what ``serve`` returns)."""
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("MAGICANIMATE_SERVER", "MAGICANIMATE_MODELS")}
    environment = {name: value for name, value in {**environment, **(env or {})}.items() if value is not None}  # None: unset
    return subprocess.run([sys.executable, "-m", "magicanimate_cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=environment)


HELPERS_SERVER = (
    "import json, sys\n"
    "import batch_helpers\n"
    "from magicanimate_cli.server import serve\n"
    "print(json.dumps(serve(sys.argv[1], commands=batch_helpers.REGISTRY).to_dict()), flush=True)\n"
)
"""A server of the batch tests' fake commands (``write``, ``model``; ``batch_helpers.py``)."""


# ----------------------------------------------------------------------------- the animator


@pytest.mark.slow
def test_animate_through_a_server_equals_a_local_run_and_loads_the_models_once(tmp_path, tiny_weights):
    from magicanimate_cli import media

    rng = np.random.default_rng(0)
    media.write_png(tmp_path / "ref.png", rng.integers(0, 256, (80, 64, 3), dtype=np.uint8), replace=False)
    media.write_frames(tmp_path / "pose", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    common = ["--size", "64", "--steps", "2", "--context-frames", "2", "--context-overlap", "1", "--device", "cpu"]
    sock = tmp_path / "run" / "serve.sock"
    proc = start(sock, cwd=REPO)  # another folder than the clients'
    try:
        first = cli("--server", sock, "animate", "ref.png", "pose", "-o", "out1", "--models", tiny_weights, *common, "--json", cwd=tmp_path)
        # the weights folder from the client's environment, the server option from it too
        second = cli("animate", "ref.png", "pose", "-o", "out2", *common, cwd=tmp_path,
                     env={"MAGICANIMATE_SERVER": str(sock), "MAGICANIMATE_MODELS": str(tiny_weights)})
        missing = cli("--server", sock, "animate", "ref.png", "nowhere.mp4", "-o", "out3", "--models", tiny_weights, *common, cwd=tmp_path)
    finally:
        summary = stop(proc)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {**json.loads(first.stdout), "ok": True, "output": "out1", "frames": 3}
    assert second.returncode == 0, second.stderr
    assert "output: out2" in second.stdout
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: nowhere.mp4") and len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr
    assert summary == {**summary, "socket": str(sock), "tasks": 3, "failed": 1, "models_loaded": 1}
    assert "warnings" not in summary  # the tasks' warnings went to their clients, not into the server's own result
    assert not sock.exists()  # removed when the server stopped

    alone = cli("animate", "ref.png", "pose", "-o", "alone", "--models", tiny_weights, *common, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    # the noise poses' InputWarning reaches each client as the local run prints it (the second one too)
    warned = [[line for line in run.stderr.splitlines() if line.startswith("warning:")] for run in (alone, first, second)]
    assert warned[0] == warned[1] == warned[2] and len(warned[0]) == 1 and "pose: does not look like DensePose" in warned[0][0]
    assert json.loads(first.stdout)["warnings"] == [warned[1][0].removeprefix("warning: ")]  # listed once: the server's and the client's
    for name in ("00000.png", "00001.png", "00002.png"):
        expected = media.read_image(tmp_path / "alone" / name)
        assert np.array_equal(media.read_image(tmp_path / "out1" / name), expected)
        assert np.array_equal(media.read_image(tmp_path / "out2" / name), expected)


@pytest.mark.slow
def test_preload_makes_the_first_animate_warm(tmp_path, tiny_weights):
    from magicanimate_cli import media

    rng = np.random.default_rng(1)
    media.write_png(tmp_path / "ref.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), replace=False)
    media.write_frames(tmp_path / "pose", rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    sock = tmp_path / "s.sock"
    command = [sys.executable, "-m", "magicanimate_cli", "serve", "--socket", str(sock), "--preload", "--models", str(tiny_weights),
               "--device", "cpu", "--json"]
    proc = start(sock, code=None, cwd=REPO, command=command)
    try:
        first = server.submit("animate", ["ref.png", "pose", "-o", "out", "--models", str(tiny_weights), "--device", "cpu",
                                          "--size", "64", "--steps", "1", "--context-frames", "2", "--context-overlap", "1"],
                              socket=sock, cwd=tmp_path)
    finally:
        summary = stop(proc)
    assert first.exit_code == 0 and first.result["frames"] == 2
    assert first.models_loaded == 1 and summary["models_loaded"] == 1  # loaded before the command, not again


def test_preload_of_broken_weights_is_one_line_exit_2_and_leaves_no_socket(tmp_path):
    sock = tmp_path / "s.sock"
    empty = tmp_path / "weights"
    empty.mkdir()
    result = cli("serve", "--socket", sock, "--preload", "--models", empty, cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {empty}") and "magicanimate models download" in result.stderr
    assert not sock.exists()


def test_a_command_prints_the_same_summary_through_a_server(tmp_path, tiny_weights):
    (tmp_path / "weights").symlink_to(tiny_weights, target_is_directory=True)
    sock = tmp_path / "s.sock"
    proc = start(sock)
    try:
        served = cli("--server", sock, "models", "list", "--models", "weights", cwd=tmp_path)
        served_json = cli("--server", sock, "models", "list", "--models", "weights", "--json", cwd=tmp_path)
    finally:
        stop(proc)
    local = cli("models", "list", "--models", "weights", cwd=tmp_path)
    local_json = cli("models", "list", "--models", "weights", "--json", cwd=tmp_path)
    assert served.returncode == local.returncode and served.stdout == local.stdout, served.stderr
    assert "models: weights" in served.stdout and "unverified" in served.stdout
    assert json.loads(served_json.stdout) == json.loads(local_json.stdout)


# ----------------------------------------------------------------------------- the server's rules


def test_models_stay_loaded_per_key_and_a_failed_check_keeps_the_loaded_one(tmp_path):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        results = [server.submit("model", ["-o", f"{i}.txt", "--name", name], socket=sock, cwd=tmp_path)
                   for i, name in enumerate(["a", "a"])]
        with pytest.raises(UserError, match="^broken: a model that fails its check"):
            server.submit("model", ["-o", "2.txt", "--name", "broken"], socket=sock, cwd=tmp_path)
        results.append(server.submit("model", ["-o", "3.txt", "--name", "a"], socket=sock, cwd=tmp_path))
        results.append(server.submit("model", ["-o", "4.txt", "--name", "b"], socket=sock, cwd=tmp_path))
    finally:
        summary = stop(proc)
    assert [r.result["model"] for r in results] == [1, 1, 1, 2]  # "a" loaded once, kept through "broken"
    assert [r.models_loaded for r in results] == [1, 1, 1, 2]
    assert [r.result["output"] for r in results] == ["0.txt", "1.txt", "3.txt", "4.txt"]  # as the client wrote them
    assert (tmp_path / "3.txt").read_text() == "a" and not (tmp_path / "2.txt").exists()
    assert summary == {**summary, "tasks": 5, "failed": 1, "models_loaded": 2}


def test_progress_reaches_the_client_and_a_client_that_leaves_stops_its_task(tmp_path):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        seen = []
        done = server.submit("write", ["-o", "whole.txt", "--sleep", "0.2"], socket=sock, cwd=tmp_path,
                             progress=lambda *report: seen.append(report))
        with socket.socket(socket.AF_UNIX) as conn:  # a client that leaves after the first report
            conn.connect(str(sock))
            request = {"protocol": server.PROTOCOL, "command": "write", "args": ["-o", "left.txt", "--sleep", "3"], "cwd": str(tmp_path)}
            conn.sendall(json.dumps(request).encode() + b"\n")
            with conn.makefile("rb") as replies:  # (an open reader would keep the connection open)
                assert [json.loads(replies.readline()) for _ in range(2)] == [{"started": True}, {"progress": ["write", 0, 10]}]
        after = server.submit("write", ["-o", "after.txt"], socket=sock, cwd=tmp_path)
    finally:
        summary = stop(proc)
    assert seen == [("write", tick, 10) for tick in range(10)]
    assert done.result["output"] == "whole.txt" and after.result["output"] == "after.txt"
    assert not (tmp_path / "left.txt").exists()  # stopped at its second report, before writing
    assert summary == {**summary, "tasks": 3, "failed": 1}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"not json\n", "the request is not JSON"),
        (b'{"protocol": 99, "command": "write", "args": [], "cwd": "/"}\n', "another protocol"),
        (b'{"protocol": 1, "command": "write", "args": "-o x", "cwd": "/"}\n', "a list of string arguments"),
        (b'{"protocol": 1, "command": "batch", "args": [], "cwd": "/"}\n', "'batch' does not run on a server"),
        (b'{"protocol": 1, "command": "write", "args": ["-o", "x"], "cwd": "relative"}\n', "is not a folder this server can see"),
        (b'{"protocol": 1, "command": "write", "args": ["-o", "x"], "cwd": "/", "env": {"PATH": "/x"}}\n', "may only name MAGICANIMATE_MODELS"),
        (b'{"protocol": 1, "command": "write", "args": ["-o", "x"], "cwd": "/", "process_env": {"PATH": "/x"}}\n',
         "process environment may only name CUDA_VISIBLE_DEVICES"),
        (b'{"protocol": 1, "command": "write", "args": ["-o", "x"], "cwd": "/", "version": "0.0.1"}\n',
         "this server runs magicanimate " + __version__ + ", the client 0.0.1: a server keeps the code it started with; restart it"),
        (b"[" * 100_000 + b"\n", "the request is not JSON"),  # deeper than the parser's recursion
        (b"x" * (server.MAX_REQUEST_BYTES + 10), "not one line of at most 1 MiB"),
    ],
)
def test_a_malformed_request_is_refused_with_exit_2_and_the_server_goes_on(tmp_path, line, expected):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock))
            conn.sendall(line)
            record = json.loads(conn.makefile("rb").readline())["record"]
        after = server.submit("write", ["-o", "after.txt"], socket=sock, cwd=tmp_path)
    finally:
        stop(proc)
    assert record["exit_code"] == 2 and expected in record["error"]
    assert after.exit_code == 0 and (tmp_path / "after.txt").read_text() == "hello"


def test_a_client_that_sends_nothing_does_not_hold_the_server(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", 0.3)
    sock = tmp_path / "s.sock"
    records = []
    with socket.socket(socket.AF_UNIX) as silent, socket.socket(socket.AF_UNIX) as after:
        serving = threading.Thread(target=server.serve, args=(sock,), kwargs={"idle_timeout": 3, "on_task": records.append})
        serving.start()
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        silent.connect(str(sock))  # connects, never writes
        after.connect(str(sock))
        after.sendall(json.dumps({"protocol": server.PROTOCOL, "command": "flip", "args": ["nowhere", "-o", "x"], "cwd": str(tmp_path)}).encode() + b"\n")
        with after.makefile("rb") as replies:
            reply = next(m["record"] for m in map(json.loads, replies) if "record" in m)
        serving.join(30)
    assert not serving.is_alive()
    assert records[0]["error"] == "no request within 0.3 s; use the magicanimate client (--server)"
    assert reply["exit_code"] == 2 and reply["error"] == "nowhere: no such clip folder"


def test_a_task_failure_on_the_server_is_the_clis_exit_code(tmp_path):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        with pytest.raises(UserError, match=r"^x.txt: told to fail; fix the task$"):
            server.submit("write", ["-o", "x.txt", "--fail", "user"], socket=sock, cwd=tmp_path)
        with pytest.raises(Exception, match="RuntimeError: told to crash") as bug:
            server.submit("write", ["-o", "y.txt", "--fail", "bug"], socket=sock, cwd=tmp_path)
        with pytest.raises(Exception, match="RuntimeError: told to crash") as debugged:  # --debug --server
            server.submit("write", ["-o", "y.txt", "--fail", "bug"], socket=sock, cwd=tmp_path, debug=True)
        with pytest.raises(UserError, match="^.sub. has no subcommand .nothing. \\(commands: write\\)$"):
            server.submit("sub", ["nothing"], socket=sock, cwd=tmp_path)
        with pytest.warns(InputWarning, match="^z.txt: odd poses$"), pytest.raises(Exception, match="RuntimeError: told to crash") as warned:
            server.submit("write", ["-o", "z.txt", "--warn", "odd poses", "--fail", "bug"], socket=sock, cwd=tmp_path)
    finally:
        stop(proc)
    assert type(warned.value).__name__ == "StageFailed"  # its record's result holds only the warning: still a failure, not a result
    assert type(bug.value).__name__ == "StageFailed" and bug.value.traceback is None  # the CLI's exit 1
    trace = debugged.value.traceback  # the server's, which `--debug` prints
    assert trace.startswith("Traceback (most recent call last):") and 'raise RuntimeError("told to crash")' in trace
    assert trace.rstrip().endswith("RuntimeError: told to crash")


@pytest.mark.parametrize("debug", [False, True])
def test_debug_through_a_server_prints_the_servers_traceback(tmp_path, monkeypatch, debug):
    from magicanimate_cli.errors import StageFailed

    asked = []

    def submit(command, args, *, socket, progress, debug, on_say):
        asked.append(debug)
        failed = StageFailed("RuntimeError: told to crash")
        failed.traceback = "Traceback (most recent call last):\n  File \"on the server\"\nRuntimeError: told to crash\n" if debug else None
        raise failed

    monkeypatch.setattr(server, "submit", submit)
    words = ["--server", str(tmp_path / "s.sock"), "flip", "clip", "-o", "out"] + (["--debug"] if debug else [])
    result = runner.invoke(app, words, env={"MAGICANIMATE_SERVER": None})
    assert result.exit_code == 1 and asked == [debug]
    assert result.output.endswith("error: RuntimeError: told to crash\n")
    assert ('File "on the server"' in result.output) == debug


def test_a_client_that_left_while_queued_gets_no_task_run(tmp_path):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        first = threading.Thread(target=server.submit, args=("write", ["-o", "first.txt", "--sleep", "1.5"]),
                                 kwargs={"socket": sock, "cwd": tmp_path})
        first.start()
        time.sleep(0.5)  # the first task runs; the next client waits its turn, then leaves
        with socket.socket(socket.AF_UNIX) as queued:
            queued.connect(str(sock))
            queued.sendall(json.dumps({"protocol": server.PROTOCOL, "command": "write", "args": ["-o", "queued.txt"],
                                       "cwd": str(tmp_path)}).encode() + b"\n")
        first.join(30)
        after = server.submit("write", ["-o", "after.txt"], socket=sock, cwd=tmp_path)
    finally:
        summary = stop(proc)
    assert (tmp_path / "first.txt").exists() and after.exit_code == 0
    assert not (tmp_path / "queued.txt").exists()
    assert summary == {**summary, "tasks": 2, "failed": 0}


def test_a_server_that_dies_mid_task_is_a_one_line_failure(tmp_path):
    from magicanimate_cli.errors import StageFailed

    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        with pytest.raises(StageFailed, match=r"the server stopped before the task ended \(see the server's output\)$"):
            server.submit("write", ["-o", "x.txt", "--sleep", "5"], socket=sock, cwd=tmp_path,
                          progress=lambda stage, done, total: proc.kill())
    finally:
        proc.kill()
        proc.communicate()


def test_the_clients_folder_is_the_current_folder_of_its_task(tmp_path):
    from magicanimate_cli import media

    media.write_frames(tmp_path / "clip.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    sock = tmp_path / "run" / "s.sock"
    proc = start(sock, cwd=REPO)
    try:
        refused = cli("--server", sock, "frames", "../clip.mp4", "-o", ".", "--overwrite", cwd=victim)
        done = cli("--server", sock, "frames", "../clip.mp4", "-o", "frames", cwd=victim)
        # paths with ../ come back as typed, as a local run prints them
        served = {name: cli("--server", sock, "frames", f"../{name}.mp4", "-o", "../up", "--json", cwd=victim) for name in ("clip", "none")}
    finally:
        stop(proc)
    assert refused.returncode == 2 and refused.stderr.strip() == "error: .: is the current folder or holds it; choose a new output path"
    assert (victim / "precious.txt").read_text() == "mine"
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (victim / "frames").iterdir()) == ["00000.png", "00001.png"]
    assert json.loads(served["clip"].stdout)["output"] == "../up" and (tmp_path / "up" / "00001.png").exists()
    local = cli("frames", "../none.mp4", "-o", "../up", "--json", cwd=victim)
    assert served["none"].returncode == local.returncode == 2 and served["none"].stdout == local.stdout
    assert json.loads(local.stdout)["error"].startswith("../none.mp4: ")


def test_a_task_creates_its_files_with_the_clients_umask(tmp_path):
    sock = tmp_path / "s.sock"
    proc = start(sock, HELPERS_SERVER, umask=0o022)
    mask = os.umask(0o077)  # a client that keeps its files private
    try:
        private = server.submit("write", ["-o", "private.txt"], socket=sock, cwd=tmp_path)
        os.umask(0o002)  # a group-shared project folder
        shared = server.submit("write", ["-o", "shared.txt"], socket=sock, cwd=tmp_path)
        os.umask(mask)
        with socket.socket(socket.AF_UNIX) as conn:  # a client that does not say its umask (an older one): the server's
            conn.connect(str(sock))
            conn.sendall(json.dumps({"protocol": server.PROTOCOL, "command": "write", "args": ["-o", "unsaid.txt"],
                                     "cwd": str(tmp_path)}).encode() + b"\n")
            assert json.loads(conn.makefile("rb").readlines()[-1])["record"]["exit_code"] == 0
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock))
            conn.sendall(json.dumps({"protocol": server.PROTOCOL, "command": "write", "args": ["-o", "odd.txt"],
                                     "cwd": str(tmp_path), "umask": 0o1000}).encode() + b"\n")
            refused = json.loads(conn.makefile("rb").readlines()[-1])["record"]
    finally:
        os.umask(mask)
        stop(proc)
    assert private.exit_code == 0 and shared.exit_code == 0
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "unsaid.txt").stat().st_mode) == 0o644
    assert refused["exit_code"] == 2 and refused["error"] == "the request's umask must be a number from 0 to 0o777"
    assert not (tmp_path / "odd.txt").exists()


def test_models_download_says_its_plan_through_a_server_as_a_local_run_does(tmp_path):
    sock = tmp_path / "s.sock"
    offline = {"HF_HUB_OFFLINE": "1"}  # the plan's sizes from the pinned manifest: no network
    proc = start(sock, env=offline)
    words = ["models", "download", "--dry-run", "--only", "matting", "--models", "weights"]
    try:
        served = cli("--server", sock, *words, cwd=tmp_path, env=offline)
        served_json = cli("--server", sock, *words, "--json", cwd=tmp_path, env=offline)
    finally:
        stop(proc)
    local = cli(*words, cwd=tmp_path, env=offline)
    local_json = cli(*words, "--json", cwd=tmp_path, env=offline)
    assert served.returncode == local.returncode == 0, served.stderr
    assert "1 file(s) to download" in local.stderr and "model.pdparams" in local.stderr
    assert served.stderr == local.stderr  # the plan, before the result
    assert served_json.returncode == local_json.returncode == 0
    assert served_json.stderr == local_json.stderr == ""  # --json: no plan on stderr, one object on stdout
    assert json.loads(served_json.stdout)["plan"] == json.loads(local_json.stdout)["plan"]


def test_preprocess_json_through_a_server_names_its_paths_as_a_local_run_does(tmp_path):
    # preprocess prints its paths resolved (a local run's); through a server they were the typed ones
    from magicanimate_cli import media

    work = tmp_path / "work"
    media.write_frames(work / "sub" / "clip.mp4", np.zeros((3, 32, 24, 3), np.uint8))
    (work / "list.txt").write_text("sub/clip.mp4\n")
    command = ["preprocess", "clip.mp4", "../list.txt", "-o", "../out", "--skip", "densepose,matte", "--size", "16", "--json"]
    models = {"MAGICANIMATE_MODELS": "../nomodels"}  # a relative weights folder, named as typed
    sock = tmp_path / "run" / "s.sock"
    proc = start(sock, cwd=REPO)
    try:
        served = cli("--server", sock, *command, cwd=work / "sub")
        served_doctor = cli("--server", sock, "doctor", "--json", cwd=work / "sub", env=models)
    finally:
        stop(proc)
    shutil.rmtree(work / "out")
    local = cli(*command, cwd=work / "sub")
    local_doctor = cli("doctor", "--json", cwd=work / "sub", env=models)
    assert served.returncode == local.returncode == 0, served.stderr + local.stderr
    served_json, local_json = (json.loads(run.stdout) for run in (served, local))
    assert local_json["output"] == str(work / "out") and local_json["clips"][0]["source"] == str(work / "sub" / "clip.mp4")
    assert {**served_json, "seconds": None} == {**local_json, "seconds": None}
    assert served_doctor.returncode == local_doctor.returncode == 1
    error = json.loads(local_doctor.stdout)["error"]
    assert " ../nomodels, " in error and json.loads(served_doctor.stdout)["error"] == error


def test_a_client_whose_process_wide_settings_are_not_the_servers_is_refused_in_one_line(tmp_path):
    # HF_HUB_OFFLINE, the threads, the GPUs: read once by the server's process, so a client's other value was ignored
    started = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
    sock = tmp_path / "run" / "s.sock"
    command = ["models", "download", "--dry-run", "--models", "m", "--json"]
    proc = start(sock, cwd=REPO, env=started)
    try:
        same = cli("--server", sock, *command, cwd=tmp_path, env={**started, "CUDA_VISIBLE_DEVICES": None})  # unset: the server's GPUs
        online = cli("--server", sock, *command[:-1], cwd=tmp_path, env={**started, "HF_HUB_OFFLINE": "0"})
        plain = cli("--server", sock, *command, cwd=tmp_path, env=dict.fromkeys(started))  # a plain shell: the server's
        other = cli("--server", sock, *command, cwd=tmp_path, env={**started, "CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "4"})
    finally:
        summary = stop(proc)
    local = cli(*command, cwd=tmp_path, env=started)
    assert same.returncode == local.returncode == 0, same.stderr
    assert {**json.loads(same.stdout), "seconds": None} == {**json.loads(local.stdout), "seconds": None}
    assert json.loads(same.stdout)["offline"] is True
    assert online.returncode == 2 and online.stdout == "" and "Traceback" not in online.stderr
    assert online.stderr == ("error: HF_HUB_OFFLINE is 0 here but 1 in the server: a server reads it once, when it starts; "
                             "restart it as `HF_HUB_OFFLINE=0 magicanimate serve ...`, or run the command without --server\n")
    assert plain.returncode == 0 and json.loads(plain.stdout)["offline"] is True, plain.stderr
    assert other.returncode == 2 and json.loads(other.stdout)["error"] == (
        "CUDA_VISIBLE_DEVICES is 0 here but '' in the server, OMP_NUM_THREADS is 4 here but 2 in the server: a server reads them "
        "once, when it starts; restart it as `CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4 magicanimate serve ...`, or run the "
        "command without --server")
    assert summary == {**summary, "tasks": 4, "failed": 2}


def test_a_clients_hugging_face_token_holds_for_its_task(monkeypatch):
    from huggingface_hub.utils import get_token

    monkeypatch.setenv("HF_TOKEN", "the-servers")
    with server._environment({"HF_TOKEN": "the-clients"}):
        assert get_token() == "the-clients"
    assert get_token() == "the-servers"


def test_a_result_that_failed_in_part_says_why_through_a_server(tmp_path):
    # `doctor` finds a problem: a result with exit code 1 and one line saying what failed
    sock = tmp_path / "s.sock"
    proc = start(sock, cwd=REPO)
    try:
        served = [cli("--server", sock, "doctor", "--models", "none", *json_flag, cwd=tmp_path) for json_flag in ([], ["--json"])]
    finally:
        stop(proc)
    local = [cli("doctor", "--models", "none", *json_flag, cwd=tmp_path) for json_flag in ([], ["--json"])]
    assert [r.returncode for r in served] == [r.returncode for r in local] == [1, 1]
    error = json.loads(local[1].stdout)["error"]
    assert error.startswith("animate cannot run here") and json.loads(served[1].stdout)["error"] == error
    assert served[0].stderr.strip().splitlines()[-1] == local[0].stderr.strip().splitlines()[-1] == f"error: {error}"


def test_serve_refuses_a_live_socket_and_any_other_file_and_replaces_a_stale_socket(tmp_path):
    live = tmp_path / "live.sock"
    proc = start(live, HELPERS_SERVER)
    try:
        with pytest.raises(UserError, match="a magicanimate server is already listening there"):
            server.serve(live, idle_timeout=0.1)
    finally:
        stop(proc)

    regular = tmp_path / "notes.txt"
    regular.write_text("mine")
    with pytest.raises(UserError, match="exists and is not a socket; choose another --socket"):
        server.serve(regular, idle_timeout=0.1)
    assert regular.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.sock.lock", "notes.txt"]  # "nothing was changed": no notes.txt.lock

    stale = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))  # bound and closed without unlinking: what a killed server leaves
    left.close()
    result = server.serve(stale, idle_timeout=0.1)
    assert (result.tasks, result.models_loaded) == (0, 0) and not stale.exists()



SIGTERM_ONCE_LISTENING = (
    "import json, os, signal, sys, time\n"
    "from magicanimate_cli import server\n"
    "real_listen = server._listen\n"
    "def listening(path):\n"
    "    listener = real_listen(path)\n"
    "    os.kill(os.getpid(), signal.SIGTERM)  # as soon as the socket exists, before anything else\n"
    "    time.sleep(30)\n"
    "    return listener\n"
    "server._listen = listening\n"
    "print(json.dumps(server.serve(sys.argv[1]).to_dict()), flush=True)\n"
)


def test_a_sigterm_as_soon_as_the_socket_exists_stops_the_server_cleanly(tmp_path):
    # a client (or a test) may SIGTERM the server the moment its socket appears
    sock = tmp_path / "s.sock"
    proc = subprocess.run([sys.executable, "-c", SIGTERM_ONCE_LISTENING, str(sock)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["tasks"] == 0
    assert not sock.exists()
    result = server.serve(sock, idle_timeout=0.1)  # and its lock was let go
    assert result.tasks == 0


def test_the_socket_file_appears_only_once_it_takes_connections(tmp_path, monkeypatch):
    # clients (and scripts) wait for the file, then connect: a bound socket refuses until listen()
    sock = tmp_path / "s.sock"
    real_listen = socket.socket.listen

    def slow_listen(self, *args):
        time.sleep(1.0)  # a loaded machine between bind() and listen()
        return real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "listen", slow_listen)
    outcome = {}

    def client():
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        with socket.socket(socket.AF_UNIX) as conn:
            try:
                conn.connect(str(sock))
                outcome["connected"] = True
            except OSError as exc:
                outcome["connected"] = exc

    waiter = threading.Thread(target=client)
    waiter.start()
    listener = server._listen(sock)
    waiter.join(timeout=60)
    try:
        assert outcome.get("connected") is True, outcome
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sock"]  # the hidden name it bound first is gone
    finally:
        listener.close()

def test_the_socket_is_private_to_its_user(tmp_path):
    sock = tmp_path / "private" / "deeper" / "s.sock"
    proc = start(sock, HELPERS_SERVER)
    try:
        assert oct(sock.stat().st_mode & 0o777) == oct(0o600)
        assert oct(sock.parent.stat().st_mode & 0o777) == oct(0o700)
    finally:
        stop(proc)

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UserError, match="others could replace a socket in this folder"):
        server.serve(shared / "s.sock", idle_timeout=0.1)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UserError, match="is not a folder \\(a link or a file\\)"):
        server.serve(tmp_path / "link" / "s.sock", idle_timeout=0.1)
    assert list(shared.iterdir()) == [] and list((tmp_path / "real").iterdir()) == []
    for preload in (True, False):  # said before any folder or lock is made, with --preload or without
        with pytest.raises(UserError, match="--device tpu: choose one of"):
            server.serve(tmp_path / "new" / "s.sock", preload=preload, device="tpu", idle_timeout=0.1)
        with pytest.raises(UserError, match="--dtype float8: choose one of"):
            server.serve(tmp_path / "new" / "s.sock", preload=preload, dtype="float8", idle_timeout=0.1)
    assert not (tmp_path / "new").exists()


def test_default_socket_is_in_a_folder_of_the_users_own(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert server.default_socket() == tmp_path / "magicanimate" / "serve.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert server.default_socket().parent.name == f"magicanimate-{os.getuid()}"


def test_socket_paths_are_read_as_typed_home_folder_and_empty_path(tmp_path, monkeypatch):
    # serve(socket="") listened on the default socket and `serve --socket ""` failed with a ValueError
    # (exit 1); submit(socket="") and `--server ""` said ".: is a folder, not a magicanimate server's socket"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MAGICANIMATE_SERVER", raising=False)
    ready = []
    server.serve("~/s.sock", idle_timeout=0.1, on_ready=ready.append)
    assert ready == [str(tmp_path / "s.sock")]
    proc = start(tmp_path / "s.sock", HELPERS_SERVER)
    try:
        assert server.submit("write", ["-o", "a.txt"], socket="~/s.sock", cwd=tmp_path).result["output"] == "a.txt"
    finally:
        stop(proc)
    for call, option in [(lambda: server.serve("", idle_timeout=0.1), "--socket"), (lambda: server.submit("write", [], socket=""), "--server")]:
        with pytest.raises(UserError, match=f'^{option} "": an empty socket path') as caught:
            call()
        assert "\n" not in str(caught.value)
    for args in (["serve", "--socket", "", "--idle-timeout", "0.1"], ["--server", "", "flip", "clip", "-o", "out"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: --") and len(result.output.strip().splitlines()) == 1


def test_idle_timeout_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="--idle-timeout 0: must be a number of seconds above 0, at most"):
        server.serve(tmp_path / "s.sock", idle_timeout=0)


# ----------------------------------------------------------------------------- the client in the CLI


def test_no_server_listening_is_a_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["--server", str(tmp_path / "none.sock"), "flip", "clip", "-o", "out"], env={"MAGICANIMATE_SERVER": None})
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {tmp_path / 'none.sock'}: no magicanimate server is listening there")
    assert "start one with `magicanimate serve --socket" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_server_path_that_is_no_socket_says_what_it_is_and_where_the_socket_is(tmp_path, kind):
    target = tmp_path / "here"
    target.mkdir() if kind == "folder" else target.write_text("notes")
    result = runner.invoke(app, ["--server", str(target), "flip", "clip", "-o", "out"], env={"MAGICANIMATE_SERVER": None})
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {target}: is a {kind}, not a magicanimate server's socket;")
    assert f"(its default: {server.default_socket()})" in result.output and "serve --socket" not in result.output


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("animate", ["ref.png", "poses.mp4", "-o", "out.mp4"], True),
        ("models", ["download", "--only", "animate"], True),
        ("animate", ["--help"], False),
        ("animate", ["ref.png", "--", "--help"], True),  # after --, an argument
        ("models", [], False),  # a group without its command: the local CLI shows its help
        ("batch", ["tasks.jsonl"], False),
        ("demo", [], False),
        ("serve", [], False),
        (None, [], False),
    ],
)
def test_what_goes_to_a_server(command, args, expected):
    assert server.forwardable(command, args) is expected


def test_json_is_an_option_only_before_a_double_dash():
    assert server.wants_json(["a", "--json"]) and not server.wants_json(["a", "--", "--json"])


def test_help_and_local_commands_stay_local_with_a_server_set(tmp_path):
    env = {"MAGICANIMATE_SERVER": str(tmp_path / "none.sock")}
    shown = runner.invoke(app, ["animate", "--help"], env=env)
    assert shown.exit_code == 0 and "REF" in shown.output
    served = runner.invoke(app, ["serve", "--socket", str(tmp_path / "bad" / "x.sock"), "--idle-timeout", "-1"], env=env)
    assert served.exit_code == 2 and "--idle-timeout -1.0: must be a number of seconds above 0" in served.output


def test_a_task_line_of_the_server_log():
    record = {"command": "animate", "args": ["ref.png", "my poses.mp4", "-o", "out.mp4"], "exit_code": 2, "seconds": 0.01, "error": "my poses.mp4: missing"}
    assert server.describe_task(record) == "animate ref.png my poses.mp4 -o out.mp4: exit 2 in 0.01 s (my poses.mp4: missing)"


def test_a_usage_error_through_a_server_is_the_direct_runs_line_and_exit_2(tmp_path):
    # the server's own check of the arguments (batch/registry.py) words them apart from click
    sock = tmp_path / "s.sock"
    proc = start(sock)
    try:
        for args in (["crop", "a.png", "-o", "b.png", "--size", "abc", "--json"], ["crop", "a.png", "-o", "b.png", "--bogus"],
                     ["crop", "a.png", "b.png", "-o", "c.png"], ["models", "list", "--bogus"]):
            direct = cli(*args, cwd=tmp_path)
            served = cli("--server", sock, *args, cwd=tmp_path)
            assert direct.returncode == 2 and direct.stderr.count("\n") == 1, direct.stderr
            assert (served.returncode, served.stdout, served.stderr) == (2, direct.stdout, direct.stderr)
    finally:
        records = stop(proc)
    assert records["tasks"] == 0  # refused in the client: nothing was sent
