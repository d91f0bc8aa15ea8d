"""The DensePose stage (``stage.py``) and its command: everything around the estimator runs for real
with ``FakeEstimator``, which returns what detectron2 returns (float XYWH boxes, scores,
coarse/fine segmentation logits per box)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.densepose import (
    PALETTE,
    DensePoseConfig,
    densepose,
    densepose_status,
    labels_from_render,
)
from magicanimate_cli.densepose import estimator as est
from magicanimate_cli.densepose.repair import window
from magicanimate_cli.errors import UserError

from densepose_helpers import PLAN, FakeEstimator, H, W, brute_majority, frames_folder, oracle_frame, person, read_png

# ----------------------------------------------------------------------------- the stage


def test_frames_folder_renders_exactly_in_batches(tmp_path):
    names = frames_folder(tmp_path / "in", 5)
    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=fake)
    assert fake.batches == [2, 2, 1] and fake.seen == [0, 1, 2, 3, 4]
    assert result.frames == 5 and result.missing_frames == ["0003.png"] and result.missing == 1 and result.filled == 0
    assert result.model == "fake" and result.batch_size == 2 and result.resumed == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # the input's file names
    for index, name in enumerate(names):
        kept = PLAN[index][:1]  # default max_people 1 and min_score 0.8
        want = oracle_frame(kept)
        rgb = read_png(tmp_path / "out" / name)
        assert rgb.shape == (H, W, 3)
        assert np.array_equal(rgb, PALETTE[want])
        with Image.open(tmp_path / "labels" / name) as image:
            assert image.mode == "L"
            assert np.array_equal(np.asarray(image), want)
    assert np.array_equal(read_png(tmp_path / "out" / names[2]), np.broadcast_to(PALETTE[0], (H, W, 3)))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work folder or partials left


def test_max_people_zero_keeps_everyone_above_min_score(tmp_path):
    frames_folder(tmp_path / "in", 5)
    densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", max_people=0, min_score=0.4, estimator=FakeEstimator(PLAN))
    assert np.array_equal(read_png(tmp_path / "labels" / "0002.png"), oracle_frame(PLAN[1]))
    assert np.array_equal(read_png(tmp_path / "labels" / "0004.png"), oracle_frame(PLAN[3]))


def test_video_in_folder_and_video_out(tmp_path):
    rng = np.random.default_rng(4)
    media.write_frames(tmp_path / "in.mp4", rng.integers(0, 255, (4, H, W, 3), dtype=np.uint8), fps=10)
    plan = {0: [person(7, (4, 4, 40, 36))], 1: [person(20, (10, 2, 50, 44))], 2: [person(7, (4, 4, 40, 36))], 3: [person(14, (0, 0, 64, 48))]}
    result = densepose(tmp_path / "in.mp4", tmp_path / "out", estimator=FakeEstimator(plan, by_order=True), batch_size=3)
    assert result.fps == 10 and result.frames == 4 and result.labels is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [media.frame_name(i) for i in range(4)]
    for i in range(4):
        assert np.array_equal(read_png(tmp_path / "out" / media.frame_name(i)), PALETTE[oracle_frame(plan[i])])

    result = densepose(tmp_path / "in.mp4", tmp_path / "out.mp4", estimator=FakeEstimator(plan, by_order=True))
    video = media.read_frames(tmp_path / "out.mp4")
    assert video.array.shape == (4, H, W, 3) and video.fps == 10
    for i in range(4):  # h264 moves colours a little: snap back and compare
        agree = (labels_from_render(video.array[i], nearest=True) == oracle_frame(plan[i])).mean()
        assert agree > 0.9  # (edges of small parts blur; a wrong frame would agree on a few %)


def test_every_frame_of_a_joined_clip_gets_a_pose(tmp_path):
    # 1 s at 20 fps then 1 s at 10 fps joined without re-encoding (30 frames stored): the stage
    # reads it re-timed to the header's rate, as the other stages do, and estimated only the first 30
    import subprocess

    for name, rate in (("a", 20), ("b", 10)):
        subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={rate}:duration=1",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / f"{name}.mp4")], check=True)
    (tmp_path / "list.txt").write_text("file a.mp4\nfile b.mp4\n")
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "concat", "-i", str(tmp_path / "list.txt"), "-c", "copy",
                    str(tmp_path / "joined.mkv")], check=True)
    read = sum(1 for _ in media.iter_frames(tmp_path / "joined.mkv"))
    plan = {i: [person(7, (4, 4, 40, 36))] for i in range(100)}
    result = densepose(tmp_path / "joined.mkv", tmp_path / "poses", estimator=FakeEstimator(plan, by_order=True))
    assert result.frames == read == len(media.list_frame_files(tmp_path / "poses")) > 30


def test_a_video_keeps_its_sound_in_the_poses_video(tmp_path):
    from preprocess_helpers import add_sound, assert_keeps_sound

    media.write_frames(tmp_path / "dance.mp4", np.random.default_rng(4).integers(0, 255, (4, H, W, 3), dtype=np.uint8), fps=10)
    add_sound(tmp_path / "dance.mp4", 1.0, rising=True)  # longer than the 4 frames
    plan = {i: [person(7, (4, 4, 40, 36))] for i in range(4)}
    densepose(tmp_path / "dance.mp4", tmp_path / "poses.mp4", labels=tmp_path / "labels", estimator=FakeEstimator(plan, by_order=True))
    assert_keeps_sound(tmp_path / "poses.mp4", tmp_path / "dance.mp4", 0.4)  # so `animate --audio poses.mp4` has the music
    assert media.read_frames(tmp_path / "poses.mp4").array.shape == (4, H, W, 3)
    densepose(tmp_path / "dance.mp4", tmp_path / "frames", estimator=FakeEstimator(plan, by_order=True))  # frames: no sound to keep
    assert len(media.list_frame_files(tmp_path / "frames")) == 4


def test_a_clip_folder_gives_a_poses_video_the_sound_of_the_video_it_was_made_from(tmp_path):
    from magicanimate_cli.clip import write_meta

    from preprocess_helpers import add_sound, assert_keeps_sound

    clip = tmp_path / "clip"
    frames_folder(clip / "images", 5)
    write_meta(clip, {"fps": 10, "source": {"path": str(tmp_path / "dance.mp4"), "kind": "video"}})
    densepose(clip, tmp_path / "gone.mp4", labels=tmp_path / "labels1", estimator=FakeEstimator(PLAN))  # the video is not there: no sound, no error
    assert media.audio_streams(tmp_path / "gone.mp4") == []
    add_sound(media.write_frames(tmp_path / "dance.mp4", np.zeros((5, H, W, 3), np.uint8), fps=10), 1.0, rising=True)
    densepose(clip, tmp_path / "poses.mp4", labels=tmp_path / "labels2", estimator=FakeEstimator(PLAN))
    assert_keeps_sound(tmp_path / "poses.mp4", tmp_path / "dance.mp4", 0.5)


def test_clip_folder_writes_densepose_and_labels_beside_images(tmp_path):
    clip = tmp_path / "clip"
    names = frames_folder(clip / "images", 5)
    (clip / "meta.json").write_text('{"fps": 30}')
    result = densepose(clip, estimator=FakeEstimator(PLAN))
    assert result.output == str(clip / "densepose") and result.labels == str(clip / "densepose_labels")
    assert sorted(p.name for p in (clip / "densepose").iterdir()) == names
    assert sorted(p.name for p in (clip / "densepose_labels").iterdir()) == names
    assert (clip / "meta.json").read_text() == '{"fps": 30}'
    assert np.array_equal(read_png(clip / "densepose" / "0001.png"), PALETTE[oracle_frame(PLAN[0])])

    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        densepose(clip, estimator=fake)
    assert fake.batches == []  # refused before any work
    densepose(clip, estimator=fake, overwrite=True, labels=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "0005.png").is_file()


def test_a_clip_folders_other_parts_are_never_written_over(tmp_path, monkeypatch):
    # `densepose CLIP -o CLIP/masks --overwrite` replaced the clip's masks with DensePose renderings
    from magicanimate_cli.cli import app

    clip = tmp_path / "clip"
    frames_folder(clip / "images", 5)
    masks = frames_folder(clip / "masks", 5)
    (clip / "meta.json").write_text('{"fps": 30}')
    before = {name: (clip / "masks" / name).read_bytes() for name in masks}
    for options in ({"output": clip / "masks"}, {"labels": clip / "masks"}, {"output": clip / "meta.json"}, {"labels": clip / "masks" / "sub"}):
        fake = FakeEstimator(PLAN)
        with pytest.raises(UserError, match="is the input|lies inside the input"):
            densepose(clip, **options, overwrite=True, estimator=fake)
        assert fake.batches == []
    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(PLAN))
    refused = CliRunner().invoke(app, ["densepose", str(clip), "-o", str(clip / "masks"), "--overwrite"])
    assert refused.exit_code == 2 and "masks: is the input" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert {name: (clip / "masks" / name).read_bytes() for name in masks} == before
    assert (clip / "meta.json").read_text() == '{"fps": 30}'

    densepose(clip, estimator=FakeEstimator(PLAN))  # its own parts: written, and replaced with --overwrite
    densepose(clip, clip / "densepose", labels=clip / "densepose_labels", overwrite=True, estimator=FakeEstimator(PLAN))
    assert sorted(p.name for p in (clip / "densepose_labels").iterdir()) == masks


def test_fill_missing_takes_the_nearest_good_frame(tmp_path):
    frames_folder(tmp_path / "in", 6)
    plan = {0: [person(3, (0, 0, 20, 20))], 3: [person(10, (30, 10, 20, 20))], 4: [person(22, (5, 5, 50, 40))]}
    result = densepose(tmp_path / "in", tmp_path / "raw", labels=tmp_path / "raw_labels", estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png", "0003.png", "0006.png"] and result.filled == 0
    assert not read_png(tmp_path / "raw_labels" / "0002.png").any()

    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", fill_missing=True, estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png", "0003.png", "0006.png"] and result.filled == 3
    for frame, source in enumerate([0, 0, 3, 3, 4, 4]):
        want = oracle_frame(plan[source])
        assert np.array_equal(read_png(tmp_path / "labels" / f"{frame + 1:04d}.png"), want)
        assert np.array_equal(read_png(tmp_path / "out" / f"{frame + 1:04d}.png"), PALETTE[want])


def test_smooth_takes_the_per_pixel_majority(tmp_path):
    frames_folder(tmp_path / "in", 5)
    box = (8, 8, 40, 32)
    sequence = [7, 7, 8, 7, 9]
    plan = {i: [person(label, box)] for i, label in enumerate(sequence)}
    densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", smooth=3, estimator=FakeEstimator(plan))
    raw = [oracle_frame(plan[i]) for i in range(5)]
    for i in range(5):
        span = window(i, 5, 3)
        want = brute_majority([raw[j] for j in span], i - span.start)
        got = read_png(tmp_path / "labels" / f"{i + 1:04d}.png")
        assert np.array_equal(got, want)
        assert np.array_equal(read_png(tmp_path / "out" / f"{i + 1:04d}.png"), PALETTE[got])
    # the flicker in frame 2 is gone, the tie at the end keeps the frame's own label
    assert got[20, 20] == 9 and read_png(tmp_path / "labels" / "0003.png")[20, 20] == raw[1][20, 20]
    assert (read_png(tmp_path / "labels" / "0003.png") != raw[2]).any()


def test_an_interrupted_run_resumes_at_the_first_frame_without_labels(tmp_path):
    frames_folder(tmp_path / "in", 5)
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=2))
    assert not (tmp_path / "out").exists() and not (tmp_path / "labels").exists()
    work = tmp_path / ".out.densepose-work"
    assert sorted(p.name for p in work.glob("*.png")) == ["0001.png", "0002.png"]

    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=fake)
    assert fake.seen == [2, 3, 4] and result.resumed == 2 and result.missing_frames == ["0003.png"]
    for index in range(5):
        assert np.array_equal(read_png(tmp_path / "labels" / f"{index + 1:04d}.png"), oracle_frame(PLAN[index][:1]))
    assert not work.exists()

    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "again", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=2))
    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "again", batch_size=2, min_score=0.3, estimator=fake)  # other settings: start over
    assert fake.seen == [0, 1, 2, 3, 4] and result.resumed == 0


KILLED_AT_THE_THIRD_BATCH = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from densepose_helpers import PLAN, FakeEstimator
from magicanimate_cli.densepose import densepose


class Killed(FakeEstimator):
    def __call__(self, frames):
        if len(self.batches) == 2:  # two batches recorded: the process dies as under kill -9
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(frames)


densepose(sys.argv[2], sys.argv[3], labels=sys.argv[4], batch_size=2, estimator=Killed(PLAN))
"""


@pytest.mark.parametrize("damage", ["none", "torn record", "torn state"])
def test_a_run_killed_with_kill_9_resumes_to_the_frames_of_an_uninterrupted_run(tmp_path, damage):
    """A real ``kill -9``: nothing of the run's cleanup happens. A record line cut off by the kill
    is read up to the last whole line (those frames resume); a cut-off state file starts afresh."""
    import os
    import subprocess
    from pathlib import Path

    frames_folder(tmp_path / "in", 5)
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_THIRD_BATCH, str(Path(__file__).parent), str(tmp_path / "in"),
                             str(tmp_path / "out"), str(tmp_path / "labels")], capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    work = tmp_path / ".out.densepose-work"
    assert not (tmp_path / "out").exists() and len((work / "frames.jsonl").read_text().splitlines()) == 4
    if damage == "torn record":
        with open(work / "frames.jsonl", "r+") as handle:
            handle.truncate(os.path.getsize(work / "frames.jsonl") - 3)  # the fourth record, cut short
    elif damage == "torn state":
        (work / "state.json").write_text((work / "state.json").read_text()[:10])

    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=fake)
    resumed = {"none": 4, "torn record": 3, "torn state": 0}[damage]
    assert result.resumed == resumed and fake.seen == list(range(resumed, 5))
    frames_folder(tmp_path / "again", 5)
    densepose(tmp_path / "again", tmp_path / "clean", labels=tmp_path / "clean_labels", batch_size=2, estimator=FakeEstimator(PLAN))
    for name in sorted(os.listdir(tmp_path / "clean")):
        assert np.array_equal(read_png(tmp_path / "out" / name), read_png(tmp_path / "clean" / name))
        assert np.array_equal(read_png(tmp_path / "labels" / name), read_png(tmp_path / "clean_labels" / name))
    assert not work.exists()


def test_a_torn_record_is_cut_off_so_the_next_runs_records_count_after_a_second_kill(tmp_path):
    # the resumed run appended its records to the torn line, which made them unreadable: every
    # later interruption resumed at the torn record again, whatever had been done since
    import os

    frames_folder(tmp_path / "in", 5)
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=3))
    records = tmp_path / ".out.densepose-work" / "frames.jsonl"
    with open(records, "r+") as handle:
        handle.truncate(os.path.getsize(records) - 3)  # the fourth record, cut short by a kill
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=1, estimator=FakeEstimator(PLAN, fail_on_call=2))  # redoes frame 4
    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", batch_size=1, estimator=fake)
    assert result.resumed == 4 and fake.seen == [4]
    for index in range(5):
        assert np.array_equal(read_png(tmp_path / "out" / f"{index + 1:04d}.png"), PALETTE[oracle_frame(PLAN[index][:1])])


def test_poses_that_fail_to_encode_leave_no_labels_and_the_run_resumes(tmp_path, monkeypatch):
    """The poses and their labels are committed together: an encode that fails (a full disk, a
    broken ffmpeg) left densepose_labels/ without densepose/, and the re-run was refused."""
    clip = tmp_path / "clip"
    frames_folder(clip / "images", 5)
    real = media.ffmpeg_binary()
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\ncat > /dev/null\necho 'No space left on device' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(media.writer, "ffmpeg_binary", lambda: str(broken))
    with pytest.raises(UserError, match="poses.mp4"):
        densepose(clip, clip / "poses.mp4", estimator=FakeEstimator(PLAN))
    assert sorted(p.name for p in clip.iterdir() if not p.name.startswith(".")) == ["images"]  # no labels without poses

    monkeypatch.setattr(media.writer, "ffmpeg_binary", lambda: real)
    fake = FakeEstimator(PLAN)
    result = densepose(clip, clip / "poses.mp4", estimator=fake)  # no --overwrite needed: nothing was written
    assert result.resumed == 5 and fake.batches == []
    assert sorted(p.name for p in (clip / "densepose_labels").iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png", "0005.png"]
    assert media.probe(clip / "poses.mp4").frames == 5


def test_a_second_run_of_the_same_output_is_refused_and_leaves_the_first_ones_work(tmp_path):
    from magicanimate_cli import files

    frames_folder(tmp_path / "in", 5)
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=2))
    work = tmp_path / ".out.densepose-work"
    with files.claim(tmp_path / "out"):  # the first run, going again
        with pytest.raises(UserError, match="out: another run is writing it now"):  # other settings would delete its work
            densepose(tmp_path / "in", tmp_path / "out", batch_size=2, min_score=0.3, estimator=FakeEstimator(PLAN))
        assert sorted(p.name for p in work.glob("*.png")) == ["0001.png", "0002.png"]
    fake = FakeEstimator(PLAN)
    assert densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=fake).resumed == 2 and fake.seen == [2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_loaded_estimator_resumes_only_the_work_of_the_model_it_holds(tmp_path):
    # a batch worker hands `densepose` the estimator it loaded for the task's --config/--weights;
    # its ``key`` (``model_key`` of those options) decides what an interrupted run may resume
    from magicanimate_cli.densepose.estimator import model_key

    frames_folder(tmp_path / "in", 5)
    mine, other = tmp_path / "mine.pkl", tmp_path / "other.pkl"

    def estimator(weights, **kwargs):
        fake = FakeEstimator(PLAN, **kwargs)
        fake.key = model_key(None, weights)[1]
        return fake

    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=estimator(mine, fail_on_call=2))
    fake = estimator(other)
    assert densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=fake).resumed == 0 and fake.seen == [0, 1, 2, 3, 4]
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "again", batch_size=2, estimator=estimator(mine, fail_on_call=2))
    fake = estimator(mine)
    assert densepose(tmp_path / "in", tmp_path / "again", batch_size=2, estimator=fake).resumed == 2 and fake.seen == [2, 3, 4]


def test_a_detection_without_part_pixels_counts_as_missing(tmp_path):
    frames_folder(tmp_path / "in", 2)
    plan = {0: [person(5, (0, 0, 30, 30))], 1: [person(5, (0, 0, 30, 30), hole="all")]}
    result = densepose(tmp_path / "in", tmp_path / "out", fill_missing=True, estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png"] and result.filled == 1
    assert np.array_equal(read_png(tmp_path / "out" / "0002.png"), read_png(tmp_path / "out" / "0001.png"))


def test_no_person_anywhere_is_an_error(tmp_path):
    frames_folder(tmp_path / "in", 3)
    with pytest.raises(UserError, match="found no person in any of its 3 frames.*--min-score"):
        densepose(tmp_path / "in", tmp_path / "out", estimator=FakeEstimator({}))
    assert list(tmp_path.iterdir()) == [tmp_path / "in"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"smooth": 4}, "--smooth 4"),
        ({"smooth": -1}, "--smooth -1"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"min_score": 1.5}, "--min-score 1.5"),
        ({"max_people": -1}, "--max-people -1"),
        ({"device": "gpu"}, "--device gpu: choose one of auto, cuda, cpu \\(or cuda:N\\)"),  # cuda:N as for animate
        ({"device": "cuda:x"}, "--device cuda:x"),
        ({"output": "x.png"}, "not an image file"),
        ({"labels": "labels.mp4"}, "--labels is a folder"),
        ({"labels": "in"}, "used twice"),
        ({"config": "R_999"}, "unknown model"),
        ({"config": "missing.yaml"}, "no such config file"),
    ],
)
def test_bad_options_are_one_line_user_errors(tmp_path, monkeypatch, kwargs, message):
    frames_folder(tmp_path / "in", 2)
    monkeypatch.chdir(tmp_path)
    args = {"output": "out", "estimator": FakeEstimator(PLAN), **kwargs}
    if "config" in kwargs:
        args.pop("estimator")
    with pytest.raises(UserError, match=message) as info:
        densepose("in", **args)
    assert "\n" not in str(info.value)


def test_a_numbered_gpu_is_a_device_as_for_animate(tmp_path, monkeypatch):
    frames_folder(tmp_path / "in", 2)
    monkeypatch.chdir(tmp_path)  # (the device goes to the estimator; this one is given, so unused)
    assert densepose("in", output="out", device="cuda:1", estimator=FakeEstimator(PLAN)).frames == 2


def test_bad_inputs(tmp_path):
    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match="no such file or folder"):
        densepose(tmp_path / "nothing", tmp_path / "out", estimator=fake)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a video, a frames folder or a clip folder"):
        densepose(tmp_path / "notes.txt", tmp_path / "out", estimator=fake)
    media.write_frames(tmp_path / "in.mp4", np.zeros((2, H, W, 3), np.uint8))
    with pytest.raises(UserError, match="pass -o OUTPUT"):
        densepose(tmp_path / "in.mp4", estimator=fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image frames"):
        densepose(tmp_path / "empty", tmp_path / "out", estimator=fake)


@pytest.mark.parametrize("output, labels", [("out", "out/labels"), ("both/poses", "both"), ("poses.mp4", "poses.mp4/labels")])
def test_labels_and_output_one_inside_the_other_are_refused_before_any_work(tmp_path, output, labels):
    # -o out --labels out/labels committed the labels into out/ first, then failed on out/ (a
    # traceback, or "appeared while this run was writing it"), and every later run was refused
    frames_folder(tmp_path / "in", 5)
    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match="--labels and -o .* lie one inside the other"):
        densepose(tmp_path / "in", tmp_path / output, labels=tmp_path / labels, estimator=fake)
    assert fake.batches == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_default_config_values_are_documented():
    config = DensePoseConfig()
    assert (config.batch_size, config.min_score, config.max_people, config.smooth, config.fill_missing) == (4, 0.8, 1, 0, False)
    for name in ("min_score", "max_people", "batch_size"):
        assert name in DensePoseConfig.__doc__


# ----------------------------------------------------------------------------- nearly empty results, fps, names, noise

SPARSE = {0: [person(5, (0, 0, 30, 30))], 3: [person(9, (10, 10, 30, 30))]}  # a person in 2 of 5 frames


def test_too_few_detected_frames_fail_naming_the_clip_and_the_fix(tmp_path):
    from magicanimate_cli.errors import StageFailed

    frames_folder(tmp_path / "in", 5)
    with pytest.raises(StageFailed) as info:
        densepose(tmp_path / "in", tmp_path / "out", estimator=FakeEstimator(SPARSE))
    message = str(info.value)
    assert not isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(f"{tmp_path / 'in'}: DensePose found a person in only 2 of 5 frames (40%, below --min-detected 0.5)")
    assert "--min-score" in message and "--fill-missing" in message
    assert not (tmp_path / "out").exists()
    assert (tmp_path / ".out.densepose-work").is_dir()  # the labels are kept for the re-run

    fake = FakeEstimator(SPARSE)  # accepting the gaps: resumes from the kept labels, runs no frame again
    result = densepose(tmp_path / "in", tmp_path / "out", fill_missing=True, estimator=fake)
    assert fake.seen == [] and result.resumed == 5 and result.filled == 3 and result.min_detected == 0.5
    result = densepose(tmp_path / "in", tmp_path / "low", min_detected=0.4, estimator=FakeEstimator(SPARSE))
    assert result.missing == 3 and result.filled == 0  # 2 of 5 is not below 0.4
    with pytest.raises(UserError, match="--min-detected 1.5"):
        densepose(tmp_path / "in", tmp_path / "bad", min_detected=1.5, estimator=FakeEstimator(SPARSE))


def test_cli_too_few_detected_frames_exit_1_in_one_line(tmp_path, monkeypatch):
    from magicanimate_cli.cli import app

    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(SPARSE))
    frames_folder(tmp_path / "in", 5)
    result = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["exit_code"] == 1 and "only 2 of 5 frames" in payload["error"]
    assert result.stderr.strip().splitlines() == [f"error: {payload['error']}"]  # no class name, no traceback hint
    ok = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--min-detected", "0.4", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["missing_frames"] == ["0002.png", "0003.png", "0005.png"]


def test_fps_of_a_clip_folder_comes_from_its_meta_json(tmp_path):
    clip = tmp_path / "clip"
    frames_folder(clip / "images", 5)
    (clip / "meta.json").write_text('{"fps": 10.0}')
    result = densepose(clip, tmp_path / "dp.mp4", estimator=FakeEstimator(PLAN))
    assert result.fps == 10.0 and media.probe(tmp_path / "dp.mp4").fps == 10.0
    result = densepose(clip / "images", tmp_path / "dp12", fps=12, estimator=FakeEstimator(PLAN))
    assert result.fps == 12.0
    result = densepose(clip / "images", tmp_path / "dp25", estimator=FakeEstimator(PLAN))
    assert result.fps == 25.0  # a bare frames folder: the default
    media.write_frames(tmp_path / "in.mp4", np.zeros((2, H, W, 3), np.uint8), fps=10)
    for bad, message in ((12, "read at its own 10 fps"), (0, "--fps 0"), (float("nan"), "--fps nan")):
        with pytest.raises(UserError, match=message):
            densepose(tmp_path / "in.mp4" if bad == 12 else clip, tmp_path / "x", fps=bad, estimator=FakeEstimator(PLAN))


def test_result_names_the_weights_and_their_digest(tmp_path):
    class Loaded(FakeEstimator):  # what load_estimator() returns carries these two
        weights, weights_sha256 = tmp_path / "model.pkl", "ab" * 32

    frames_folder(tmp_path / "in", 5)
    result = densepose(tmp_path / "in", tmp_path / "out", estimator=Loaded(PLAN))
    assert result.weights == str(tmp_path / "model.pkl") and result.weights_sha256 == "ab" * 32
    result = densepose(tmp_path / "in", tmp_path / "out2", estimator=FakeEstimator(PLAN))
    assert result.weights is None and result.weights_sha256 is None


def test_library_noise_stays_off_stderr_unless_debug(capfd):
    """detectron2's checkpointer INFO lines and the torch warnings it triggers, with a root handler
    at INFO (as a user's logging.basicConfig or another library sets up), are held back; with the
    package logger on DEBUG (--debug) they come through."""
    import logging
    import warnings

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with est._quiet_libraries():
                logging.getLogger("fvcore.common.checkpoint").info("[Checkpointer] Loading from model_final.pkl ...")
                logging.getLogger("detectron2.checkpoint.detection_checkpoint").info("[DetectionCheckpointer] Loading")
                logging.getLogger("torch.fx._symbolic_trace").warning("is_fx_tracing will return true for both fx.symbolic_trace and torch.export.")
                warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.")
                logging.getLogger("detectron2").warning("a real problem")
            assert capfd.readouterr().err == "a real problem\n"
            package = logging.getLogger("magicanimate_cli")
            package.setLevel(logging.DEBUG)
            try:
                with est._quiet_libraries():
                    logging.getLogger("fvcore.common.checkpoint").info("[Checkpointer] Loading from model_final.pkl ...")
            finally:
                package.setLevel(logging.NOTSET)
            assert "[Checkpointer]" in capfd.readouterr().err
            assert logging.getLogger("fvcore").level == logging.NOTSET  # left as it was
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# ----------------------------------------------------------------------------- without detectron2, and the CLI

needs_no_detectron2 = pytest.mark.skipif(est.detectron2_available(), reason="detectron2 is installed here")


@needs_no_detectron2
def test_without_detectron2_the_stage_says_how_to_install_it(tmp_path):
    frames_folder(tmp_path / "in", 2)
    with pytest.raises(UserError) as info:
        densepose(tmp_path / "in", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and est.DETECTRON2_COMMIT in message
    assert "pip install --no-build-isolation 'detectron2 @ git+https://github.com/facebookresearch/detectron2.git@" in message
    assert "--no-deps 'detectron2-densepose @ " in message and "#subdirectory=projects/DensePose" in message
    status = densepose_status(tmp_path / "models")
    assert status["ok"] is False and status["detectron2"] is None and "--no-build-isolation" in status["install"]
    assert status["weights"].endswith("DensePose/densepose_rcnn_R_50_FPN_s1x/model_final_162be9.pkl") and status["weights_present"] is False


def test_a_missing_input_is_said_before_anything_about_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(est, "detectron2_available", lambda: False)  # as on a machine without it
    with pytest.raises(UserError, match=r"nope\.mp4: no such file or folder"):
        densepose(tmp_path / "nope.mp4", tmp_path / "out.mp4")


@needs_no_detectron2
def test_cli_without_detectron2_exits_2_with_the_install_line(tmp_path):
    from magicanimate_cli.cli import app

    frames_folder(tmp_path / "in", 2)
    result = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout.strip().splitlines()[0])
    assert payload["ok"] is False and payload["exit_code"] == 2 and "--no-build-isolation" in payload["error"]
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_runs_the_stage_and_refuses_to_overwrite(tmp_path, monkeypatch):
    from magicanimate_cli.cli import app

    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(PLAN))
    frames_folder(tmp_path / "in", 5)
    argv = ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--labels", str(tmp_path / "labels"), "--batch-size", "2", "--smooth", "3", "--fill-missing", "--json"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True and payload["frames"] == 5 and payload["missing_frames"] == ["0003.png"] and payload["filled"] == 1
    assert payload["smooth"] == 3 and payload["batch_size"] == 2 and payload["min_score"] == 0.8 and payload["max_people"] == 1
    assert len(list((tmp_path / "labels").iterdir())) == 5

    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.stderr
    assert CliRunner().invoke(app, [*argv, "--overwrite"]).exit_code == 0
    bad = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--smooth", "2"])
    assert bad.exit_code == 2 and "--smooth 2" in bad.stderr


def test_weights_are_read_as_typed_home_folder_and_empty_path(tmp_path, monkeypatch):
    # weights="" was read as the current folder: ": no such weights file" (`--weights ""`: ".: ...")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(PLAN))
    frames_folder(tmp_path / "in", 5)
    (tmp_path / "mine.pkl").write_bytes(b"weights")
    assert densepose(tmp_path / "in", tmp_path / "out", weights="~/mine.pkl", fill_missing=True).frames == 5
    with pytest.raises(UserError, match='^"": an empty input path') as info:
        densepose(tmp_path / "in", tmp_path / "o2", weights="")
    assert "\n" not in str(info.value) and not (tmp_path / "o2").exists()


def test_importing_the_stage_loads_neither_numpy_nor_torch():
    import subprocess

    code = "import sys, magicanimate_cli.densepose as d; d.DensePoseConfig(); print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]




def test_a_frame_of_another_size_is_refused_before_the_model_runs(tmp_path):
    # the folder was read frame by frame: the frames before the odd one were estimated (GPU time)
    # and their work left behind, then the run stopped on it
    frames_folder(tmp_path / "in", 5)
    Image.fromarray(np.zeros((H + 8, W, 3), np.uint8)).save(tmp_path / "in" / "0005.png")
    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match=r"0005\.png: size 64x56 differs from the first frame's 64x48; resize the folder"):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=fake)
    assert fake.batches == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_run_that_finds_every_label_made_names_the_model_that_made_them(tmp_path, monkeypatch):
    # the documented way on after --min-detected stops a run (the same command with --fill-missing)
    # runs no model, and its --json said "weights": null, "weights_sha256": null, "device": "n/a"
    from magicanimate_cli.cli import app

    class Loaded(FakeEstimator):  # as load_estimator() returns it: the model's key and what the result names
        name, key = est.model_key(None, None)
        weights, weights_sha256, device = tmp_path / "model.pkl", "ab" * 32, "cuda:0"

    frames_folder(tmp_path / "in", 5)
    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: Loaded(SPARSE))
    argv = ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"]
    assert CliRunner().invoke(app, argv).exit_code == 1  # below --min-detected: the labels are kept
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: pytest.fail("no model is needed"))
    done = CliRunner().invoke(app, [*argv, "--fill-missing"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["resumed"] == 5 and payload["model"] == "densepose_rcnn_R_50_FPN_s1x" and payload["device"] == "cuda:0"
    assert payload["weights"] == str(tmp_path / "model.pkl") and payload["weights_sha256"] == "ab" * 32


FULL_DISK = """
import shutil, sys
from pathlib import Path
sys.path[:0] = sys.argv[1:3]
from densepose_helpers import PLAN, FakeEstimator
from magicanimate_cli.densepose import densepose
from magicanimate_cli.errors import UserError

disk = Path(sys.argv[4])
with open(disk / "filler", "wb") as handle:
    handle.write(bytes(shutil.disk_usage(disk).free - 3000))  # under one page: the first byte of a new file fails
try:
    densepose(sys.argv[3], disk / "out", estimator=FakeEstimator(PLAN))
except UserError as exc:
    print(exc)
"""


def test_a_full_disk_as_the_work_starts_names_the_output(tmp_path):
    # writing the work folder's state (and its records) raised a bare OSError, which the CLI
    # reported as "No space left on device while writing the output", naming nothing
    import subprocess
    from pathlib import Path

    from disk_helpers import _MOUNT, small_disk_available

    if not small_disk_available():
        pytest.skip("no user namespaces for a small tmpfs here")
    frames_folder(tmp_path / "in", 5)
    (tmp_path / "disk").mkdir()
    here = Path(__file__).resolve()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", _MOUNT, "sh", "400k", str(tmp_path / "disk"), sys.executable, "-c", FULL_DISK,
                           str(here.parent), str(here.parents[2]), str(tmp_path / "in"), str(tmp_path / "disk")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'disk' / 'out'}: cannot write it (No space left on device); free space on that disk or choose an output on another one"


def test_weights_replaced_under_the_same_name_start_the_work_afresh(tmp_path):
    # the resume key held the weights' path alone: an interrupted run's labels, made by the old
    # file, were kept beside the new file's, and the result named the new one
    from magicanimate_cli.densepose.estimator import model_key

    frames_folder(tmp_path / "in", 5)
    weights = tmp_path / "model.pkl"

    def estimator(**kwargs):
        fake = FakeEstimator(PLAN, **kwargs)
        fake.key = model_key(None, weights)[1]  # as load_estimator keys the estimator it loads
        return fake

    weights.write_bytes(b"first checkpoint")
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=estimator(fail_on_call=2))
    weights.write_bytes(b"a retrained checkpoint")
    fake = estimator()
    assert densepose(tmp_path / "in", tmp_path / "out", batch_size=2, estimator=fake).resumed == 0 and fake.seen == [0, 1, 2, 3, 4]


def test_a_frame_removed_while_the_model_loads_is_named_not_every_later_label_shifted(tmp_path, monkeypatch):
    # the frames were listed again when reading began: every frame after the removed one was
    # estimated under its predecessor's name, and the last name was filled in as "nobody found"
    frames_folder(tmp_path / "in", 5)

    def loading(*args, **kwargs):  # meanwhile another job takes a frame away
        (tmp_path / "in" / "0003.png").unlink()
        return FakeEstimator(PLAN)

    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", loading)
    with pytest.raises(UserError, match=r"0003\.png: removed while the run read"):
        densepose(tmp_path / "in", tmp_path / "out", fill_missing=True)
    assert not (tmp_path / "out").exists()
