"""The file-level API `animate()`: inputs of any kind in, atomic outputs out."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate
from magicanimate_cli.crop import fit_square
from magicanimate_cli.densepose import PALETTE
from magicanimate_cli.errors import InputWarning, UserError

from preprocess_helpers import add_sound, make_video, with_empty_sound


@pytest.fixture()
def motion_dir(tmp_path, rng):
    folder = tmp_path / "poses"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def run(tiny_pipeline, reference, motion, output, **kwargs):
    kwargs.setdefault("steps", 1)
    kwargs.setdefault("size", 64)
    return animate(reference, motion, output, pipeline=tiny_pipeline, **kwargs)


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P", "RGB"])
def test_any_image_mode_is_a_valid_reference(tiny_pipeline, tmp_path, motion_dir, mode, rng):
    array = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray((array[..., 0].astype(np.uint16) * 257))
    else:
        image = image.convert(mode)
    image.save(tmp_path / "ref.png")
    result = run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out")
    frames = media.list_frame_files(tmp_path / "out")
    assert result.frames == 3 and [f.name for f in frames] == ["00000.png", "00001.png", "00002.png"]
    assert media.read_image(frames[0]).shape == (64, 64, 3)


@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("name", ["ref.gif", "ref.webp", "ref.png"])  # the .png an APNG
def test_an_animated_reference_is_refused_not_taken_at_its_first_frame(tiny_weights, tmp_path, motion_dir, rng, monkeypatch, name, extra):
    from magicanimate_cli.animate import stage

    frames = [Image.fromarray(frame) for frame in rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)]
    animated = tmp_path / name
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=40)
    still = tmp_path / "still.gif"  # a GIF of one picture is one
    frames[0].save(still)
    monkeypatch.setattr(stage, "load_pipeline", lambda *args, **kwargs: pytest.fail("the models loaded"))
    reference, extras = (still, [animated]) if extra else (animated, None)
    with pytest.raises(UserError, match=f"^{animated}: an animation of 3 frames, not one picture; pass one image of the person"):
        animate(reference, motion_dir, tmp_path / "out.mp4", extra_references=extras, models=tiny_weights, device="cpu", size=64)
    assert not (tmp_path / "out.mp4").exists()
    stage.check_animate(still, motion_dir, tmp_path / "out.mp4", extra_references=[still], models=tiny_weights, device="cpu", size=64)


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_keep_aspect_writes_the_motions_aspect_cut_from_the_same_animation(tiny_pipeline, tmp_path, motion_dir, rng, fit):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    square = run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "square", fit=fit, grid=True)
    kept = run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "kept", fit=fit, grid=True, keep_aspect=True)
    assert (square.width, square.height) == (64, 64) and (kept.width, kept.height) == (64, 38)  # motion 80x48
    for name in ("00000.png", "00002.png"):
        whole, cut = media.read_image(tmp_path / "square" / name), media.read_image(tmp_path / "kept" / name)
        if fit == "pad":  # the same animation, its padding rows cut off
            assert np.array_equal(cut, whole[13:51])
        else:
            assert np.array_equal(cut, np.asarray(Image.fromarray(whole).resize((64, 38), Image.BICUBIC)))
        assert np.array_equal(media.read_image(tmp_path / "kept_grid" / name)[:, -64:], cut)  # the grid shows the frame written


@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_keep_aspect_grid_panels_have_the_written_aspect_undistorted(tiny_pipeline, tmp_path, motion_dir, rng, fit):
    # the grid stayed square: with stretch its result and pose were the squash --keep-aspect undoes,
    # with pad they kept the bands it cuts off; the reference is shown at its own aspect, not the motion's
    reference = rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)  # 2:3, the motion 80x48 (5:3)
    Image.fromarray(reference).save(tmp_path / "ref.png")
    run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "square", fit=fit, grid=True)
    kept = run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "kept", fit=fit, grid=True, keep_aspect=True)
    assert (kept.width, kept.height) == (64, 38)
    shown = np.asarray(Image.fromarray(reference).resize((25, 38), Image.BICUBIC))  # 40x60 at the panel's height of 38
    for name in ("00000.png", "00002.png"):
        grid, square_grid = media.read_image(tmp_path / "kept_grid" / name), media.read_image(tmp_path / "square_grid" / name)
        assert grid.shape == (38, 3 * 64, 3)
        assert np.array_equal(grid[:, :64], np.pad(shown, ((0, 0), (20, 19), (0, 0)), constant_values=255))
        for panel in (slice(64, 128), slice(128, 192)):  # pose, result: cut from the square ones as the frames are
            whole = square_grid[:, panel]
            expected = whole[13:51] if fit == "pad" else np.asarray(Image.fromarray(whole).resize((64, 38), Image.BICUBIC))
            assert np.array_equal(grid[:, panel], expected)
        assert np.array_equal(grid[:, 128:], media.read_image(tmp_path / "kept" / name))


def test_keep_aspect_reports_the_size_of_the_video_written(tiny_pipeline, tmp_path, rng):
    # a 64x35 aspect is written as 64x36 in H.264; the result said 35
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "motion", rng.integers(0, 256, (2, 35, 64, 3), dtype=np.uint8))
    kept = run(tiny_pipeline, tmp_path / "ref.png", tmp_path / "motion", tmp_path / "kept.mp4", fit="pad", keep_aspect=True)
    probed = media.probe(tmp_path / "kept.mp4")
    assert (kept.width, kept.height) == (probed.width, probed.height) == (64, 36)


def test_keep_aspect_with_crop_is_refused_before_the_work(tiny_pipeline, tmp_path, motion_dir, rng):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    with pytest.raises(UserError, match="^--keep-aspect: only with --fit pad or --fit stretch"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out", keep_aspect=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


def test_audio_gives_the_video_the_sound_of_the_source_and_the_same_frames(tiny_pipeline, tmp_path, rng):
    motion = tmp_path / "poses.mp4"
    media.write_frames(motion, rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), fps=10)
    add_sound(make_video(tmp_path / "dance.mp4", count=30, fps=10), 3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "silent.mp4")
    result = run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "out.mp4", audio=tmp_path / "dance.mp4", grid=True)
    assert result.audio == str(tmp_path / "dance.mp4")
    assert media.audio_streams(tmp_path / "silent.mp4") == [] and media.audio_streams(tmp_path / "out.mp4") == ["aac"]
    assert media.audio_streams(tmp_path / "out_grid.mp4") == ["aac"]
    assert np.array_equal(media.read_frames(tmp_path / "out.mp4").array, media.read_frames(tmp_path / "silent.mp4").array)
    import subprocess

    header = subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-i", str(tmp_path / "out.mp4")], capture_output=True, text=True).stderr
    assert "Duration: 00:00:00.5" in header  # 5 frames at 10 fps: the 3 s of sound are cut to the animation


def test_audio_start_takes_the_sound_from_that_far_in(tiny_pipeline, tmp_path, rng):
    from preprocess_helpers import read_sound, sound_level

    motion = media.write_frames(tmp_path / "poses.mp4", rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), fps=10)
    song = add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 3.0, rising=True)  # its level tells the time
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    whole = read_sound(song)
    for start, name in ((1.2, "seconds.mp4"), ("0:01.2", "clock.mp4")):  # 1.2 s either way
        result = run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / name, audio=song, audio_start=start)
        assert result.audio_start == 1.2
        kept = read_sound(tmp_path / name)
        assert len(kept) / 8000 == pytest.approx(0.5, abs=0.03)  # the 5 frames' 0.5 s
        for at in (0.0, 0.2, 0.4):
            assert sound_level(kept, at) == pytest.approx(sound_level(whole, 1.2 + at), abs=0.012)
    assert run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "start.mp4", audio=song).audio_start == 0.0
    assert run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "none.mp4").audio_start is None


def test_a_sound_that_ends_before_the_animation_is_warned_about(tiny_pipeline, tmp_path, rng):
    motion = media.write_frames(tmp_path / "poses.mp4", rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), fps=10)  # 0.5 s
    song = add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 1.0)  # 3 s of picture, 1 s of sound
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", InputWarning)
        fits = run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "fits.mp4", audio=song, audio_start=0.4)  # 0.6 s left
        short = run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "short.mp4", audio=song, audio_start=0.8)  # 0.2 s left
    sound = [str(w.message) for w in said if w.category is InputWarning and "the sound of" in str(w.message)]
    assert len(sound) == 1 and sound[0].startswith(f"{tmp_path / 'short.mp4'}: the sound of {song} ends 0.3")
    assert "(0.2" in sound[0] and "s of sound from --audio-start 0.8 s for 0.50 s of frames); the rest is silent" in sound[0]
    assert sound[0] in short.warnings and not any("the sound of" in text for text in fits.warnings)
    assert media.sound_end(tmp_path / "short.mp4") == pytest.approx(0.2, abs=0.03)  # written all the same


@pytest.mark.parametrize(
    ("audio", "start", "message"),
    [
        (None, "1.5", r"^--audio-start 1\.5: only with --audio"),
        ("song.mp4", "-1", r"^--audio-start '-1': must be a non-negative number of seconds"),
        ("song.mp4", "1m", r"^--audio-start '1m': expected seconds \(90\.5\) or \[HH:\]MM:SS\(\.ms\)"),
        ("song.mp4", "0:05", r"^--audio-start 0:05: .*song\.mp4 has 1\.0\d s of sound; start it earlier$"),  # its picture starts at 0
        ("song.mp4", 1.0, r"^--audio-start 1\.0: .*song\.mp4 has 1\.0\d s of sound"),  # the sound's 1 s, not the picture's 3 s
        ("late.mp4", "1.2", r"late\.mp4 has 1\.0\d s of sound; start it earlier$"),  # from the file's start, though its picture starts 0.5 s in
    ],
)
def test_an_audio_start_that_cannot_be_is_refused_before_any_work(tiny_pipeline, tmp_path, rng, audio, start, message):
    import subprocess

    motion = media.write_frames(tmp_path / "poses.mp4", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), fps=10)
    add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 1.0)  # 3 s of picture, 1 s of sound
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-itsoffset", "0.5", "-i", str(tmp_path / "song.mp4"), "-i",
                    str(tmp_path / "song.mp4"), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mp4")], check=True)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    with pytest.raises(UserError, match=message):
        animate(tmp_path / "ref.png", motion, tmp_path / "out" / "out.mp4", audio=tmp_path / audio if audio else None, audio_start=start,
                pipeline=tiny_pipeline, size=64, steps=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.mp4", "poses.mp4", "ref.png", "song.mp4"]


@pytest.mark.parametrize(("start", "left"), [("0.95", "0.050"), ("0.995", "0.005")])
def test_an_audio_start_that_leaves_less_than_a_frame_of_sound_is_refused_before_any_work(tiny_pipeline, tmp_path, rng, start, left):
    # 0.95: the video got a 0.05 s sliver of sound (and a warning); 0.995: no sound came out, and the
    # whole animation was thrown away at the end ("its sound could not be added")
    motion = media.write_frames(tmp_path / "poses.mp4", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), fps=10)
    song = add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 1.0)  # 1 s of sound
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    message = (rf"^--audio-start {start}: .*song\.mp4 has 1\.0\d s of sound, {left} s of it from there: less than one frame "
               r"\(0\.10 s at 10 fps\); start it earlier$")
    with pytest.raises(UserError, match=message):
        run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "out" / "out.mp4", audio=song, audio_start=start)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.mp4", "ref.png", "song.mp4"]
    assert run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "fits.mp4", audio=song, audio_start="0.85").audio_start == 0.85


def test_an_audio_whose_sound_stream_is_empty_is_refused_before_any_work(tiny_pipeline, tmp_path, rng):
    # the header lists a stream, no packet fills it: refused after the whole animation ("no sound came out")
    motion = media.write_frames(tmp_path / "poses.mp4", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), fps=10)
    empty = with_empty_sound(add_sound(make_video(tmp_path / "song.mp4", count=30, fps=10), 1.0), tmp_path / "empty.mkv")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    with pytest.raises(UserError, match=r"^.*empty\.mkv: has 0\.00 s of sound: less than one frame \(0\.10 s at 10 fps\); give --audio another file$"):
        run(tiny_pipeline, tmp_path / "ref.png", motion, tmp_path / "out.mp4", audio=empty)
    assert not (tmp_path / "out.mp4").exists()


def test_audio_from_a_clip_folder_is_the_sound_of_the_video_it_was_made_from(tiny_pipeline, tmp_path, rng):
    from magicanimate_cli.clip import write_meta

    clip = tmp_path / "clips" / "dance"
    media.write_frames(clip / "densepose", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    write_meta(clip, {"source": {"path": str(tmp_path / "dance.mp4"), "kind": "video"}})
    with pytest.raises(UserError, match=f"^{clip}: its source video {tmp_path / 'dance.mp4'} \\(meta.json\\) is not there any more"):
        run(tiny_pipeline, tmp_path / "ref.png", clip, tmp_path / "out.mp4", audio=clip)
    add_sound(make_video(tmp_path / "dance.mp4", count=10, fps=25), 0.4)
    result = run(tiny_pipeline, tmp_path / "ref.png", clip, tmp_path / "out.mp4", audio=clip)
    assert result.audio == str(tmp_path / "dance.mp4") and media.audio_streams(tmp_path / "out.mp4") == ["aac"]
    write_meta(clip, {"source": {"path": str(tmp_path / "frames"), "kind": "frames"}})
    with pytest.raises(UserError, match=f"^{clip}: made from frames"):
        run(tiny_pipeline, tmp_path / "ref.png", clip, tmp_path / "again.mp4", audio=clip)


def test_audio_is_refused_before_the_work_without_sound_or_a_video_output(tiny_pipeline, tmp_path, motion_dir, rng):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    media.write_frames(tmp_path / "mute.mp4", rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(UserError, match=f"^{tmp_path / 'mute.mp4'}: has no sound"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4", audio=tmp_path / "mute.mp4")
    with pytest.raises(UserError, match=f"^{tmp_path / 'nothing.wav'}: no such file"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4", audio=tmp_path / "nothing.wav")
    with pytest.raises(UserError, match=f"^{tmp_path / 'frames'}: a folder of frames holds no sound"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "frames", audio=tmp_path / "mute.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mute.mp4", "poses", "ref.png"]


def test_square_input_of_the_right_size_is_untouched():
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert np.array_equal(fit_square(image, 64, "crop", (0, 0, 0)), image)


def test_video_output_keeps_the_motion_fps_and_grid(tiny_pipeline, tmp_path, rng):
    motion = tmp_path / "motion.mp4"
    media.write_frames(motion, rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), fps=12)
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    result = run(tiny_pipeline, reference, motion, tmp_path / "out.mp4", grid=True)
    info = media.probe(tmp_path / "out.mp4")
    assert (info.frames, info.fps, info.width) == (5, 12.0, 64)
    grid = media.probe(tmp_path / "out_grid.mp4")
    assert (grid.frames, grid.width, grid.height) == (5, 192, 64)
    assert result.grid.endswith("out_grid.mp4")


def test_an_animated_webp_motion_is_animated_whole_at_its_rate_and_a_still_webp_is_a_reference(tiny_pipeline, tmp_path, rng):
    # `densepose -o poses.webp` read back as a motion was one frame (Pillow's first) at 25 fps
    motion = tmp_path / "poses.webp"
    media.write_frames(motion, PALETTE[rng.integers(0, len(PALETTE), (5, 64, 64))], fps=30)
    reference = tmp_path / "ref.webp"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    result = run(tiny_pipeline, reference, motion, tmp_path / "out.mp4")
    info = media.probe(tmp_path / "out.mp4")
    assert (result.frames, result.fps) == (5, 30.0) and (info.frames, info.fps) == (5, 30.0)


def test_frames_folder_means_25_fps_unless_told(tiny_pipeline, tmp_path, motion_dir, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    assert run(tiny_pipeline, reference, motion_dir, tmp_path / "a.mp4").fps == 25.0
    assert run(tiny_pipeline, reference, motion_dir, tmp_path / "b.mp4", fps=10).fps == 10.0
    assert media.probe(tmp_path / "b.mp4").fps == 10.0


def test_a_clip_motion_is_never_written_over(tmp_path, motion_dir, reference, tiny_weights):
    # -o CLIP/images --overwrite replaced the clip's photos with the animation
    import shutil

    from magicanimate_cli.animate import check_animate

    clip = tmp_path / "clip"
    shutil.copytree(motion_dir, clip / "densepose")
    shutil.copytree(motion_dir, clip / "images")
    for part in ("images", "densepose"):
        with pytest.raises(UserError, match=f"is the input .*clip/{part}"):
            check_animate(reference, clip, clip / part, models=tiny_weights, overwrite=True)
    check_animate(reference, clip, clip / "animation.mp4", models=tiny_weights)  # a new file beside them is fine


def test_fps_other_than_a_motion_videos_own_is_refused(tmp_path, motion_dir, reference, tiny_weights):
    # a label alone played the motion 2.5× fast (10 frames of a 1 s video as 0.4 s at 25 fps), out
    # of step with its sound
    from magicanimate_cli.animate import check_animate

    video = media.write_frames(tmp_path / "motion.mp4", media.read_frames(motion_dir).array, fps=10)
    with pytest.raises(UserError, match=r"--fps 25: .*motion.mp4 is read at its own 10 fps; --fps is for a frames folder"):
        check_animate(reference, video, tmp_path / "out.mp4", models=tiny_weights, fps=25)
    check_animate(reference, video, tmp_path / "out.mp4", models=tiny_weights, fps=10)  # its own rate: nothing to refuse
    ntsc = media.write_frames(tmp_path / "ntsc.mp4", media.read_frames(motion_dir).array, fps=24000 / 1001)  # its header says 23.98
    check_animate(reference, ntsc, tmp_path / "out.mp4", models=tiny_weights, fps=23.976)


def test_a_clip_folder_animates_its_densepose_frames_at_the_clips_rate(tiny_pipeline, tmp_path, motion_dir, reference):
    """``preprocess`` makes clip folders; a clip is a MOTION as for ``align`` (its ``densepose/``)."""
    import json
    import shutil

    clip = tmp_path / "clip"
    (clip / "images").mkdir(parents=True)
    shutil.copytree(motion_dir, clip / "densepose")
    (clip / "meta.json").write_text(json.dumps({"format": 1, "fps": 30.0}))
    from_clip = run(tiny_pipeline, reference, clip, tmp_path / "a")
    from_folder = run(tiny_pipeline, reference, clip / "densepose", tmp_path / "b", fps=30)
    assert from_clip.fps == from_folder.fps == 30.0 and from_clip.frames == from_folder.frames == 3
    for name in sorted(p.name for p in (tmp_path / "b").iterdir()):
        assert np.array_equal(media.read_image(tmp_path / "a" / name), media.read_image(tmp_path / "b" / name))
    shutil.rmtree(clip / "densepose")
    with pytest.raises(UserError, match=f"{clip}: clip folder without densepose/; run `magicanimate densepose {clip}` first"):
        run(tiny_pipeline, reference, clip, tmp_path / "c")


def test_a_second_run_of_the_same_output_is_refused_while_the_first_runs(tiny_pipeline, tmp_path, motion_dir, reference):
    from magicanimate_cli import files

    with files.claim(tmp_path / "out.mp4"):  # the first run, still going (its resume checkpoint is its own)
        with pytest.raises(UserError, match="out.mp4: another run is writing it now; wait for that run to end"):
            run(tiny_pipeline, reference, motion_dir, tmp_path / "out.mp4")
    assert run(tiny_pipeline, reference, motion_dir, tmp_path / "out.mp4").frames == 3  # once it has ended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "poses", "ref.png"]


def test_a_run_whose_grid_another_run_writes_is_refused(tiny_pipeline, tmp_path, motion_dir, reference):
    from magicanimate_cli import files

    # `-o x.mp4 --grid` writes x_grid.mp4, as another run's `-o x_grid.mp4` (or `-o x.mp4 --grid`) does: kept apart
    with files.claim(tmp_path / "x_grid.mp4"):
        with pytest.raises(UserError, match="x_grid.mp4: another run is writing it now"):
            run(tiny_pipeline, reference, motion_dir, tmp_path / "x.mp4", grid=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


def test_existing_output_is_never_overwritten(tiny_pipeline, tmp_path, motion_dir, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="--overwrite"):
        run(tiny_pipeline, reference, motion_dir, target)
    assert target.read_bytes() == b"precious"
    run(tiny_pipeline, reference, motion_dir, target, overwrite=True)
    assert media.probe(target).frames == 3


def test_a_failed_run_leaves_nothing_behind(tiny_pipeline, tmp_path, motion_dir, rng, monkeypatch):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)

    def boom(*args, **kwargs):
        kwargs["on_frame"](0, np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("interrupted")

    monkeypatch.setattr(type(tiny_pipeline), "__call__", boom)
    with pytest.raises(RuntimeError):
        run(tiny_pipeline, reference, motion_dir, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "--steps"),
        ({"context_overlap": 16}, "--context-overlap"),
        ({"fit": "zoom"}, "--fit"),
        ({"context_schedule": "spiral"}, "--context-schedule"),
        ({"context_fusion": "gauss"}, "--context-fusion"),
        ({"size": 60}, "--size"),
        ({"fps": -1}, "--fps"),
    ],
)
def test_bad_settings_are_user_errors(tiny_pipeline, tmp_path, motion_dir, kwargs, message):
    with pytest.raises(UserError, match=message):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4", **kwargs)


def test_a_window_no_wider_than_the_default_overlap_says_what_to_lower():
    # --context-frames 4 alone: the default overlap (4) is what is too large, and the user never typed it
    from magicanimate_cli.animate import AnimateConfig

    with pytest.raises(UserError) as refused:
        AnimateConfig(context_frames=4).validate()
    assert str(refused.value) == ("--context-overlap 4: must be >= 0 and smaller than --context-frames 4; "
                                  "give a smaller --context-overlap (the default is 4)")


def test_missing_or_broken_inputs_name_the_file(tiny_pipeline, tmp_path, motion_dir):
    with pytest.raises(UserError, match="ref.png: no such image file"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4")
    (tmp_path / "ref.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="ref.png: not a readable image"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4")
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError, match=r"photos: is a folder; pass an image file \(PNG or JPEG\)"):
        run(tiny_pipeline, tmp_path / "photos", motion_dir, tmp_path / "out.mp4")


def test_cpu_kernels_are_pinned_before_torch_is_imported(tmp_path):
    """A fresh process calling animate() pins the kernels while torch is still unimported."""
    import subprocess
    import sys

    code = (
        "import sys, magicanimate_cli.animate as A, magicanimate_cli.animate.stage as S\n"
        "seen = []\n"
        "original = S.pin_cpu_kernels\n"
        "S.pin_cpu_kernels = lambda: (seen.append('torch' in sys.modules), original())\n"
        "try:\n"
        f"    A.animate({str(tmp_path / 'missing.png')!r}, {str(tmp_path)!r}, {str(tmp_path / 'o.mp4')!r})\n"
        "except Exception:\n"
        "    pass\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False]"


def test_load_pipeline_pins_the_cpu_kernels_as_the_cli_does(tiny_weights):
    """The API's way (load_pipeline, then animate(pipeline=...)) computes with the CLI's kernels."""
    import subprocess
    import sys

    code = (
        "import os, magicanimate_cli.animate as A\n"
        f"A.load_pipeline({str(tiny_weights)!r}, 'cpu')\n"
        "import torch\n"
        "print(os.environ.get('ATEN_CPU_CAPABILITY'), torch.backends.cpu.get_cpu_capability())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[0] == "avx2" and out[1] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_load_pipeline_on_cpu_reuses_freed_memory(tiny_weights, monkeypatch):
    import magicanimate_cli.animate as A
    import magicanimate_cli.animate.loading as loading_module

    calls = []
    monkeypatch.setattr(loading_module, "reuse_freed_memory", lambda: calls.append(True))
    A.load_pipeline(tiny_weights, device="cpu", dtype="float32")
    assert calls == [True]


# ----------------------------------------------------------------------------- issue 12: reliability


@pytest.fixture()
def reference(tmp_path, rng):
    path = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["frame", "new-file", "motion", "parent", "grid-is-motion"])
def test_an_output_is_never_an_input_inside_one_or_holding_one(tiny_pipeline, tmp_path, motion_dir, reference, where):
    before = _tree(tmp_path)
    output, grid = {
        "frame": (motion_dir / "0001.png", False),  # animate REF MOTION -o MOTION/00005.png --overwrite
        "new-file": (motion_dir / "new.mp4", False),
        "motion": (motion_dir, False),
        "parent": (tmp_path, False),
        "grid-is-motion": (None, True),  # the grid of -o out is out_grid, which is the motion
    }[where]
    if where == "grid-is-motion":
        motion = tmp_path / "out_grid"
        motion_dir.rename(motion)
        output = tmp_path / "out"
        before = _tree(tmp_path)
    else:
        motion = motion_dir
    with pytest.raises(UserError, match="an image file name" if where == "frame" else "input"):  # a frame is refused as a name first
        run(tiny_pipeline, reference, motion, output, overwrite=True, grid=grid)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("grid", [False, True])
def test_an_output_is_never_the_audio_file_it_takes_the_sound_from(tiny_pipeline, tmp_path, motion_dir, reference, grid):
    song = add_sound(make_video(tmp_path / ("dance_grid.mp4" if grid else "dance.mp4"), count=10, fps=25), 0.4)
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=f"^{song}: is the input {song}; choose another output"):  # even with --overwrite
        run(tiny_pipeline, reference, motion_dir, tmp_path / "dance.mp4", audio=song, grid=grid, overwrite=True)
    assert _tree(tmp_path) == before


def test_grid_and_output_are_committed_together(tiny_pipeline, tmp_path, motion_dir, reference, monkeypatch):
    output = tmp_path / "out.mp4"
    original = type(tiny_pipeline).__call__

    def intruder(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        output.write_bytes(b"someone else's")  # the main output appears from elsewhere mid-run
        return result

    with monkeypatch.context() as patch:
        patch.setattr(type(tiny_pipeline), "__call__", intruder)
        with pytest.raises(UserError, match="appeared while"):
            run(tiny_pipeline, reference, motion_dir, output, grid=True)
    assert output.read_bytes() == b"someone else's" and not (tmp_path / "out_grid.mp4").exists()
    output.unlink()
    result = run(tiny_pipeline, reference, motion_dir, output, grid=True)  # the re-run works (and resumes)
    assert media.probe(output).frames == 3 and media.probe(tmp_path / "out_grid.mp4").frames == 3
    assert result.grid == str(tmp_path / "out_grid.mp4")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": float("nan")}, "--fps"),
        ({"fps": float("inf")}, "--fps"),
        ({"guidance_scale": float("nan")}, "--guidance-scale"),
        ({"guidance_scale": float("inf")}, "--guidance-scale"),
        ({"device": "gpu"}, "--device"),
        ({"dtype": "float8"}, "--dtype"),
    ],
)
def test_every_option_is_checked_before_the_motion_is_read(tmp_path, motion_dir, reference, kwargs, message, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("the motion was read before the options were checked")

    monkeypatch.setattr(media, "iter_frames", no_reading)
    monkeypatch.setattr(media, "probe", no_reading)
    with pytest.raises(UserError, match=message):
        animate(reference, motion_dir, tmp_path / "out.mp4", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"fps": float("nan")}, "--fps"), ({"steps": 0}, "--steps"), ({"device": "gpu"}, "--device"), ({"grid": True}, "out_grid.mp4: already exists"),
     ({"reference": "nope.png"}, "nope.png: no such image file"), ({"motion": "nope"}, "nope: no such"), ({}, None)],
)  # fmt: skip
def test_check_animate_says_what_animate_says_and_loads_nothing(tiny_weights, tmp_path, motion_dir, reference, kwargs, message, monkeypatch):
    import magicanimate_cli.animate.stage as stage_module
    from magicanimate_cli.animate import check_animate

    (tmp_path / "out_grid.mp4").write_bytes(b"the user's")
    paths = {"reference": reference, "motion": motion_dir, **{k: tmp_path / v for k, v in kwargs.items() if k in ("reference", "motion")}}
    options = {k: v for k, v in kwargs.items() if k not in paths}
    call = (paths["reference"], paths["motion"], tmp_path / "out.mp4")
    before = sorted(tmp_path.iterdir())
    monkeypatch.setattr(stage_module, "load_pipeline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a pipeline was loaded")))
    if message is None:
        assert check_animate(*call, models=tiny_weights, **options) is None
    else:
        with pytest.raises(UserError) as checked:
            check_animate(*call, models=tiny_weights, **options)
        with pytest.raises(UserError) as animated:
            animate(*call, models=tiny_weights, **options)
        assert message in str(checked.value) and str(checked.value) == str(animated.value)
    assert sorted(tmp_path.iterdir()) == before


def test_missing_cuda_is_said_before_the_motion_is_read(tiny_weights, tmp_path, motion_dir, reference, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(media, "probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("motion read first")))
    with pytest.raises(UserError, match="no CUDA device"):
        animate(reference, motion_dir, tmp_path / "out.mp4", models=tiny_weights, device="cuda")


def test_a_window_longer_than_the_motion_modules_know_is_said_before_the_motion_is_read(
    tiny_weights, tiny_pipeline, tmp_path, motion_dir, reference, monkeypatch
):
    monkeypatch.setattr(media, "probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("motion read first")))
    message = "--context-frames 32: these motion modules know positions up to 24; use at most 24"
    with pytest.raises(UserError, match=message):  # read from the checkpoint's shapes, nothing loaded
        animate(reference, motion_dir, tmp_path / "out.mp4", models=tiny_weights, device="cpu", context_frames=32)
    with pytest.raises(UserError, match=message):  # a loaded pipeline (batch, serve) says the same
        animate(reference, motion_dir, tmp_path / "out.mp4", pipeline=tiny_pipeline, context_frames=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]  # the inputs alone: no output, no temporary


def test_compile_without_a_compiler_is_said_before_the_motion_is_read(tiny_weights, tmp_path, motion_dir, reference, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    monkeypatch.setattr(media, "probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("motion read first")))
    with pytest.raises(UserError, match="--compile on CPU needs a C\\+\\+ compiler and no-such-c\\+\\+-compiler was not found"):
        animate(reference, motion_dir, tmp_path / "out.mp4", models=tiny_weights, device="cpu", compile=True)
    assert not (tmp_path / "out.mp4").exists()


def test_compile_is_the_whole_fast_path_compiled_and_another_run_for_resuming(tiny_pipeline, tmp_path, motion_dir, reference, monkeypatch):
    from magicanimate_cli.animate import pipeline as pipeline_module
    from magicanimate_cli.animate import resume

    seen, keys = {}, []
    original_key = resume.run_key
    monkeypatch.setattr(resume, "run_key", lambda *a: keys.append(a[-1]["fast"]) or original_key(*a))
    monkeypatch.setattr(pipeline_module.torch, "compile", lambda fn, **options: seen.setdefault(fn.__name__, options) and fn)
    monkeypatch.setattr(tiny_pipeline, "_compiled", {})  # this session-wide pipeline keeps no fake "compiled" function
    for kwargs in ({"compile": True}, {"fast": True}, {}):
        animate(reference, motion_dir, tmp_path / f"out{len(keys)}", pipeline=tiny_pipeline, size=64, steps=1, **kwargs)
    assert set(seen) == {"_window_forward", "_controlnet_forward"}  # the appearance encoder stays eager
    assert all(options == {"dynamic": False, "options": {"layout_optimization": False}} for options in seen.values())
    assert keys == ["compile", True, False]  # a compiled run never resumes a fast or default one


def test_a_truncated_motion_video_is_refused_unless_allowed(tiny_pipeline, tmp_path, reference, rng):
    full = tmp_path / "full.mp4"
    media.write_frames(full, rng.integers(0, 256, (28, 64, 64, 3), dtype=np.uint8), fps=10)
    data = full.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])  # faststart: the header promises 28 frames
    with pytest.raises(UserError, match=r"half\.mp4: truncated or damaged video.*--allow-truncated"):
        run(tiny_pipeline, reference, half, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    result = run(tiny_pipeline, reference, half, tmp_path / "out.mp4", allow_truncated=True)
    assert 0 < result.frames < 28


_KILLED_CHILD = """
import sys, time, types
from magicanimate_cli.animate import animate

class Pipeline:
    unet = types.SimpleNamespace(device="cpu", dtype="torch.float32", config=types.SimpleNamespace(motion_max_seq_length=32))

    def __call__(self, *args, **kwargs):
        print("rendering", flush=True)
        time.sleep(120)

animate(sys.argv[1], sys.argv[2], sys.argv[3], size=64, steps=1, pipeline=Pipeline())
"""


def test_kill_9_leaves_no_motion_scratch_for_good(tiny_pipeline, tmp_path, motion_dir, reference):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(reference), str(motion_dir), str(output)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "rendering"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing in $TMPDIR: the motion waits beside the output
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert any(name.endswith(".motion.u8") for name in left)
    run(tiny_pipeline, reference, motion_dir, output)  # the next run of the same output cleans it up
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _poses(folder, frames):
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
    return folder


def test_a_motion_that_is_not_densepose_is_warned_about_and_still_animated(tiny_pipeline, tmp_path, motion_dir, reference):
    with pytest.warns(InputWarning, match="does not look like DensePose") as caught:
        result = run(tiny_pipeline, reference, motion_dir, tmp_path / "out")  # random noise, as a raw video is
    assert [str(w.message) for w in caught] == list(result.warnings) and len(result.warnings) == 1
    assert result.warnings[0].startswith(f"{motion_dir}: ") and "magicanimate densepose" in result.warnings[0]
    assert len(media.list_frame_files(tmp_path / "out")) == 3


def test_a_densepose_motion_is_not_warned_about_on_viridis_or_on_black(tiny_pipeline, tmp_path, reference, rng):
    labels = np.zeros((3, 48, 80), np.uint8)
    labels[:, 8:40, 30:50] = np.kron(rng.integers(1, 25, (3, 4, 5)), np.ones((8, 4), np.int64))  # solid parts
    for background in ((68, 1, 84), (0, 0, 0)):
        render = np.where(labels[..., None] > 0, PALETTE[labels], np.uint8(background)).astype(np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputWarning)
            result = run(tiny_pipeline, reference, _poses(tmp_path / f"poses{background[0]}", render), tmp_path / f"out{background[0]}")
        assert result.warnings == ()


def test_a_motion_without_a_person_is_warned_about_before_the_models_load(tiny_weights, tmp_path, reference, monkeypatch):
    import magicanimate_cli.animate.stage as stage_module

    def no_loading(*args, **kwargs):
        raise RuntimeError("the models were loaded")

    monkeypatch.setattr(stage_module, "load_pipeline", no_loading)
    empty = _poses(tmp_path / "poses", np.broadcast_to(np.uint8([68, 1, 84]), (3, 48, 80, 3)))
    with pytest.warns(InputWarning, match="no person in 3 frames"), pytest.raises(RuntimeError, match="were loaded"):
        animate(reference, empty, tmp_path / "out", models=tiny_weights, size=64, steps=1, device="cpu")


def test_strict_refuses_what_would_be_warned_about_before_the_models_load(tiny_weights, tmp_path, reference, motion_dir, monkeypatch):
    import json

    from typer.testing import CliRunner

    import magicanimate_cli.animate.stage as stage_module
    from magicanimate_cli.cli import app

    def no_loading(*args, **kwargs):
        raise RuntimeError("the models were loaded")

    monkeypatch.setattr(stage_module, "load_pipeline", no_loading)
    empty = _poses(tmp_path / "empty", np.broadcast_to(np.uint8([68, 1, 84]), (3, 48, 80, 3)))
    common = ["--models", str(tiny_weights), "--size", "64", "--steps", "1", "--device", "cpu", "--strict"]
    refused = CliRunner().invoke(app, ["animate", str(reference), str(empty), "-o", str(tmp_path / "new" / "sub" / "out.mp4"), *common])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {empty}: no person in 3 frames") and "--strict" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "poses", reference.name]  # nothing written: no scratch, no new folder
    as_json = CliRunner().invoke(app, ["animate", str(reference), str(motion_dir), "-o", str(tmp_path / "out.mp4"), *common, "--json"])
    data = json.loads(as_json.stdout)  # random noise, as a raw video is: not DensePose
    assert as_json.exit_code == 2 and data["exit_code"] == 2 and "does not look like DensePose" in data["error"]


def test_a_gif_whose_stored_frames_would_not_fit_the_disk_is_refused_before_the_models_load(tiny_weights, tmp_path, reference, monkeypatch):
    # a GIF's frames (and its grid's) are kept uncompressed until the end of the run: a long
    # animation on a small disk is refused before any work, not after the whole denoising
    import magicanimate_cli.animate.stage as stage_module
    import magicanimate_cli.files

    monkeypatch.setattr(stage_module, "load_pipeline", lambda *a, **k: pytest.fail("the models were loaded"))
    poses = _poses(tmp_path / "poses", np.broadcast_to(np.uint8([68, 1, 84]), (5, 48, 80, 3)))
    call = (reference, poses)
    options = {"models": tiny_weights, "size": 64, "steps": 1, "device": "cpu", "start": "0.04"}  # frames 1-4 of 5, at 25 fps
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 64 * 64 * 3 * 4 - 1)
    with pytest.raises(UserError, match=r"out\.gif: its 4 frames of 64x64 are kept uncompressed until the GIF is encoded"):
        animate(*call, tmp_path / "out.gif", **options)
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 64 * 64 * 3 * 4)  # the animation fits; its grid (3 panels) not
    with pytest.raises(UserError, match=r"out_grid\.gif: its 4 frames of 192x64 are kept uncompressed"):
        animate(*call, tmp_path / "out.gif", grid=True, **options)
    unit = 64 * 64 * 3 * 4  # the GIF's 4 frames; the grid's are 3 times as wide, 4 with --align's pose before it was aligned
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 4 * unit - 1)  # each alone fits, not both together
    with pytest.raises(UserError, match=r"out_grid\.gif: its 4 frames of 192x64 are kept uncompressed .* besides the 49\.15 kB the run's other"):
        animate(*call, tmp_path / "out.gif", grid=True, **options)
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 5 * unit - 1)
    with pytest.raises(UserError, match=r"out_grid\.gif: its 4 frames of 256x64 are kept uncompressed"):
        animate(*call, tmp_path / "out.gif", grid=True, align=True, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]
