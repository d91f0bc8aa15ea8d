"""media.sound: which sound a video keeps, from where to where (kept_sound, sound_options, picture_start, sound_end)."""

import subprocess

import numpy as np
import pytest

from magicanimate_cli import media

from media_helpers import run_ffmpeg, write_video


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


def test_only_the_first_sound_stream_is_kept_in_a_form_its_container_holds(tmp_path):
    from preprocess_helpers import make_video

    picture = make_video(tmp_path / "picture.mp4", count=10)
    run_ffmpeg("-i", str(picture), "-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", "-f", "lavfi", "-t", "1", "-i", "sine=frequency=880",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a:0", "aac", "-c:a:1", "pcm_s16le", str(tmp_path / "two.mkv"))
    assert media.audio_streams(tmp_path / "two.mkv") == ["aac", "pcm_s16le"]
    assert media.audio_streams(write_video(tmp_path / "one.mp4", **media.kept_sound(tmp_path / "two.mkv", tmp_path / "one.mp4"))) == ["aac"]
    run_ffmpeg("-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", "-c:a", "libmp3lame", str(tmp_path / "song.mp3"))
    assert media.audio_streams(write_video(tmp_path / "copied.mp4", audio=tmp_path / "song.mp3")) == ["mp3"]  # an mp4 holds MP3
    assert media.audio_streams(write_video(tmp_path / "ipod.m4v", audio=tmp_path / "song.mp3")) == ["aac"]  # a .m4v only AAC


def test_sound_is_read_from_the_header_streams_not_from_metadata(tmp_path):
    from preprocess_helpers import make_video

    picture = make_video(tmp_path / "picture.mp4", count=5)
    run_ffmpeg("-i", str(picture), "-c", "copy", "-metadata", "title=Stream #2:0: Audio: aac", str(tmp_path / "titled.mp4"))
    assert media.audio_streams(tmp_path / "titled.mp4") == [] and media.kept_sound(tmp_path / "titled.mp4", tmp_path / "out.mp4") == {}


def test_sound_end_is_where_the_last_packet_of_sound_ends_not_the_headers_duration(tmp_path):
    from preprocess_helpers import add_sound, make_video, with_empty_sound

    picture = make_video(tmp_path / "picture.mp4", count=50)  # 2 s of picture
    short = add_sound(make_video(tmp_path / "short.mp4", count=50), 0.6)  # with 0.6 s of sound: the header says 2 s
    run_ffmpeg("-i", str(picture), "-itsoffset", "0.5", "-i", str(short), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mp4"))
    with open(tmp_path / "piped.mkv", "wb") as piped:  # written through a pipe: no duration in its header
        subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-i", str(short), "-c", "copy", "-f", "matroska", "-"], stdout=piped,
                       check=True)
    assert media.sound_end(picture) == 0.0 and media.sound_end(with_empty_sound(short, tmp_path / "empty.mkv")) == 0.0
    assert media.sound_end(short) == pytest.approx(0.6, abs=0.03)
    assert media.sound_end(tmp_path / "late.mp4") == pytest.approx(1.1, abs=0.03)  # from the file's start
    assert media.sound_end(tmp_path / "piped.mkv") == pytest.approx(0.6, abs=0.03)


def test_the_sound_is_kept_in_step_with_the_frames_read_and_lasts_as_long_as_the_frames_written(tmp_path):
    # a picture that starts after its sound (a stream-copied cut, a phone's edit list) is read from the
    # file's start, its first picture repeated until it begins: the kept sound started at that first
    # picture, and so played 0.5 s early against every frame (the readers' and the writer's conventions apart)
    from preprocess_helpers import add_sound, make_video, read_sound, sound_level

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=25, moving=True), 2.0, rising=True)  # 1 s of picture, 2 s of a rising tone
    run_ffmpeg("-itsoffset", "0.5", "-i", str(dance), "-i", str(dance), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mp4"))
    assert media.picture_start(tmp_path / "late.mp4") == pytest.approx(0.5) and media.picture_start(dance) == 0.0
    frames = list(media.iter_frames(tmp_path / "late.mp4"))
    first = next(media.iter_frames(dance))
    assert all(np.array_equal(frame, first) for frame in frames[:12]) and len(frames) >= 37  # 0.5 s of its first picture, then the rest
    with media.FrameWriter(tmp_path / "kept.mp4", 25.0, **media.kept_sound(tmp_path / "late.mp4", tmp_path / "kept.mp4")) as writer:
        for frame in frames[:30]:
            writer.write(frame)
    whole, kept = read_sound(dance), read_sound(tmp_path / "kept.mp4")
    assert len(kept) / 8000 == pytest.approx(30 / 25, abs=0.03)  # the 30 frames written, not the picture's 1.5 s or the sound's 2 s
    for at in (0.0, 0.3, 0.6, 1.0):  # frame k is the file's time k / 25, and so is its sound
        assert sound_level(kept, at) == pytest.approx(sound_level(whole, at), abs=0.012)
