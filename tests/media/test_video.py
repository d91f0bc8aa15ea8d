"""media.video: reading videos and frame folders (probe, iter_frames, read_frames, check_decode, extract_frames)."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError

from media_helpers import run_ffmpeg


def test_frames_of_different_sizes_are_refused(tmp_path, rng):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "0.png")
    Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(folder / "1.png")
    with pytest.raises(UserError, match="1.png: size"):
        list(media.iter_frames(folder))


def test_mixed_frame_sizes_on_request(tmp_path, rng):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "0.png")
    Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(folder / "1.png")
    assert [f.shape for f in media.iter_frames(folder, same_size=False)] == [(8, 8, 3), (9, 8, 3)]


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
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1", "-c:v", "libx264", tmp_path / "whole.mp4")  # its index last
    data = (tmp_path / "whole.mp4").read_bytes()
    assert data.find(b"moov") > len(data) // 2
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("these are notes, not a video\n" * 20)
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", tmp_path / "sound.mp4")
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


def test_names_with_colons_are_files_not_protocols(tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    media.write_frames(Path("take:1.mp4"), clip[:2])
    assert media.probe(Path("take:1.mp4")).frames == 2
    assert len(list(media.iter_frames(Path("take:1.mp4")))) == 2


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


def test_a_variable_rate_video_keeps_its_frames_and_duration(tmp_path):
    # a phone's variable rate: half a second at 50 fps, then 25 fps, in a stream whose nominal rate
    # is 50; ffmpeg's own choice of output rate (50) repeated frames and stretched the clip to 2 s
    # of 50 fps labelled with the 32-fps average, i.e. 3.1 s of playback for 2 s of motion
    source = "testsrc2=size=64x48:rate=50:duration=2,select='lt(n\\,25)+not(mod(n\\,2))'"
    run_ffmpeg("-f", "lavfi", "-i", source, "-fps_mode", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "vfr.mp4")
    info = media.probe(tmp_path / "vfr.mp4")
    frames = list(media.iter_frames(tmp_path / "vfr.mp4"))
    assert info.frames == len(frames) and abs(len(frames) / info.fps - 2.0) < 0.1  # 62 frames stored: 25, then every other one


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_joined_clip_counts_the_frames_it_is_read_as(tmp_path, container):
    # 1 s at 30 fps, then 1 s at 15 fps, joined without re-encoding: 45 frames stored, read
    # re-timed to the header's rate; every stage that plans by the count (densepose named and
    # estimated only the first 45 of them) must see the frames it will read
    for name, rate in (("a", 30), ("b", 15)):
        run_ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x48:rate={rate}:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / f"{name}.mp4")
    (tmp_path / "list.txt").write_text("file a.mp4\nfile b.mp4\n")
    run_ffmpeg("-f", "concat", "-i", tmp_path / "list.txt", "-c", "copy", tmp_path / f"joined.{container}")
    info = media.probe(tmp_path / f"joined.{container}")
    frames = list(media.iter_frames(tmp_path / f"joined.{container}"))
    assert info.frames == len(frames) > 45 and abs(len(frames) / info.fps - 2.0) < 0.1


def test_a_picture_that_starts_after_its_sound_counts_the_frames_that_fill_its_start(tmp_path):
    # a phone's or a stream-copied cut's picture starting 0.5 s into the file: read from the file's
    # start (frames repeated until the picture begins, in step with the sound), and counted so
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "v.mp4")
    run_ffmpeg("-itsoffset", "0.5", "-i", tmp_path / "v.mp4", "-f", "lavfi", "-i", "sine=duration=2.5", "-map", "0:v", "-map", "1:a",
            "-c:v", "copy", "-c:a", "aac", tmp_path / "late.mp4")
    assert media.probe(tmp_path / "late.mp4").frames == len(list(media.iter_frames(tmp_path / "late.mp4"))) > 50


def test_a_constant_rate_video_reads_frame_for_frame(tmp_path):
    # the re-timing to the header's rate changes nothing where the rate is constant (29.97 included)
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30000/1001:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "ntsc.mp4")
    run_ffmpeg("-i", tmp_path / "ntsc.mp4", "-start_number", "0", tmp_path / "%05d.png")
    decoded = np.stack([media.read_image(f) for f in sorted(tmp_path.glob("*.png"))])
    assert len(decoded) == 30 and np.array_equal(np.stack(list(media.iter_frames(tmp_path / "ntsc.mp4"))), decoded)


def test_an_ntsc_film_rate_is_read_exactly_not_at_the_rounded_rate_in_its_header(tmp_path):
    # ffmpeg's header says 23.98 fps for 24000/1001 (23.976...); read at 23.98, every 2 min 5 s a frame
    # was repeated: these 3100 frames (2 min 9 s) read as 3101, and the count and the cuts followed
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=16x16:rate=24000/1001", "-frames:v", "3100", "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", tmp_path / "film.mp4")  # fmt: skip
    info = media.probe(tmp_path / "film.mp4")
    assert info.fps == pytest.approx(24000 / 1001, rel=1e-9) and info.frames == 3100
    assert sum(1 for _ in media.iter_frames(tmp_path / "film.mp4")) == 3100
    from magicanimate_cli.media.video import exact_rate

    assert [exact_rate(r) for r in (29.97, 59.94, 12.5, 25.0, 25.03, 33.33, None)] == [30000 / 1001, 60000 / 1001, 12.5, 25.0, 25.03, 33.33, None]


def test_an_anamorphic_video_is_read_with_square_pixels(tmp_path, caplog):
    # a camcorder's 1440×1080 with 4:3 pixels shows as 1920×1080; read at its stored size, a
    # centre crop took a square of the screen 33 % too narrow and people came out thin
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x36:rate=25:duration=0.2,setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv444p", tmp_path / "hdv.mp4")
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
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x16:rate=25:duration=0.2", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.2",
            "-map", "0", "-map", "1", "-c:v", "mjpeg", tmp_path / "two.avi")
    run_ffmpeg("-i", tmp_path / "two.avi", "-map", "0:v:0", "-c", "copy", tmp_path / "first.avi")
    info = media.probe(tmp_path / "two.avi")
    frames = np.stack(list(media.iter_frames(tmp_path / "two.avi")))
    assert (info.width, info.height, info.frames) == (32, 16, 5)
    assert np.array_equal(frames, np.stack(list(media.iter_frames(tmp_path / "first.avi"))))
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "two.avi", tmp_path / "f", fps=25) == 5
    assert media.read_image(tmp_path / "f" / "00000.png").shape == (16, 32, 3)


def test_a_sound_file_with_cover_art_is_no_video(tmp_path):
    # a song's album art is a one-picture "video" stream: it was read as a 1-frame clip of the cover
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-f", "lavfi", "-i", "color=red:size=32x32", "-map", "0", "-map", "1",
            "-frames:v", "1", "-c:a", "aac", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", tmp_path / "song.m4a")
    with pytest.raises(UserError, match=r"song.m4a: no video stream in this file, only a cover picture \(a sound file\?\); give a video$"):
        media.probe(tmp_path / "song.m4a")
    result = CliRunner().invoke(app, ["frames", str(tmp_path / "song.m4a"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "only a cover picture" in result.output
    assert not (tmp_path / "out").exists()


def test_an_interlaced_video_is_read_deinterlaced(tmp_path):
    # a camcorder's 50i: each frame weaves two fields 1/50 s apart; read as stored, a moving bar
    # came out with every other row shifted (combing), into DensePose and the cropped clip alike
    run_ffmpeg("-f", "lavfi", "-i", "color=black:s=96x64:r=50:d=0.4", "-f", "lavfi", "-i", "color=white:s=16x64:r=50:d=0.4", "-filter_complex",
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
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=25:duration=80", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
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
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1", "-f", "lavfi", "-i", "sine=duration=2",
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", tmp_path / "talk.mp4")
    assert len(list(media.iter_frames(tmp_path / "talk.mp4"))) == 25
    (tmp_path / "f").mkdir()
    assert media.extract_frames(tmp_path / "talk.mp4", tmp_path / "f", fps=25) == 25
    # the same shortfall in a file whose streams all end early is still a truncation
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", tmp_path / "short.mp4")
    media.check_decode(tmp_path / "talk.mp4", 0, "", 25, 50, False, duration=2.0)
    with pytest.raises(UserError, match="short.mp4: truncated or damaged video: its header promises about 50 frames"):
        media.check_decode(tmp_path / "short.mp4", 0, "", 25, 50, False, duration=2.0)


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


def test_pixel_format_names_how_the_decoded_stream_stores_its_pixels(tmp_path):
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=5:duration=0.4", "-c:v", "ffv1", "-pix_fmt", "bgr0", tmp_path / "rgb.mkv")
    # a cover picture first, then the video readers decode: the format is the video's, not the picture's
    Image.new("RGB", (96, 96), (200, 0, 0)).save(tmp_path / "cover.png")  # larger: ffmpeg alone would pick it
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=5:duration=0.4", "-i", tmp_path / "cover.png", "-map", "1", "-map", "0",
               "-c:v:0", "mjpeg", "-disposition:v:0", "attached_pic", "-c:v:1", "libx264", "-pix_fmt", "yuv444p", tmp_path / "covered.mp4")
    assert media.pixel_format(tmp_path / "rgb.mkv") == "bgr0"
    assert media.pixel_format(tmp_path / "covered.mp4") == "yuv444p"
    with pytest.raises(UserError, match="no such file"):
        media.pixel_format(tmp_path / "missing.mp4")


def test_a_16bit_video_reads_its_stored_values_with_16_bits(tmp_path, rng):
    values = rng.integers(0, 65536, (3, 24, 32, 3), dtype=np.uint16)
    values[0, :2, :2] = [[1, 255, 256], [257, 65534, 65535]]  # (which 8 bits cannot tell apart)
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", "32x24", "-framerate", "5",
                    "-i", "-", "-c:v", "ffv1", "-pix_fmt", "rgb48le", str(tmp_path / "deep.mkv")], input=values.astype("<u2").tobytes(), check=True)  # fmt: skip
    got = list(media.iter_frames(tmp_path / "deep.mkv", bits=16))
    assert all(frame.dtype == np.uint16 for frame in got) and np.array_equal(np.stack(got), values)
    assert np.stack(list(media.iter_frames(tmp_path / "deep.mkv"))).dtype == np.uint8  # the default: as shown, 8 bits


@pytest.mark.parametrize("fps", [30.0, 24.0, 15.0])
def test_a_gif_at_a_rate_its_hundredths_cannot_hold_reads_frame_for_frame_at_that_rate(tmp_path, fps):
    # delays of 3, 3, 4 hundredths (30 fps): ffmpeg labels the GIF 33.33 fps, which repeated every third frame
    clip = np.zeros((40, 16, 16, 3), np.uint8)
    clip[..., 0] = np.arange(40, dtype=np.uint8)[:, None, None] * 6
    media.write_frames(tmp_path / "a.gif", clip, fps=fps)
    info = media.probe(tmp_path / "a.gif")
    back = np.stack(list(media.iter_frames(tmp_path / "a.gif")))
    assert (info.fps, info.frames) == (fps, 40)
    assert np.array_equal(back, clip)


@pytest.mark.parametrize("fps", [25.0, 10.0])
@pytest.mark.parametrize("count", [2, 3, 4, 10])
def test_a_short_gif_keeps_its_rate(tmp_path, fps, count):
    # 3 or 4 frames of 4 hundredths fit 24 fps too (4.17 rounded): a 25 fps GIF read as 24, as ffmpeg does not
    clip = np.zeros((count, 16, 16, 3), np.uint8)
    clip[..., 2] = np.arange(count, dtype=np.uint8)[:, None, None] * 20
    with media.FrameWriter(tmp_path / "short.gif", fps=fps) as writer:
        for frame in clip:
            writer.write(frame)
    info = media.probe(tmp_path / "short.gif")
    assert (info.fps, info.frames) == (fps, count)
    assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / "short.gif"))), clip)


@pytest.mark.parametrize(("fps", "count"), [(25.0, 40), (30.0, 40), (30.0, 10)])
def test_an_animated_webp_is_a_video_read_frame_for_frame_at_its_rate(tmp_path, rng, fps, count):
    # a DensePose render written as -o poses.webp (lossless, 40 ms or 33, 33, 34 ms a frame) was read as
    # one image, its first frame; ffmpeg labels 10 frames at 30 fps 29.97
    from magicanimate_cli.densepose.palette import PALETTE

    labels = rng.integers(0, len(PALETTE), (count, 9, 13))
    render = PALETTE[np.repeat(np.repeat(labels, 4, axis=1), 4, axis=2)]
    media.write_frames(tmp_path / "poses.webp", render, fps=fps)
    info = media.probe(tmp_path / "poses.webp")
    assert (info.width, info.height, info.fps, info.frames) == (52, 36, fps, count)
    assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / "poses.webp"))), render)
    assert np.array_equal(media.read_frames(tmp_path / "poses.webp").array, render)


def test_a_still_webp_is_one_image(tmp_path, clip):
    Image.fromarray(clip[0]).save(tmp_path / "photo.webp", lossless=True)
    assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / "photo.webp"))), clip[:1])
    assert np.array_equal(media.read_image(tmp_path / "photo.webp"), clip[0])


def test_an_ffmpeg_that_cannot_decode_an_animated_webp_says_so_and_the_fix(tmp_path, clip, monkeypatch):
    # before FFmpeg 9.0 it skips the ANIM and ANMF chunks and fails on "image data not found"
    media.write_frames(tmp_path / "anim.webp", clip[:3], fps=25)
    monkeypatch.setattr(media.ffmpeg, "_decoders", lambda binary: frozenset({"webp", "h264"}))
    with pytest.raises(UserError) as refused:
        media.probe(tmp_path / "anim.webp")
    assert str(refused.value).startswith(f"{tmp_path / 'anim.webp'}: an animated WebP, which the ffmpeg in use (")
    assert "cannot decode (FFmpeg 9.0 or later can); " in str(refused.value)
    result = CliRunner().invoke(app, ["frames", str(tmp_path / "anim.webp"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "FFmpeg 9.0 or later" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.webp"]


def test_a_cut_off_animated_webp_is_refused_unless_allowed(tmp_path, rng):
    # cut between two frames, ffmpeg decodes the frames a cut-off download holds without a word: its RIFF size says more
    from magicanimate_cli.densepose.palette import PALETTE

    media.write_frames(tmp_path / "whole.webp", PALETTE[rng.integers(0, len(PALETTE), (30, 24, 32))], fps=25)
    data = (tmp_path / "whole.webp").read_bytes()
    end = data.index(b"ANMF", len(data) // 2)  # where a frame starts
    (tmp_path / "cut.webp").write_bytes(data[:end])
    with pytest.raises(UserError, match=f"^{tmp_path / 'cut.webp'}: truncated or damaged video: its header promises {len(data)} bytes and "
                                        f"{end} are there, and [0-9]+ frames decode"):
        list(media.iter_frames(tmp_path / "cut.webp"))
    assert 0 < len(list(media.iter_frames(tmp_path / "cut.webp", allow_truncated=True))) < 30
    assert len(list(media.iter_frames(tmp_path / "whole.webp"))) == 30


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0])
def test_an_animation_with_frames_held_still_reads_frame_for_frame_at_its_rate(tmp_path, suffix, fps):
    # libwebp stores neighbouring identical frames as one longer frame (frames 1-4 below: one frame
    # of 4/fps s): read by frames over duration, the clip came back at a third of its rate, 3 frames short
    labels = [0, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7]
    clip = np.zeros((len(labels), 16, 16, 3), np.uint8)
    clip[..., 1] = np.array(labels, np.uint8)[:, None, None] * 20
    media.write_frames(tmp_path / f"a{suffix}", clip, fps=fps)
    info = media.probe(tmp_path / f"a{suffix}")
    assert (info.fps, info.frames) == (fps, len(labels))
    assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / f"a{suffix}"))), clip)


def test_reading_a_header_leaves_no_file_open(tmp_path, clip):
    # imageio-ffmpeg's reader closes its ffmpeg's pipes only while ffmpeg still runs: a short video's
    # (or one it cannot read) has ended by then, and every probe left two open files (ResourceWarning)
    import gc
    import warnings

    media.write_frames(tmp_path / "short.mp4", clip, fps=25)
    media.write_frames(tmp_path / "long.mp4", np.repeat(clip, 20, axis=0), fps=25)  # more than a pipe holds: ffmpeg still runs
    (tmp_path / "bad.mp4").write_bytes(b"\0" * 5000)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert media.probe(tmp_path / "short.mp4").frames == 6 and media.probe(tmp_path / "long.mp4").frames == 120
        assert media.pixel_format(tmp_path / "short.mp4") == "yuv420p"
        with pytest.raises(UserError, match="not a video"):
            media.probe(tmp_path / "bad.mp4")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
