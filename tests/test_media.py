import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import files, media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import InputWarning, UserError


@pytest.fixture()
def clip(rng):
    return rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)


def test_frames_folder_round_trip_is_lossless(tmp_path, clip):
    media.write_frames(tmp_path / "frames", clip)
    assert [p.name for p in media.list_frame_files(tmp_path / "frames")] == [f"{i:05d}.png" for i in range(6)]
    frames = media.read_frames(tmp_path / "frames")
    assert np.array_equal(frames.array, clip) and frames.fps == 25.0


def test_folders_sort_numerically(tmp_path, clip):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in (10, 9, 1):
        Image.fromarray(clip[0]).save(folder / f"frame{i}.png")
    assert [p.name for p in media.list_frame_files(folder)] == ["frame1.png", "frame9.png", "frame10.png"]


def test_frames_named_two_ways_are_refused_naming_one_of_each(tmp_path, clip):
    # sorted by name, 0001.png, frame_0002.png, 0003.png were read as frames 1, 3, 2, and a cover.jpg
    # beside the frames as the last frame; two files for frame 1 (1.png, 01.png) in either order
    def folder(*names):
        made = tmp_path / str(len(list(tmp_path.iterdir())))
        made.mkdir()
        for name in names:
            Image.fromarray(clip[0]).save(made / name)
        return made

    two_ways = {
        ("0001.png", "frame_0002.png", "0003.png"): "0001.png and frame_0002.png",
        ("frame_0001.png", "frame_0002.png", "img_0001.png"): "frame_0001.png and img_0001.png",
        ("00000.png", "00001.png", "cover.jpg"): "00000.png and cover.jpg",
        ("Frame_0001.png", "frame_0002.png"): "Frame_0001.png and frame_0002.png",
    }
    for names, examples in two_ways.items():
        with pytest.raises(UserError, match=rf": frames named two ways \({examples}\), so their order is unclear; rename them one way"):
            media.list_frame_files(folder(*names))
    with pytest.raises(UserError, match=r"01.png and 1.png: two frames of one number in the folder; keep one of them"):
        media.list_frame_files(folder("01.png", "1.png", "2.png"))
    result = CliRunner().invoke(app, ["crop", str(folder("0001.png", "frame_0002.png")), "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "frames named two ways" in result.output
    one_way = [("1.png", "2.png", "10.png"), ("frame_001.png", "frame_002.png", "frame_10.png"), ("a.png", "b.png", "c.png"),
               ("shot1_0001.png", "shot1_0002.png", "shot2_0001.png"), ("00000.png", "00001.jpg", "00002.jfif")]
    for names in one_way:  # numbers in order, padded or not; names without numbers in name order
        assert [p.name for p in media.list_frame_files(folder(*reversed(names)))] == list(names)


def test_video_round_trip_keeps_count_size_and_fps(tmp_path, clip):
    media.write_frames(tmp_path / "v.mp4", clip, fps=12.5)
    info = media.probe(tmp_path / "v.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (48, 32, 6, 12.5)
    decoded = media.read_frames(tmp_path / "v.mp4").array
    assert decoded.shape == clip.shape and np.abs(decoded.astype(int) - clip).mean() < 60  # lossy, but the same clip


def test_odd_sizes_are_padded_for_yuv420(tmp_path, rng):
    media.write_frames(tmp_path / "odd.mp4", rng.integers(0, 256, (2, 31, 45, 3), dtype=np.uint8))
    assert (media.probe(tmp_path / "odd.mp4").width, media.probe(tmp_path / "odd.mp4").height) == (46, 32)


def test_writer_is_atomic(tmp_path, clip):
    with pytest.raises(RuntimeError):
        with media.FrameWriter(tmp_path / "v.mp4") as writer:
            writer.write(clip[0])
            raise RuntimeError("cut off")
    with pytest.raises(RuntimeError):
        with media.FrameWriter(tmp_path / "frames") as writer:
            writer.write(clip[0])
            raise RuntimeError("cut off")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_output_unless_overwrite(tmp_path, clip):
    media.write_frames(tmp_path / "frames", clip[:2])
    with pytest.raises(UserError, match="already exists"):
        media.write_frames(tmp_path / "frames", clip)
    media.write_frames(tmp_path / "frames", clip[:3], overwrite=True)
    assert len(media.list_frame_files(tmp_path / "frames")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_frames_of_different_sizes_are_refused(tmp_path, rng):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "0.png")
    Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(folder / "1.png")
    with pytest.raises(UserError, match="1.png: size"):
        list(media.iter_frames(folder))


def test_odd_frames_in_a_video_are_padded_to_even_sides_and_said(tmp_path, rng):
    from magicanimate_cli.errors import InputWarning

    frames = rng.integers(0, 256, (2, 47, 63, 3), dtype=np.uint8)
    with pytest.warns(InputWarning, match=r"odd.mp4: H.264 video needs even sides: the 63x47 frames are written as 64x48"):
        with media.FrameWriter(tmp_path / "odd.mp4", 10) as writer:
            for frame in frames:
                writer.write(frame)
    probed = media.probe(tmp_path / "odd.mp4")
    assert writer.written_size == (probed.width, probed.height) == (64, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder keeps the size: nothing to say
        with media.FrameWriter(tmp_path / "odd", 10) as writer:
            writer.write(frames[0])
    assert writer.written_size == (63, 47) and media.read_image(tmp_path / "odd" / "00000.png").shape == (47, 63, 3)


def test_sixteen_bit_images_are_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16))
    assert image.mode == "I;16" and media.to_rgb(image)[0, 0, 0] == 100


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert (media.to_rgb(Image.fromarray(rgba, "RGBA")) == 255).all()


def test_unreadable_video_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.mp4"):
        media.probe(bad)
    with pytest.raises(UserError, match="no such file"):
        media.probe(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image frames"):
        media.probe(tmp_path / "empty")


def test_an_unreadable_video_says_why_and_the_fix(tmp_path):
    # one line each, naming what is wrong with the file rather than ffmpeg's "Could not load meta information"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1", "-c:v", "libx264", tmp_path / "whole.mp4")  # its index last
    data = (tmp_path / "whole.mp4").read_bytes()
    assert data.find(b"moov") > len(data) // 2
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("these are notes, not a video\n" * 20)
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", tmp_path / "sound.mp4")
    expected = {
        "empty.mp4": "the file is empty (0 bytes); download or export it again",
        "notes.mp4": "not a video (ffmpeg does not recognise what the file holds)",
        "sound.mp4": "no video stream in this file (sound only?); give a video",
        "cut.mp4": "not a whole video (its index, the 'moov atom', is missing: an unfinished download or recording)",
    }
    for name, message in expected.items():
        with pytest.raises(UserError) as caught:
            media.probe(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(caught.value), name


def test_single_image_reads_as_a_one_frame_clip(tmp_path, clip):
    Image.fromarray(clip[0]).save(tmp_path / "one.png")
    assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / "one.png"))), clip[:1])


def test_png_writes_are_atomic_and_lossless(tmp_path, clip):
    media.write_png(tmp_path / "x.png", clip[0], replace=False)
    assert np.array_equal(media.read_image(tmp_path / "x.png"), clip[0])
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_commit_replaces_atomically(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = files.temp_beside(final)
    (tmp / "new.txt").write_text("new")
    files.commit(tmp, final, replace=True)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_outputs_get_ordinary_permissions(tmp_path, clip):
    import os

    old = os.umask(0o022)
    try:
        media.write_frames(tmp_path / "v.mp4", clip[:2])
        media.write_frames(tmp_path / "frames", clip[:2])
    finally:
        os.umask(old)
    assert (tmp_path / "v.mp4").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o755


def test_overwrite_never_replaces_an_input_or_the_current_folder(tmp_path, clip, monkeypatch):
    folder = tmp_path / "work"
    media.write_frames(folder, clip[:1])
    video = folder / "in.mp4"
    video.write_bytes(b"input")
    with pytest.raises(UserError, match="holds the input"):
        media.check_output(folder, overwrite=True, protect=(video,))
    monkeypatch.chdir(folder)
    with pytest.raises(UserError, match="current folder"):
        media.check_output(Path("."), overwrite=True)
    assert video.read_bytes() == b"input"


@pytest.mark.parametrize(("stray", "named"), [("notes.txt", "notes.txt"), ("take.mp4", "take.mp4"), ("holiday/00000.png", "holiday"),
                                              ("images/cat.jpg", "images/cat.jpg"), ("images/deeper/00000.png", "images/deeper")])
def test_overwrite_never_replaces_a_folder_of_the_users_own_files(tmp_path, clip, stray, named):
    folder = tmp_path / "out"
    media.write_frames(folder, clip[:2])
    (folder / stray).parent.mkdir(parents=True, exist_ok=True)
    (folder / stray).write_bytes(b"mine")
    with pytest.raises(UserError) as refused:
        media.write_frames(folder, clip[:3], overwrite=True)
    assert str(refused.value).startswith(f"{folder}: holds {folder / named}, which is not part of an earlier output")
    assert (folder / stray).read_bytes() == b"mine" and len(media.list_frame_files(folder)) == 2


@pytest.mark.parametrize("name", ["thesis.docx", "NOTES"])
def test_overwrite_never_replaces_a_file_where_a_folder_of_frames_goes(tmp_path, clip, name):
    # no output is a file of that name, so it is no earlier output: the user's document stays
    (tmp_path / name).write_text("my thesis")
    with pytest.raises(UserError, match=rf"{name}: is a file where a folder of frames would go, not an earlier output"):
        media.write_frames(tmp_path / name, clip[:2], overwrite=True)
    assert (tmp_path / name).read_text() == "my thesis"
    media.write_frames(tmp_path / "take.mp4", clip[:2])
    media.write_frames(tmp_path / "take.mp4", clip[:3], overwrite=True)  # a video file is an output: replaced
    assert media.probe(tmp_path / "take.mp4").frames == 3


def test_overwrite_replaces_earlier_frames_and_clip_folders(tmp_path, clip):
    frames = tmp_path / "frames"
    media.write_frames(frames, clip[:2])
    for litter in (".DS_Store", "._00000.png", ".00000.png.123-0123abcd.partial.png", ".frames.run.lock"):
        (frames / litter).write_bytes(b"")
    media.write_frames(frames, clip[:3], overwrite=True)
    assert sorted(p.name for p in frames.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    folder = tmp_path / "clip"
    for sub in ("images", "densepose", "masks", "densepose_labels", ".work/full"):
        media.write_frames(folder / sub, clip[:2])
    (folder / ".work" / "notes.json").write_text("{}")  # preprocess --keep-work's own
    (folder / "meta.json").write_text("{}")
    media.write_frames(folder, clip[:1], overwrite=True)
    assert [p.name for p in folder.iterdir()] == ["00000.png"]


def test_output_paths_are_read_as_typed(tmp_path, monkeypatch, clip):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert media.output_path("~/out.mp4") == tmp_path / "out.mp4" and media.output_path("frames/") == Path("frames")
    with pytest.raises(UserError, match='^--labels "": an empty output path'):
        media.output_path("", "--labels")
    with pytest.raises(UserError, match=r"^a\.MP4/: ends in / \(a folder\) but \.MP4 names a video file"):
        media.output_path("a.MP4/")
    media.write_frames(tmp_path / "in.mp4", clip[:2])
    from magicanimate_cli.frames import frames

    frames("~/in.mp4", "~/frames")  # the library as the CLI: ~ is the home folder
    assert len(media.list_frame_files(tmp_path / "frames")) == 2


def test_names_with_colons_are_files_not_protocols(tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    media.write_frames(Path("take:1.mp4"), clip[:2])
    assert media.probe(Path("take:1.mp4")).frames == 2
    assert len(list(media.iter_frames(Path("take:1.mp4")))) == 2


def test_a_concurrent_writer_never_replaces_an_output(tmp_path, clip):
    target = tmp_path / "v.mp4"
    with pytest.raises(UserError, match="appeared while"):
        with media.FrameWriter(target) as writer:
            writer.write(clip[0])
            target.write_bytes(b"the other job's result")
    assert target.read_bytes() == b"the other job's result"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert media.read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


def test_damaged_exif_and_empty_images(tmp_path):
    image = Image.fromarray(np.full((8, 12, 3), 90, np.uint8))
    exif = image.getexif()
    exif[0x010F] = "a camera maker long enough to be stored away from its entry"
    image.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    data = bytearray((tmp_path / "photo.jpg").read_bytes())
    ifd = data.index(b"Exif\x00\x00") + 6 + 8
    data[ifd : ifd + 2] = b"\x7f\x00" if data[ifd - 8] == ord("I") else b"\x00\x7f"  # 127 entries: the block runs out
    (tmp_path / "photo.jpg").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF data" would be printed on stderr
        assert media.read_image(tmp_path / "photo.jpg").shape == (8, 12, 3)
    (tmp_path / "blank.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"blank.png: empty file \(0 bytes\)"):
        media.read_image(tmp_path / "blank.png")


def test_an_input_this_user_may_not_read_says_permission_denied(tmp_path, clip, monkeypatch):
    # it said "noread.png: not a readable image (PermissionError); pass a PNG or JPEG", a sound file
    # "has no sound", a frames folder a bare PermissionError. Tests run as root, which reads
    # anything: the refusals are provoked here (tests/test_reliability.py reads as nobody)
    import os

    media.write_frames(tmp_path / "frames", clip[:2])
    media.write_frames(tmp_path / "v.mp4", clip[:2])
    media.write_png(tmp_path / "noread.png", clip[0], replace=False)
    denied = {tmp_path / "frames", tmp_path / "v.mp4", tmp_path / "noread.png"}
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) not in denied and access(path, mode, **kw))
    for path in denied:
        kind = "list the folder; make it readable (chmod +rx)" if path.is_dir() else "read the file; make it readable (chmod +r)"
        with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: permission denied: this user may not {re.escape(kind)} or run as a user who may$"):
            media.input_path(path)
    with pytest.raises(UserError, match=r"v.mp4: permission denied: this user may not read the file"):
        media.check_audio_source(tmp_path / "v.mp4")
    monkeypatch.setattr(os, "access", access)

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refused)  # a frame inside a folder that may be listed
    with pytest.raises(UserError, match=r"noread.png: permission denied: this user may not read the file; make it readable \(chmod \+r\)"):
        media.read_image(tmp_path / "noread.png")
    monkeypatch.setattr(Path, "iterdir", refused)  # a clip's subfolder
    with pytest.raises(UserError, match=r"frames: permission denied: this user may not list the folder"):
        media.list_frame_files(tmp_path / "frames")


def test_phone_rotation_is_applied_without_a_warning(tmp_path, clip, caplog):
    # a phone video stores its frames sideways with a rotation in its display matrix; ffmpeg turns
    # them upright, and the size every reader uses is the displayed one (width and height swapped)
    media.write_frames(tmp_path / "stored.mp4", clip)
    rotate = ["-display_rotation:v:0", "90", "-i", str(tmp_path / "stored.mp4"), "-c", "copy", str(tmp_path / "phone.mp4")]
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", *rotate], check=True)
    stored = media.read_frames(tmp_path / "stored.mp4").array
    info = media.probe(tmp_path / "phone.mp4")
    upright = media.read_frames(tmp_path / "phone.mp4").array
    assert (info.width, info.height, info.frames) == (32, 48, 6)
    assert np.array_equal(upright, np.rot90(stored, 1, axes=(1, 2)))  # 90° counter-clockwise, pixel for pixel
    assert not [r for r in caplog.records if r.name.startswith("imageio")]  # its "frame size ... is different" notice is dropped


def _ffmpeg(*args) -> None:
    subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def test_a_variable_rate_video_keeps_its_frames_and_duration(tmp_path):
    # a phone's variable rate: half a second at 50 fps, then 25 fps, in a stream whose nominal rate
    # is 50; ffmpeg's own choice of output rate (50) repeated frames and stretched the clip to 2 s
    # of 50 fps labelled with the 32-fps average, i.e. 3.1 s of playback for 2 s of motion
    source = "testsrc2=size=64x48:rate=50:duration=2,select='lt(n\\,25)+not(mod(n\\,2))'"
    _ffmpeg("-f", "lavfi", "-i", source, "-fps_mode", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "vfr.mp4")
    info = media.probe(tmp_path / "vfr.mp4")
    frames = list(media.iter_frames(tmp_path / "vfr.mp4"))
    assert info.frames == len(frames) and abs(len(frames) / info.fps - 2.0) < 0.1  # 62 frames stored: 25, then every other one


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_joined_clip_counts_the_frames_it_is_read_as(tmp_path, container):
    # 1 s at 30 fps, then 1 s at 15 fps, joined without re-encoding: 45 frames stored, read
    # re-timed to the header's rate; every stage that plans by the count (densepose named and
    # estimated only the first 45 of them) must see the frames it will read
    for name, rate in (("a", 30), ("b", 15)):
        _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x48:rate={rate}:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / f"{name}.mp4")
    (tmp_path / "list.txt").write_text("file a.mp4\nfile b.mp4\n")
    _ffmpeg("-f", "concat", "-i", tmp_path / "list.txt", "-c", "copy", tmp_path / f"joined.{container}")
    info = media.probe(tmp_path / f"joined.{container}")
    frames = list(media.iter_frames(tmp_path / f"joined.{container}"))
    assert info.frames == len(frames) > 45 and abs(len(frames) / info.fps - 2.0) < 0.1


def test_a_picture_that_starts_after_its_sound_counts_the_frames_that_fill_its_start(tmp_path):
    # a phone's or a stream-copied cut's picture starting 0.5 s into the file: read from the file's
    # start (frames repeated until the picture begins, in step with the sound), and counted so
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "v.mp4")
    _ffmpeg("-itsoffset", "0.5", "-i", tmp_path / "v.mp4", "-f", "lavfi", "-i", "sine=duration=2.5", "-map", "0:v", "-map", "1:a",
            "-c:v", "copy", "-c:a", "aac", tmp_path / "late.mp4")
    assert media.probe(tmp_path / "late.mp4").frames == len(list(media.iter_frames(tmp_path / "late.mp4"))) > 50


def test_a_constant_rate_video_reads_frame_for_frame(tmp_path):
    # the re-timing to the header's rate changes nothing where the rate is constant (29.97 included)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30000/1001:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "ntsc.mp4")
    _ffmpeg("-i", tmp_path / "ntsc.mp4", "-start_number", "0", tmp_path / "%05d.png")
    decoded = np.stack([media.read_image(f) for f in sorted(tmp_path.glob("*.png"))])
    assert len(decoded) == 30 and np.array_equal(np.stack(list(media.iter_frames(tmp_path / "ntsc.mp4"))), decoded)


def test_an_anamorphic_video_is_read_with_square_pixels(tmp_path, caplog):
    # a camcorder's 1440×1080 with 4:3 pixels shows as 1920×1080; read at its stored size, a
    # centre crop took a square of the screen 33 % too narrow and people came out thin
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x36:rate=25:duration=0.2,setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv444p", tmp_path / "hdv.mp4")
    info = media.probe(tmp_path / "hdv.mp4")
    frames = np.stack(list(media.iter_frames(tmp_path / "hdv.mp4")))
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "hdv.mp4", tmp_path / "f", fps=25) == 5
    assert (info.width, info.height) == (64, 36) and frames.shape == (5, 36, 64, 3)
    assert media.read_image(tmp_path / "f" / "00000.png").shape == (36, 64, 3)
    assert not [r for r in caplog.records if r.name.startswith("imageio")]


def test_a_file_of_two_video_streams_reads_its_first_one_whole(tmp_path):
    # a broadcast capture (or an .avi) holding a small stream, then a larger one: the header gave
    # the larger one's size (ffmpeg's own choice) while the frames decoded were the first one's,
    # cut into frames of the wrong size (one garbled frame, or "truncated or damaged video")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x16:rate=25:duration=0.2", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2",
            "-map", "0", "-map", "1", "-c:v", "mjpeg", tmp_path / "two.avi")
    _ffmpeg("-i", tmp_path / "two.avi", "-map", "0:v:0", "-c", "copy", tmp_path / "first.avi")
    info = media.probe(tmp_path / "two.avi")
    frames = np.stack(list(media.iter_frames(tmp_path / "two.avi")))
    assert (info.width, info.height, info.frames) == (32, 16, 5)
    assert np.array_equal(frames, np.stack(list(media.iter_frames(tmp_path / "first.avi"))))
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "two.avi", tmp_path / "f", fps=25) == 5
    assert media.read_image(tmp_path / "f" / "00000.png").shape == (16, 32, 3)


def test_a_sound_file_with_cover_art_is_no_video(tmp_path):
    # a song's album art is a one-picture "video" stream: it was read as a 1-frame clip of the cover
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-f", "lavfi", "-i", "color=red:size=32x32", "-map", "0", "-map", "1",
            "-frames:v", "1", "-c:a", "aac", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", tmp_path / "song.m4a")
    with pytest.raises(UserError, match=r"song.m4a: no video stream in this file, only a cover picture \(a sound file\?\); give a video$"):
        media.probe(tmp_path / "song.m4a")
    result = CliRunner().invoke(app, ["frames", str(tmp_path / "song.m4a"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "only a cover picture" in result.output
    assert not (tmp_path / "out").exists()


def test_an_interlaced_video_is_read_deinterlaced(tmp_path):
    # a camcorder's 50i: each frame weaves two fields 1/50 s apart; read as stored, a moving bar
    # came out with every other row shifted (combing), into DensePose and the cropped clip alike
    _ffmpeg("-f", "lavfi", "-i", "color=black:s=96x64:r=50:d=0.4", "-f", "lavfi", "-i", "color=white:s=16x64:r=50:d=0.4", "-filter_complex",
            "[0][1]overlay=x='mod(t*300,80)',tinterlace=interleave_top,setfield=tff", "-c:v", "libx264", "-flags", "+ildct+ilme",
            "-x264-params", "tff=1", "-pix_fmt", "yuv420p", tmp_path / "50i.mp4")

    def combing(frames):  # how far each row is from the mean of its neighbours
        rows = np.asarray(frames, dtype=float)[..., 0]
        return np.abs(rows[:, 1:-1] - (rows[:, :-2] + rows[:, 2:]) / 2).mean()

    frames = np.stack(list(media.iter_frames(tmp_path / "50i.mp4")))
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "50i.mp4", tmp_path / "f", fps=25) == len(frames) == media.probe(tmp_path / "50i.mp4").frames == 10
    extracted = np.stack([media.read_image(f) for f in media.list_frame_files(tmp_path / "f")])
    assert combing(frames) < 1 and combing(extracted) < 1  # 32 as stored


def test_an_interrupted_frame_extraction_stops_ffmpeg_at_once(tmp_path):
    # Ctrl-C or SIGTERM (KeyboardInterrupt) while ffmpeg writes the PNGs: it is stopped, not
    # waited for while it decodes the rest of the video into a folder that is thrown away
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=25:duration=80", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            tmp_path / "long.mp4")
    (tmp_path / "f").mkdir()

    def stop(stage, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        media.extract_frames(tmp_path / "long.mp4", tmp_path / "f", fps=25, progress=stop)  # at ffmpeg's first report (0.5 s)
    written = len(list((tmp_path / "f").iterdir()))
    assert written < 2000, f"all {written} frames written after the interrupt"


def test_sound_that_runs_on_after_the_picture_is_no_truncation(tmp_path):
    # the container's duration is its longest stream's: 2 s of sound after 1 s of picture made a
    # complete file look truncated ("promises about 50 frames, and 25 frames decode")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1", "-f", "lavfi", "-i", "sine=duration=2",
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", tmp_path / "talk.mp4")
    assert len(list(media.iter_frames(tmp_path / "talk.mp4"))) == 25
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "talk.mp4", tmp_path / "f", fps=25) == 25
    # the same shortfall in a file whose streams all end early is still a truncation
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "short.mp4")
    media.check_decode(tmp_path / "talk.mp4", 0, "", 25, 50, False, duration=2.0)
    with pytest.raises(UserError, match="short.mp4: truncated or damaged video: its header promises about 50 frames"):
        media.check_decode(tmp_path / "short.mp4", 0, "", 25, 50, False, duration=2.0)


def test_an_iphone_heic_photo_reads_as_rgb(tmp_path, monkeypatch):
    # HEIC is an iPhone camera's default format; Pillow reads it through pillow-heif's plugin
    pillow_heif = pytest.importorskip("pillow_heif")
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[:, :32] = (200, 40, 40)  # a red left half: orientation and colour survive the lossy codec
    pillow_heif.from_pillow(Image.fromarray(photo)).save(str(tmp_path / "IMG_0001.HEIC"), quality=95)  # Pillow's own opener untouched
    read = media.read_image(tmp_path / "IMG_0001.HEIC")
    assert read.shape == (48, 64, 3) and media.is_image(tmp_path / "IMG_0001.HEIC")
    assert np.abs(read.astype(int) - photo).mean() < 4 and read[:, :24, 0].min() > 150 and read[:, 40:, 0].max() < 40
    assert media.read_alpha(tmp_path / "IMG_0001.HEIC") is None
    monkeypatch.setattr(media.images, "_heif_plugin", lambda: False)  # installed without pillow-heif
    with pytest.raises(UserError, match=r"IMG_0001.HEIC: a HEIC/HEIF photo needs pillow-heif; pip install pillow-heif"):
        media.read_image(tmp_path / "IMG_0001.HEIC")


def test_a_colour_key_is_transparency(tmp_path):
    # PNG optimisers store an RGBA image whose alpha is only 0 and 255 as RGB (or grey) with a tRNS
    # colour key: its transparent pixels are composited on white and make its alpha, as RGBA's do
    rgb = np.full((8, 6, 3), 200, np.uint8)
    rgb[:4] = 0
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(0, 0, 0))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png", transparency=0)
    for name in ("rgb.png", "grey.png"):
        image = media.read_image(tmp_path / name)
        assert (image[:4] == 255).all() and (image[4:] == 200).all(), name
        assert media.read_alpha(tmp_path / name)[:, 0].tolist() == [0] * 4 + [255] * 4, name
    Image.fromarray(rgb).save(tmp_path / "opaque.png")
    assert media.read_alpha(tmp_path / "opaque.png") is None


def test_a_heic_photo_under_a_jpeg_name_reads(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(np.full((16, 24, 3), 90, np.uint8))).save(str(tmp_path / "photo.jpg"))
    assert media.read_image(tmp_path / "photo.jpg").shape == (16, 24, 3)


def test_two_frames_of_one_name_are_refused(tmp_path, clip):
    media.write_frames(tmp_path / "f", clip[:3])
    Image.fromarray(clip[1]).save(tmp_path / "f" / "00001.jpg")
    with pytest.raises(UserError, match=r"00001.jpg and 00001.png: two frames of one name in the folder; keep one of them"):
        media.list_frame_files(tmp_path / "f")
    (tmp_path / "f" / "00001.jpg").rename(tmp_path / "f" / "00003.jfif")  # Windows' name for a web JPEG
    assert [p.name for p in media.list_frame_files(tmp_path / "f")] == ["00000.png", "00001.png", "00002.png", "00003.jfif"]


def test_mixed_frame_sizes_on_request(tmp_path, rng):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "0.png")
    Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(folder / "1.png")
    assert [f.shape for f in media.iter_frames(folder, same_size=False)] == [(8, 8, 3), (9, 8, 3)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_ffmpeg_writing_on_its_own_ends_with_a_killed_command(tmp_path):
    # a command started through media.popen (as the frame extraction starts ffmpeg), then kill -9 of
    # the command: the child must not go on (ffmpeg once wrote 280 more frames after its parent died)
    script = "import sys, time; from magicanimate_cli.media import popen; print(popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie left to a parent that does not reap is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_name_that_is_not_utf8_is_refused_in_one_line_naming_its_bytes(tmp_path, clip):
    import os

    from typer.testing import CliRunner

    from magicanimate_cli.cli import app

    good = tmp_path / "good.mp4"
    media.write_frames(good, clip[:2])
    bad = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4"))  # Latin-1 "café": not UTF-8
    os.link(good, bad)
    for args, name in ((["frames", str(bad), "-o", str(tmp_path / "out")], "caf\\xe9.mp4"),
                       (["frames", str(good), "-o", os.fsdecode(bytes(tmp_path) + b"/\xff")], "/\\xff")):
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout)["error"]
        assert error.endswith(f"{name}: the name is not valid UTF-8, which ffmpeg cannot be handed; rename it")
    assert sorted(os.listdir(tmp_path)) == sorted(["good.mp4", os.fsdecode(b"caf\xe9.mp4")])


def test_a_video_made_from_a_video_keeps_its_sound_and_nothing_else_does(tmp_path):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    mute = make_video(tmp_path / "mute.mp4", count=10)
    assert media.kept_sound(dance, tmp_path / "poses.mp4") == {"audio": dance, "sound_kept": True}
    assert media.kept_sound(dance, tmp_path / "poses.MOV") == {"audio": dance, "sound_kept": True}
    assert media.kept_sound(dance, tmp_path / "poses") == {}  # frames hold no sound
    assert media.kept_sound(mute, tmp_path / "poses.mp4") == {}
    assert media.kept_sound(tmp_path / "gone.mp4", tmp_path / "poses.mp4") == {}
    media.write_frames(tmp_path / "frames", np.zeros((2, 8, 8, 3), np.uint8))
    assert media.kept_sound(tmp_path / "frames", tmp_path / "poses.mp4") == {}


def test_a_writer_copies_sound_an_mp4_holds_and_encodes_other_sound_to_aac(tmp_path):
    from preprocess_helpers import add_sound, make_video, read_sound

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=30), 1.2, rising=True)
    wav = tmp_path / "music.wav"
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", str(wav)], check=True)
    assert media.audio_streams(wav) == ["pcm_s16le"]
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    for source, name in ((dance, "copied.mp4"), (wav, "encoded.mp4")):
        with media.FrameWriter(tmp_path / name, 25.0, audio=source) as writer:
            for frame in frames:
                writer.write(frame)
        assert media.audio_streams(tmp_path / name) == ["aac"]
    original, copied = read_sound(dance, 44100), read_sound(tmp_path / "copied.mp4", 44100)
    assert 0.4 <= len(copied) / 44100 < 0.45  # cut to the frames, to the next AAC packet (1024 samples)
    assert np.array_equal(copied[:16384], original[:16384])  # the same samples: not encoded a second time
    music, encoded = read_sound(wav, 44100), read_sound(tmp_path / "encoded.mp4", 44100)
    assert not np.array_equal(encoded[:16384], music[:16384]) and np.abs(encoded[:16384] - music[:16384]).max() < 0.05


def test_sound_that_cannot_be_muxed_costs_only_the_sound_when_it_was_only_kept_along(tmp_path, monkeypatch):
    from magicanimate_cli.errors import InputWarning

    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    monkeypatch.setattr(media.writer, "sound_options", lambda codec, output: {"acodec": "no-such-encoder"})  # a sound ffmpeg cannot put in an mp4
    frames = np.full((4, 16, 16, 3), 90, np.uint8)
    with pytest.warns(InputWarning, match=f"^{tmp_path / 'kept.mp4'}: written without the sound of {dance} \\(ffmpeg: "):
        with media.FrameWriter(tmp_path / "kept.mp4", 25.0, **media.kept_sound(dance, tmp_path / "kept.mp4")) as writer:
            for frame in frames:
                writer.write(frame)
    assert media.audio_streams(tmp_path / "kept.mp4") == [] and len(media.read_frames(tmp_path / "kept.mp4").array) == 4
    with pytest.raises(UserError, match=f"^{dance}: its sound could not be added to {tmp_path / 'asked.mp4'} \\(ffmpeg: "):
        with media.FrameWriter(tmp_path / "asked.mp4", 25.0, audio=dance) as writer:
            for frame in frames:
                writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "kept.mp4"]  # no temporaries left


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _write(path, count: int = 10, **sound) -> Path:
    with media.FrameWriter(path, 25.0, **sound) as writer:
        for _ in range(count):
            writer.write(np.full((16, 16, 3), 90, np.uint8))
    return path


def test_only_the_first_sound_stream_is_kept_in_a_form_its_container_holds(tmp_path):
    from preprocess_helpers import make_video

    picture = make_video(tmp_path / "picture.mp4", count=10)
    _ffmpeg("-i", str(picture), "-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", "-f", "lavfi", "-t", "1", "-i", "sine=frequency=880",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a:0", "aac", "-c:a:1", "pcm_s16le", str(tmp_path / "two.mkv"))
    assert media.audio_streams(tmp_path / "two.mkv") == ["aac", "pcm_s16le"]
    assert media.audio_streams(_write(tmp_path / "one.mp4", **media.kept_sound(tmp_path / "two.mkv", tmp_path / "one.mp4"))) == ["aac"]
    _ffmpeg("-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", "-c:a", "libmp3lame", str(tmp_path / "song.mp3"))
    assert media.audio_streams(_write(tmp_path / "copied.mp4", audio=tmp_path / "song.mp3")) == ["mp3"]  # an mp4 holds MP3
    assert media.audio_streams(_write(tmp_path / "ipod.m4v", audio=tmp_path / "song.mp3")) == ["aac"]  # a .m4v only AAC


def test_sound_is_read_from_the_header_streams_not_from_metadata(tmp_path):
    from preprocess_helpers import make_video

    picture = make_video(tmp_path / "picture.mp4", count=5)
    _ffmpeg("-i", str(picture), "-c", "copy", "-metadata", "title=Stream #2:0: Audio: aac", str(tmp_path / "titled.mp4"))
    assert media.audio_streams(tmp_path / "titled.mp4") == [] and media.kept_sound(tmp_path / "titled.mp4", tmp_path / "out.mp4") == {}


def test_an_empty_sound_stream_gives_no_sound_and_says_so(tmp_path):
    from magicanimate_cli.errors import InputWarning

    from preprocess_helpers import add_sound, make_video, with_empty_sound

    with_empty_sound(add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4), tmp_path / "empty.mkv")
    assert media.audio_streams(tmp_path / "empty.mkv") == ["aac"]  # the header lists it; no packet has sound
    with pytest.raises(UserError, match=f"^{tmp_path / 'empty.mkv'}: its sound could not be added .*no sound came out"):
        _write(tmp_path / "asked.mp4", audio=tmp_path / "empty.mkv")
    with pytest.warns(InputWarning, match="written without the sound"):
        assert media.audio_streams(_write(tmp_path / "kept.mp4", **media.kept_sound(tmp_path / "empty.mkv", tmp_path / "kept.mp4"))) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "empty.mkv", "kept.mp4"]


def test_sound_end_is_where_the_last_packet_of_sound_ends_not_the_headers_duration(tmp_path):
    from preprocess_helpers import add_sound, make_video, with_empty_sound

    picture = make_video(tmp_path / "picture.mp4", count=50)  # 2 s of picture
    short = add_sound(make_video(tmp_path / "short.mp4", count=50), 0.6)  # with 0.6 s of sound: the header says 2 s
    _ffmpeg("-i", str(picture), "-itsoffset", "0.5", "-i", str(short), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mp4"))
    with open(tmp_path / "piped.mkv", "wb") as piped:  # written through a pipe: no duration in its header
        subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-i", str(short), "-c", "copy", "-f", "matroska", "-"], stdout=piped,
                       check=True)
    assert media.sound_end(picture) == 0.0 and media.sound_end(with_empty_sound(short, tmp_path / "empty.mkv")) == 0.0
    assert media.sound_end(short) == pytest.approx(0.6, abs=0.03)
    assert media.sound_end(tmp_path / "late.mp4") == pytest.approx(1.1, abs=0.03)  # from the file's start
    assert media.sound_end(tmp_path / "piped.mkv") == pytest.approx(0.6, abs=0.03)


def test_the_sound_starts_at_the_first_picture_and_lasts_as_long_as_the_frames_written(tmp_path):
    from preprocess_helpers import add_sound, make_video, read_sound, sound_level

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=25), 2.0, rising=True)  # 1 s of picture, 2 s of a rising tone
    _ffmpeg("-itsoffset", "0.5", "-i", str(dance), "-i", str(dance), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mp4"))
    assert media.picture_start(tmp_path / "late.mp4") == pytest.approx(0.5) and media.picture_start(dance) == 0.0
    whole = read_sound(dance)
    kept = read_sound(_write(tmp_path / "kept.mp4", count=20, **media.kept_sound(tmp_path / "late.mp4", tmp_path / "kept.mp4")))
    assert len(kept) / 8000 == pytest.approx(0.8, abs=0.03)  # the 20 frames written, not the header's 25 or the sound's 2 s
    for at in (0.0, 0.3, 0.6):  # the picture's first frame is 0.5 s into the tone
        assert sound_level(kept, at) == pytest.approx(sound_level(whole, 0.5 + at), abs=0.012)


def test_a_full_disk_while_adding_the_sound_is_an_error_even_when_it_was_only_kept_along(tmp_path, monkeypatch):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    monkeypatch.setattr(media.writer, "_run_ffmpeg", lambda stream: "out.mp4: No space left on device")
    with pytest.raises(UserError, match=f"^{tmp_path / 'kept.mp4'}: cannot write it \\(No space left on device\\)"):
        _write(tmp_path / "kept.mp4", **media.kept_sound(dance, tmp_path / "kept.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4"]


def test_reading_and_writing_a_video_leaves_no_pipe_open(tmp_path, monkeypatch):
    # PYTHONWARNINGS=error::ResourceWarning -X dev: ffmpeg's stderr pipe was left to the garbage collector
    import gc
    import warnings

    from preprocess_helpers import make_video

    video = make_video(tmp_path / "v.mp4", count=3)
    header = media.video._header(video)  # imageio-ffmpeg's own header reader: not what this test is about
    gc.collect()
    monkeypatch.setattr(media.video, "_header", lambda path: header)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert len(list(media.iter_frames(video))) == 3
        with media.FrameWriter(tmp_path / "out.mp4") as writer:  # and the encoder's
            writer.write(np.zeros((16, 16, 3), np.uint8))
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_check_output_removes_what_a_killed_run_left_even_when_it_refuses(tmp_path):
    # a run killed mid-way leaves its temporaries (an animation's scratch motion: hundreds of MB);
    # the next run's check removes them, also when it then refuses the output that is there
    import os
    import signal

    final = tmp_path / "out.mp4"
    final.write_bytes(b"earlier")
    child = "import sys, time\nfrom magicanimate_cli import files\nprint(files.temp_beside(sys.argv[1], directory=False), flush=True)\ntime.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.Popen([sys.executable, "-c", child, str(final)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        left = Path(killed.stdout.readline().strip())
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert left.exists()
    with pytest.raises(UserError, match="already exists"):
        media.check_output(final, overwrite=False)
    assert not left.exists() and final.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def _tagged(path: Path, pixels: np.ndarray, icc: bytes | None, fmt: str = "PNG") -> Path:
    Image.fromarray(pixels).save(path, format=fmt, **({"icc_profile": icc} if icc is not None else {}))
    return path


def test_a_photo_with_a_display_p3_profile_reads_in_srgb(tmp_path):
    from PIL import ImageCms

    from preprocess_helpers import display_p3_profile

    pixels = np.array([[[200, 60, 60], [128, 128, 128], [60, 160, 60]], [[255, 255, 255], [0, 0, 0], [40, 80, 200]]], np.uint8)
    shown = media.read_image(_tagged(tmp_path / "p3.png", pixels, display_p3_profile())).astype(int)
    assert shown[0, 0, 0] >= 210 and shown[0, 0, 1] <= 50  # P3's red is redder than sRGB's: more saturated in sRGB
    assert shown[0, 2, 1] > 160 and shown[0, 2, 0] < 30
    assert np.abs(np.diff(shown[0, 1])).max() <= 1 and abs(shown[0, 1, 0] - 128) <= 2  # grey stays grey
    assert shown[1, 0].tolist() == [255, 255, 255] and shown[1, 1].tolist() == [0, 0, 0]
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in (("plain.png", None), ("srgb.png", srgb), ("damaged.png", b"not a profile")):
        assert np.array_equal(media.read_image(_tagged(tmp_path / name, pixels, icc)), pixels), name  # as stored
    p3_jpeg = media.read_image(_tagged(tmp_path / "p3.jpg", np.full((8, 8, 3), (200, 60, 60), np.uint8), display_p3_profile(), "JPEG"))
    assert p3_jpeg[4, 4, 0] >= 210 and p3_jpeg[4, 4, 1] <= 50


RED = (192, 32, 32)


def _hdr_video(path: Path, transfer: str) -> Path:
    # a BT.709 red, (192, 32, 32), put into 10-bit BT.2020 video the way BT.2408 places SDR in HDR (its
    # white at the 203 cd/m² reference white), as a phone records it: HLG (an iPhone's default) or PQ
    # (HDR10), or plain BT.2020 SDR (bt2020-10); 64x48, 3 frames
    _ffmpeg("-f", "lavfi", "-i", "color=c=0xC02020:s=64x48:r=25:d=0.12,format=gbrp", "-vf",
            f"zscale=tin=709:pin=709:min=gbr:rin=full:t={transfer}:p=2020:m=2020_ncl:r=tv:npl=203,format=yuv420p10le",
            "-c:v", "libx264", "-profile:v", "high10", "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", path)
    return path


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084", "bt2020-10"])
def test_hdr_and_wide_gamut_video_reads_in_the_colours_a_player_shows(tmp_path, transfer):
    # read as stored, HLG's red came out (139, 59, 38), PQ's (117, 70, 52), BT.2020's (158, 66, 44):
    # dark and washed out; tone mapped into BT.709 it is the red put in. 4 levels: the 10-bit 4:2:0
    # encoding of a flat colour and the 8-bit rounding (seen: 1)
    if not media.ffmpeg.has_filter("zscale"):
        pytest.skip("the ffmpeg in use has no zscale")
    video = _hdr_video(tmp_path / "phone.mp4", transfer)
    for frame in media.iter_frames(video):
        assert np.abs(frame.astype(int) - RED).max() <= 4, frame[24, 32]
    result = CliRunner().invoke(app, ["frames", str(video), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for frame in map(media.read_image, media.list_frame_files(tmp_path / "out")):
        assert np.abs(frame.astype(int) - RED).max() <= 4, frame[24, 32]
    assert media.encode_cut(video, tmp_path / "cut.mp4", start=None, box=(0, 0, 32, 32), frames=None, fps=25, seconds=0.12) is None
    assert "yuv420p(tv, bt709, " in media.video._header(tmp_path / "cut.mp4")["pix_fmt"]  # an SDR BT.709 video, labelled so
    for frame in media.iter_frames(tmp_path / "cut.mp4"):
        assert np.abs(frame.astype(int) - RED).max() <= 4, frame[16, 16]


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_hdr_video_without_zscale_is_read_as_stored_with_one_warning(tmp_path, monkeypatch):
    # a system ffmpeg built without libzimg: the frames as before, and one warning line naming the file and the fix
    video = _hdr_video(tmp_path / "phone.mp4", "arib-std-b67")
    monkeypatch.setattr(media.ffmpeg, "_filters", lambda binary: frozenset({"scale", "fps"}))
    monkeypatch.setattr(media.colours, "_WARNED_COLOURS", set())
    result = CliRunner().invoke(app, ["frames", str(video), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(said) == 1 and f"{video}: HDR video (HLG) read without tone mapping" in said[0] and "libzimg" in said[0], result.output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        frames = list(media.iter_frames(video))
    assert not [w for w in caught if issubclass(w.category, InputWarning)]  # once per video
    assert np.abs(frames[0].astype(int) - (139, 59, 38)).max() <= 4  # read as stored
