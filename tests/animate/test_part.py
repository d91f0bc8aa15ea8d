"""`animate --start/--end`: a part of the motion, read, fitted, timed and sounded as the whole run's frames at those indices."""

import json
import shutil
import types
import warnings

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate, check_animate
from magicanimate_cli.animate.resume import StepCheckpoint
from magicanimate_cli.densepose import PALETTE
from magicanimate_cli.errors import InputWarning, UserError

from preprocess_helpers import add_sound, make_video, read_sound, sound_level

VIRIDIS_0 = (68, 1, 84)


class Recorder:
    """A pipeline that keeps the poses it is given and gives them back as the animation's frames."""

    unet = types.SimpleNamespace(device="cpu", dtype="torch.float32", config=types.SimpleNamespace(motion_max_seq_length=32))

    def __init__(self):
        self.poses = None

    def __call__(self, reference, poses, *, on_frame, **kwargs):
        self.poses = np.array(poses)
        for index, pose in enumerate(self.poses):
            on_frame(index, pose)


def dance(count=20, height=48, width=80, seed=0):
    """DensePose-like frames: a person of solid part colours on viridis(0), moving and growing frame by frame."""
    rng = np.random.default_rng(seed)
    clip = np.empty((count, height, width, 3), np.uint8)
    clip[:] = VIRIDIS_0
    for i, frame in enumerate(clip):
        x0, y0 = 10 + 2 * i % 40, 6 + i % 8
        labels = np.kron(rng.integers(1, 25, (4, 3)), np.ones((8, 4), np.int64))  # 32×12
        frame[y0 : y0 + 32, x0 : x0 + 12] = PALETTE[labels]
    return clip


def folder_of(path, frames):
    path.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(path / f"{i:05d}.png")
    return path


@pytest.fixture()
def reference(tmp_path):
    image = np.zeros((64, 64, 4), np.uint8)  # a person (opaque) for --align, the rest transparent
    image[..., :3] = np.random.default_rng(1).integers(0, 256, (64, 64, 3))
    image[8:60, 20:44, 3] = 255
    Image.fromarray(image, "RGBA").save(tmp_path / "ref.png")
    return tmp_path / "ref.png"


def motion_of(kind, tmp_path):
    """20 frames: a video at 10 fps, a frames folder (25 fps), a clip folder at 10 fps."""
    if kind == "video":
        return media.write_frames(tmp_path / "poses.mp4", dance(), fps=10)
    if kind == "folder":
        return folder_of(tmp_path / "poses", dance())
    clip = tmp_path / "clip"
    (clip / "images").mkdir(parents=True)
    folder_of(clip / "densepose", dance())
    (clip / "meta.json").write_text(json.dumps({"format": 1, "fps": 10.0}))
    return clip


def run(reference, motion, output, pipeline, **kwargs):
    return animate(reference, motion, output, pipeline=pipeline, steps=1, size=64, **kwargs)


@pytest.mark.parametrize(
    ("kind", "options", "first", "stop", "fps", "start", "end"),
    [
        ("video", {"start": "0:00.5", "end": 1.2}, 5, 12, 10, 0.5, 1.2),  # [0.5 s, 1.2 s) at 10 fps
        ("video", {"start": "0.55"}, 6, 20, 10, 0.6, 2.0),  # the first frame at or after 0.55 s, to the end
        ("video", {"end": "1:00"}, 0, 20, 10, 0.0, 2.0),  # an end past the motion's: its end
        ("folder", {"start": 0.2, "end": "0.4"}, 5, 10, 25, 0.2, 0.4),  # a frames folder: 25 fps
        ("folder", {"start": 0.5, "end": 1.2, "fps": 10}, 5, 12, 10, 0.5, 1.2),  # ... or --fps
        ("clip", {"start": 0.5, "end": 1.2}, 5, 12, 10, 0.5, 1.2),  # a clip folder: its fps
    ],
)
def test_a_part_gets_the_poses_of_the_whole_motion_at_those_indices(tmp_path, reference, kind, options, first, stop, fps, start, end):
    motion = motion_of(kind, tmp_path)
    whole, part = Recorder(), Recorder()
    run(reference, motion, tmp_path / "whole", whole, fps=options.get("fps"), fit="pad")
    result = run(reference, motion, tmp_path / "part", part, fit="pad", **options)
    assert len(whole.poses) == 20 and np.array_equal(part.poses, whole.poses[first:stop])
    assert (result.frames, result.fps, result.start, result.end, result.first_frame) == (stop - first, fps, start, end, first)
    assert len(media.list_frame_files(tmp_path / "part")) == stop - first


def test_only_the_part_is_read(tmp_path, reference, monkeypatch):
    video, folder = motion_of("video", tmp_path), motion_of("folder", tmp_path)
    decoded, read = [], []
    iter_frames, read_image = media.iter_frames, media.read_image

    def counted(path, *args, **kwargs):
        for frame in iter_frames(path, *args, **kwargs):
            decoded.append(frame)
            yield frame

    monkeypatch.setattr(media, "iter_frames", counted)
    monkeypatch.setattr(media, "read_image", lambda path: read.append(path.name) or read_image(path))
    run(reference, video, tmp_path / "a", Recorder(), start=0.5, end=1.2)
    assert len(decoded) == 12  # decoded from the start (frames 0-4 skipped), ffmpeg stopped after frame 11
    run(reference, folder, tmp_path / "b", Recorder(), start=0.2, end=0.4)  # at 25 fps: frames 5-9
    assert [name for name in read if name != "ref.png"] == [f"{i:05d}.png" for i in range(5, 10)]


def test_grid_keep_aspect_and_align_work_on_the_part_as_on_a_motion_of_only_those_frames(tmp_path, reference):
    motion = motion_of("folder", tmp_path)
    alone = folder_of(tmp_path / "alone", media.read_frames(motion).array[5:12])  # frames 5-11: 0.2 s to 0.48 s at 25 fps
    options = {"fit": "pad", "keep_aspect": True, "grid": True, "align": True}
    part = run(reference, motion, tmp_path / "part", Recorder(), start=0.2, end=0.48, **options)
    other = run(reference, alone, tmp_path / "alone_out", Recorder(), **options)
    assert part.frames == other.frames == 7 and (part.width, part.height) == (other.width, other.height) == (64, 38)
    assert {**part.alignment, "source": ""} == {**other.alignment, "source": ""}  # aligned on the part's own frames
    for name in ("part", "part_grid"):
        assert np.array_equal(media.read_frames(tmp_path / name).array, media.read_frames(tmp_path / name.replace("part", "alone_out")).array)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start": "2", "end": "1"}, r"^--start 2 --end 1: the end must come after the start$"),
        ({"end": "0"}, r"^--start 0 --end 0: the end must come after the start$"),
        ({"start": "1m"}, r"^--start '1m': expected seconds \(90\.5\) or \[HH:\]MM:SS\(\.ms\)"),
        ({"end": "-1"}, r"^--end '-1': must be a non-negative number of seconds$"),
        ({"start": "0:02"}, r"^--start 0:02: .*poses\.mp4 is 2\.00 s long \(20 frames at 10 fps\), its last frame at 1\.9 s; "
                            r"give a --start of 1\.9 or less$"),
        ({"start": "0.51", "end": "0.59"}, r"^--start 0\.51 --end 0\.59: no frame of .*poses\.mp4 \(10 fps\) lies between them; "
                                           r"make the part at least 0\.1 s long \(one frame\)$"),
    ],
)  # fmt: skip
def test_a_part_that_cannot_be_is_refused_before_any_work(tmp_path, reference, tiny_weights, monkeypatch, options, message):
    motion = motion_of("video", tmp_path)
    monkeypatch.setattr(media, "iter_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the motion was read")))
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UserError, match=message):
        run(reference, motion, tmp_path / "out.mp4", Recorder(), **options)
    with pytest.raises(UserError, match=message):  # batch and serve check a task first: the same line
        check_animate(reference, motion, tmp_path / "out.mp4", models=tiny_weights, size=64, **options)
    assert sorted(tmp_path.iterdir()) == before


def test_the_sound_of_a_part_is_that_of_its_time_unless_audio_start_says(tmp_path, reference):
    motion = motion_of("video", tmp_path)
    song = add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 3.0, rising=True)  # its level tells the time
    whole = read_sound(song)
    for name, options, at in (("part.mp4", {}, 1.2), ("elsewhere.mp4", {"audio_start": "0.3"}, 0.3)):
        result = run(reference, motion, tmp_path / name, Recorder(), start=1.2, end=1.7, audio=song, **options)
        assert result.audio_start == at and result.frames == 5
        kept = read_sound(tmp_path / name)
        assert len(kept) / 8000 == pytest.approx(0.5, abs=0.03)  # the part's 5 frames' 0.5 s
        for t in (0.0, 0.2, 0.4):
            assert sound_level(kept, t) == pytest.approx(sound_level(whole, at + t), abs=0.012)


def test_a_part_past_the_sound_is_warned_about_or_refused_saying_the_parts_start(tmp_path, reference):
    motion = motion_of("video", tmp_path)
    song = add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 1.0)  # 1 s of sound
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", InputWarning)
        short = run(reference, motion, tmp_path / "short.mp4", Recorder(), start=0.8, end=1.3, audio=song)  # 0.2 s for 0.5 s
    sound = [str(w.message) for w in said if "the sound of" in str(w.message)]
    assert len(sound) == 1 and "s of sound from the part's start at 0.8 s for 0.50 s of frames); the rest is silent" in sound[0]
    assert sound == [text for text in short.warnings if "the sound of" in text]
    message = (r"^--start 1\.5: .*song\.mp4 has 1\.0\d s of sound, 0\.000 s of it from the part's start at 1\.5 s: less than one "
               r"frame \(0\.10 s at 10 fps\); give --audio-start T to take the sound from elsewhere$")
    with pytest.raises(UserError, match=message):
        run(reference, motion, tmp_path / "out.mp4", Recorder(), start=1.5, audio=song)
    assert not (tmp_path / "out.mp4").exists()
    assert run(reference, motion, tmp_path / "early.mp4", Recorder(), start=1.5, audio=song, audio_start=0).audio_start == 0.0


def test_another_part_never_resumes_a_parts_checkpoint(tmp_path, reference, tiny_pipeline, monkeypatch):
    motion = folder_of(tmp_path / "poses", np.broadcast_to(dance(1)[0], (4, 48, 80, 3)))  # frames 0-1 and 2-3: the same poses
    common = {"pipeline": tiny_pipeline, "steps": 2, "size": 64}
    save = StepCheckpoint.save

    def interrupted(self, steps_done, latents):
        save(self, steps_done, latents)
        raise KeyboardInterrupt

    for other, resumed in (({"start": 0.08}, 0), ({"start": "0", "end": "0:00.08"}, 1)):  # 25 fps: 0.08 s is frame 2
        with monkeypatch.context() as patch:
            patch.setattr(StepCheckpoint, "save", interrupted)
            with pytest.raises(KeyboardInterrupt):
                animate(reference, motion, tmp_path / "out", end=0.08, **common)  # frames 0-1, stopped after a step
        assert animate(reference, motion, tmp_path / "out", **other, **common).resumed_from_step == resumed
        shutil.rmtree(tmp_path / "out")


def test_a_real_run_of_a_part_has_its_frames_at_the_motions_rate(tmp_path, reference, tiny_pipeline):
    motion = motion_of("video", tmp_path)
    result = animate(reference, motion, tmp_path / "out.mp4", pipeline=tiny_pipeline, steps=1, size=64, start=0.5, end="0:00.8")
    written = media.probe(tmp_path / "out.mp4")
    assert result.frames == written.frames == 3 and written.fps == result.fps == 10
