"""`--devices`: the windows of every step split across processes give the single-process result."""

import json
import tempfile

import numpy as np
import pytest
from conftest import wait_for
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate
from magicanimate_cli.animate.distributed import parse_devices
from magicanimate_cli.animate.pipeline import _share
from magicanimate_cli.errors import UserError


def test_windows_are_shared_in_contiguous_blocks():
    windows = [[i] for i in range(7)]
    shares = [_share(windows, r, 3) for r in range(3)]
    assert sum(shares, []) == windows and [len(s) for s in shares] == [2, 2, 3]
    assert _share(windows[:1], 0, 2) == [] and _share(windows[:1], 1, 2) == windows[:1]  # more processes than windows


def test_device_lists():
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    with pytest.raises(UserError):
        parse_devices("0,0")
    with pytest.raises(UserError):
        parse_devices("gpu1")


def test_devices_are_checked_with_the_other_options_before_any_work(tmp_path, tiny_weights, rng):
    import torch

    from magicanimate_cli.animate import check_animate

    with pytest.raises(UserError, match=r"--devices cuda:x: expected GPU indices like 0,1,2 \(or cuda:0,cuda:1; cpu,cpu to test on CPU\)"):
        parse_devices("cuda:x")
    assert parse_devices("cuda") == ["cuda:0"] and parse_devices("cuda:1,2") == ["cuda:1", "cuda:2"]
    if torch.cuda.is_available():
        return
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "poses", rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="--devices cuda:0: no CUDA device"):  # not after reading the whole motion
        check_animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / "out.mp4", models=tiny_weights, devices="0")


@pytest.fixture
def threads(request):
    """This process's torch thread count for the test, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(request.param or before)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize(("schedule", "threads", "omp"), [("loop", None, "1"), ("open", 1, None)], indirect=["threads"])
def test_two_gloo_processes_reproduce_one_process_bitwise(tmp_path, tiny_weights, rng, schedule, threads, omp, monkeypatch):
    # the device processes compute with this process's thread count, whatever an API caller set
    # (torch.set_num_threads) or a library left in the environment (importing paddle, for the
    # matting, sets OMP_NUM_THREADS=1): parallel sums add up in an order that depends on it
    if omp:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    motion = tmp_path / "poses"
    media.write_frames(motion, rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8))  # 32 padded, 3 windows
    common = {"models": tiny_weights, "size": 64, "steps": 2, "seed": 3, "device": "cpu", "context_schedule": schedule}
    single = animate(reference, motion, tmp_path / "one", **common)
    split = animate(reference, motion, tmp_path / "two", devices="cpu,cpu", **{**common, "device": "auto"})
    assert split.device == "cpu,cpu" and single.frames == split.frames == 30
    a = media.read_frames(tmp_path / "one").array
    b = media.read_frames(tmp_path / "two").array
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_sigterm_to_the_command_alone_stops_its_device_processes(tmp_path, tiny_weights, rng):
    # `kill PID` or `docker stop` reach the command, not its device processes: they stop too,
    # and nothing is written but what resumes the run
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "poses", rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8))
    out = tmp_path / "out.mp4"
    checkpoint = tmp_path / ".out.mp4.animate-resume.safetensors"
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "magicanimate_cli", "animate", str(tmp_path / "ref.png"), str(tmp_path / "poses"), "-o", str(out),
               "--models", str(tiny_weights), "--size", "64", "--steps", "40", "--devices", "cpu,cpu", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        wait_for(lambda: checkpoint.exists() or process.poll() is not None, 300, "the first step's checkpoint")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    assert json.loads(stdout)["error"] == "interrupted"
    time.sleep(2)  # a device process left running would go on to write the output
    assert not out.exists() and checkpoint.exists()


@pytest.mark.slow
def test_the_device_processes_meet_through_a_file_not_a_tcp_port_another_program_could_take(tmp_path, tiny_weights, rng, monkeypatch):
    # a port picked free, then bound by rank 0, could be taken meanwhile (another run, any server):
    # the processes meet through a store file in a private temporary folder, seen here while they
    # run and gone after
    import threading

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "poses", rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(p.relative_to(tmp_path / "tmp").parts[-1] for p in (tmp_path / "tmp").glob("magicanimate-devices-*/*"))
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / "out", models=tiny_weights, size=64, steps=1,
                         devices="cpu,cpu")
    finally:
        done.set()
        watcher.join()
    assert result.frames == 16 and len(list((tmp_path / "out").glob("*.png"))) == 16
    assert seen == {"store"}  # the meeting place: a file
    assert not list((tmp_path / "tmp").iterdir())  # gone after the run


@pytest.mark.slow
def test_every_device_process_gets_every_reference(tmp_path, tiny_weights, rng):
    # --extra-reference with --devices: each process attends over all the references, so the
    # frames are those of the single-process run with them (and not those of REF alone)
    reference, back = tmp_path / "ref.png", tmp_path / "back.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(back)
    motion = tmp_path / "poses"
    media.write_frames(motion, rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8))  # 32 padded, 3 windows
    common = {"models": tiny_weights, "size": 64, "steps": 2, "seed": 3, "device": "cpu"}
    animate(reference, motion, tmp_path / "one", extra_references=[back], **common)
    split_common = {**common, "device": "auto"}  # each process on its --devices entry
    animate(reference, motion, tmp_path / "two", extra_references=[back], devices="cpu,cpu", **split_common)
    animate(reference, motion, tmp_path / "alone", devices="cpu,cpu", **split_common)
    split = media.read_frames(tmp_path / "two").array
    assert np.array_equal(split, media.read_frames(tmp_path / "one").array)
    assert not np.array_equal(split, media.read_frames(tmp_path / "alone").array)
