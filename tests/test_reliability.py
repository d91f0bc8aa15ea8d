"""Issue 12's promises, command by command: no input destroyed, no debris after kill -9, cut-off
videos refused, every bad input one line and exit 2. (animate's own cases: tests/animate/test_animate.py;
the atomic-write helper: tests/test_files.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app

from preprocess_helpers import make_video, write_clip

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


# ----------------------------------------------------------------------------- 1. outputs never touch inputs


def _cases(tmp_path: Path):
    clip = tmp_path / "clip"
    write_clip(clip, count=2)
    video = make_video(tmp_path / "v.mp4", count=4)
    frames = tmp_path / "frames"
    media.write_frames(frames, np.zeros((2, 16, 16, 3), np.uint8))
    return [
        ["flip", str(clip), "-o", str(clip / "images")],  # flip CLIP -o CLIP/images --overwrite
        ["flip", str(clip), "-o", str(clip)],
        ["flip", str(clip), "-o", str(tmp_path)],
        ["flip", str(clip), "-o", str(clip / "new")],
        ["crop", str(clip), "-o", str(clip / "masks")],
        ["crop", str(frames), "-o", str(frames / "00000.png")],
        ["crop", str(frames), "-o", str(frames / "sub")],
        ["crop", str(video), "-o", str(video)],
        ["frames", str(video), "-o", str(tmp_path)],
        ["frames", str(frames / "00000.png"), "-o", str(frames)],
    ]


def test_no_command_writes_an_output_that_is_inside_or_holds_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    for args in _cases(tmp_path):
        before = _tree(tmp_path)
        result = runner.invoke(app, [*args, "--overwrite"])
        assert result.exit_code == 2, (args, result.output)
        assert _tree(tmp_path) == before, args


@pytest.mark.parametrize("output_of", [lambda v: v.parent / v.stem, lambda v: v.parent])
def test_preprocess_never_replaces_a_folder_that_holds_its_input(tmp_path, output_of, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    holder = tmp_path / "out" / "talk"
    holder.mkdir(parents=True)
    video = make_video(holder / "talk.mp4", count=3)  # preprocess OUT/talk/talk.mp4 -o OUT would replace OUT/talk
    before = _tree(tmp_path)
    result = runner.invoke(app, ["preprocess", str(video), "-o", str(tmp_path / "out"), "--skip", "densepose,matte", "--overwrite"])
    assert result.exit_code == 2 and "input" in result.output
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------- 2. kill -9 leaves no debris for good


def _kill_when(cmd: list[str], ready, timeout: float = 120.0) -> None:
    process = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, "finished before it could be killed; make the input longer"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the job and its ffmpeg, as a scheduler's kill does
    finally:
        process.wait()


@pytest.mark.parametrize("command", ["frames", "preprocess"])
def test_kill_9_during_decode_leaves_nothing_the_next_run_does_not_clean(tmp_path, command):
    video = make_video(tmp_path / "talk.mp4", count=600, width=320, height=240, moving=True)
    out = tmp_path / "out"
    if command == "frames":
        cmd = [sys.executable, "-m", "magicanimate_cli", "frames", str(video), "-o", str(out)]
        partial_parent, name = tmp_path, ".out."
    else:
        cmd = [sys.executable, "-m", "magicanimate_cli", "preprocess", str(video), "-o", str(out), "--skip", "densepose,matte"]
        partial_parent, name = out / "talk", ".images."

    def partial_has_frames():
        if not partial_parent.is_dir():
            return False
        return any(p.name.startswith(name) and p.is_dir() and any(p.iterdir()) for p in partial_parent.iterdir())

    _kill_when(cmd, partial_has_frames)
    assert [p for p in partial_parent.iterdir() if p.name.startswith(name) and p.name.endswith(".partial")]  # the debris
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not [p for p in partial_parent.iterdir() if p.name.startswith(name)], "the next run cleans up"


# ----------------------------------------------------------------------------- 6. cut-off videos


@pytest.fixture()
def half_mp4(tmp_path, rng):
    full = tmp_path / "full.mp4"
    media.write_frames(full, rng.integers(0, 256, (28, 64, 64, 3), dtype=np.uint8), fps=10)
    data = full.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])  # faststart: the header still promises 28 frames
    return half


def test_frames_refuses_a_truncated_video_unless_allowed(tmp_path, half_mp4):
    result = runner.invoke(app, ["frames", str(half_mp4), "-o", str(tmp_path / "f"), "--fps", "10"])
    assert result.exit_code == 2 and "half.mp4: truncated or damaged video" in result.output and "--allow-truncated" in result.output
    assert not (tmp_path / "f").exists() and _hidden(tmp_path) == []
    result = runner.invoke(app, ["frames", str(half_mp4), "-o", str(tmp_path / "f"), "--fps", "10", "--allow-truncated"])
    assert result.exit_code == 0
    assert 0 < len(media.list_frame_files(tmp_path / "f")) < 28


def test_crop_refuses_a_truncated_video_unless_allowed(tmp_path, half_mp4):
    result = runner.invoke(app, ["crop", str(half_mp4), "-o", str(tmp_path / "c.mp4"), "--size", "32"])
    assert result.exit_code == 2 and "half.mp4: truncated or damaged video" in result.output
    assert "crop, frames, matte and preprocess take --allow-truncated" in result.output and "`magicanimate frames --allow-truncated`" in result.output
    assert not (tmp_path / "c.mp4").exists() and _hidden(tmp_path) == []
    result = runner.invoke(app, ["crop", str(half_mp4), "-o", str(tmp_path / "c.mp4"), "--size", "32", "--fov", "32x32", "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert 0 < media.probe(tmp_path / "c.mp4").frames < 28


def test_preprocess_does_not_report_a_truncated_video_done(tmp_path, half_mp4):
    args = ["preprocess", str(half_mp4), "-o", str(tmp_path / "out"), "--skip", "densepose,matte", "--fps", "10", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "half.mp4: truncated or damaged video" in result.output
    result = runner.invoke(app, [*args, "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert 0 < len(media.list_frame_files(tmp_path / "out" / "half" / "images")) < 28


def test_reading_a_truncated_video_stops_with_its_name(half_mp4):
    with pytest.raises(media.UserError, match="half.mp4: truncated"):
        list(media.iter_frames(half_mp4))
    assert 0 < len(list(media.iter_frames(half_mp4, allow_truncated=True))) < 28
    full = half_mp4.with_name("full.mp4")
    assert len(list(media.iter_frames(full))) == 28  # a whole video passes


# ----------------------------------------------------------------------------- smaller problems


def test_a_decompression_bomb_is_exit_2_in_one_line(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10 000 pixels: over twice the limit, as a real bomb is
    result = runner.invoke(app, ["crop", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "out.png"), "--size", "16"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "bomb.png: image too large" in result.output


def test_a_path_with_a_newline_does_not_split_the_message(tmp_path):
    strange = tmp_path / "a\nb.mp4"
    result = runner.invoke(app, ["frames", str(strange), "-o", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "a\\nb.mp4" in result.output


def test_flip_refuses_subfolders_of_different_lengths_and_foreign_labels(tmp_path):
    clip = tmp_path / "clip"
    write_clip(clip, count=3)
    (clip / "masks" / "00002.png").unlink()
    result = runner.invoke(app, ["flip", str(clip), "-o", str(tmp_path / "flipped")])
    assert result.exit_code == 2 and "different numbers of frames" in result.output and "masks/ 2" in result.output
    other = tmp_path / "other"
    write_clip(other, count=2)
    labels = np.asarray(Image.open(other / "densepose_labels" / "00001.png")).copy()
    labels[0, 0] = 30
    Image.fromarray(labels).save(other / "densepose_labels" / "00001.png")
    result = runner.invoke(app, ["flip", str(other), "-o", str(tmp_path / "flipped")])
    assert result.exit_code == 2 and "00001.png: holds the value 30" in result.output
    assert not (tmp_path / "flipped").exists() and _hidden(tmp_path) == []


def test_offline_download_leaves_no_empty_folders(tmp_path):
    pytest.importorskip("yt_dlp")
    target = tmp_path / "new" / "videos"
    result = runner.invoke(app, ["download", "http://127.0.0.1:9/talk.mp4", "-o", str(target), "--retries", "0", "--json"])
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []
