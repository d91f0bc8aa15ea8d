"""media.writer: FrameWriter (videos, frame folders, the sound it muxes in), write_frames, atomic commits."""

import subprocess
import warnings

import numpy as np
import pytest

from magicanimate_cli import media
from magicanimate_cli.errors import UserError

from media_helpers import write_video


def test_frames_folder_round_trip_is_lossless(tmp_path, clip):
    media.write_frames(tmp_path / "frames", clip)
    assert [p.name for p in media.list_frame_files(tmp_path / "frames")] == [f"{i:05d}.png" for i in range(6)]
    frames = media.read_frames(tmp_path / "frames")
    assert np.array_equal(frames.array, clip) and frames.fps == 25.0


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


def test_a_concurrent_writer_never_replaces_an_output(tmp_path, clip):
    target = tmp_path / "v.mp4"
    with pytest.raises(UserError, match="appeared while"):
        with media.FrameWriter(target) as writer:
            writer.write(clip[0])
            target.write_bytes(b"the other job's result")
    assert target.read_bytes() == b"the other job's result"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


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


def test_an_empty_sound_stream_gives_no_sound_and_says_so(tmp_path):
    from magicanimate_cli.errors import InputWarning

    from preprocess_helpers import add_sound, make_video, with_empty_sound

    with_empty_sound(add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4), tmp_path / "empty.mkv")
    assert media.audio_streams(tmp_path / "empty.mkv") == ["aac"]  # the header lists it; no packet has sound
    with pytest.raises(UserError, match=f"^{tmp_path / 'empty.mkv'}: its sound could not be added .*no sound came out"):
        write_video(tmp_path / "asked.mp4", audio=tmp_path / "empty.mkv")
    with pytest.warns(InputWarning, match="written without the sound"):
        assert media.audio_streams(write_video(tmp_path / "kept.mp4", **media.kept_sound(tmp_path / "empty.mkv", tmp_path / "kept.mp4"))) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "empty.mkv", "kept.mp4"]


def test_a_full_disk_while_adding_the_sound_is_an_error_even_when_it_was_only_kept_along(tmp_path, monkeypatch):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    monkeypatch.setattr(media.writer, "_run_ffmpeg", lambda stream: "out.mp4: No space left on device")
    with pytest.raises(UserError, match=f"^{tmp_path / 'kept.mp4'}: cannot write it \\(No space left on device\\)"):
        write_video(tmp_path / "kept.mp4", **media.kept_sound(dance, tmp_path / "kept.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4"]


def _animation_frames(path):
    """The frames of a GIF or an animated WebP as browsers decode them (libwebp, through Pillow),
    with its loop count and frame durations (ms)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        frames = np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
        return frames, image.info.get("loop")


def _densepose_render(rng, count=12, height=37, width=51):
    from magicanimate_cli.densepose.palette import PALETTE

    labels = rng.integers(0, len(PALETTE), (count, height // 4 + 1, width // 4 + 1))
    return PALETTE[np.repeat(np.repeat(labels, 4, axis=1), 4, axis=2)[:, :height, :width]]  # all 25 viridis colours, odd sides


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_a_densepose_render_comes_back_from_a_gif_or_a_webp_byte_for_byte_looping_forever(tmp_path, rng, suffix):
    render = _densepose_render(rng)
    assert len(np.unique(render.reshape(-1, 3), axis=0)) == 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # odd sides are kept: nothing to say
        with media.FrameWriter(tmp_path / f"poses{suffix}", 25.0) as writer:
            for frame in render:
                writer.write(frame)
    assert writer.written_size == (51, 37)
    frames, loop = _animation_frames(tmp_path / f"poses{suffix}")
    assert np.array_equal(frames, render) and loop == 0
    if suffix == ".gif":  # as the package reads it back too, at its rate
        assert np.array_equal(np.stack(list(media.iter_frames(tmp_path / "poses.gif"))), render)
        assert media.probe(tmp_path / "poses.gif").fps == 25.0
    assert [p.name for p in tmp_path.iterdir()] == [f"poses{suffix}"]  # the stored frames and the palette are gone


def test_a_clip_of_many_colours_becomes_a_close_gif_and_a_lossy_webp(tmp_path):
    from magicanimate_cli.densepose.palette import PALETTE

    t, y, x = np.mgrid[:8, :37, :51]
    clip = np.stack([x * 5, y * 7, 255 - x * 2 - y * 3 + t * 4], axis=-1).astype(np.uint8)  # smooth gradients, 1000s of colours
    media.write_frames(tmp_path / "noisy.gif", clip)
    media.write_frames(tmp_path / "noisy.webp", clip)
    media.write_frames(tmp_path / "flat.webp", PALETTE[np.zeros((8, 37, 51), int)])
    for name, error in (("noisy.gif", 8), ("noisy.webp", 4)):  # 255 colours of 15096 (dithered), or VP8: close, not exact
        frames, loop = _animation_frames(tmp_path / name)
        assert frames.shape == clip.shape and loop == 0 and 0 < np.abs(frames.astype(int) - clip).mean() < error
    assert b"VP8L" in (tmp_path / "flat.webp").read_bytes() and b"VP8 " in (tmp_path / "noisy.webp").read_bytes()  # lossless, lossy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.webp", "noisy.gif", "noisy.webp"]


def test_a_webm_is_vp9_of_the_frames_size_and_gets_its_sound_as_opus(tmp_path, rng):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=30), 1.2)
    wav = tmp_path / "music.wav"
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-t", "1", "-i", "sine=frequency=440", str(wav)], check=True)
    clip = rng.integers(0, 256, (10, 47, 63, 3), dtype=np.uint8)
    for name, sound in (("kept.webm", media.kept_sound(dance, tmp_path / "kept.webm")), ("asked.webm", {"audio": wav})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # VP9 takes odd sides: no padding, nothing to say
            with media.FrameWriter(tmp_path / name, 25.0, **sound) as writer:
                for frame in clip:
                    writer.write(frame)
        info = media.probe(tmp_path / name)
        assert (info.width, info.height, info.frames, info.fps) == (63, 47, 10, 25.0) == (*writer.written_size, 10, 25.0)
        assert "Video: vp9" in media.ffmpeg._ffmpeg_report(tmp_path / name)
        assert media.audio_streams(tmp_path / name) == ["opus"] and media.sound_end(tmp_path / name) == pytest.approx(0.4, abs=0.03)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asked.webm", "dance.mp4", "kept.webm", "music.wav"]


@pytest.mark.parametrize("suffix, kind", [(".gif", "a GIF"), (".webp", "an animated WebP")])
def test_sound_asked_for_a_gif_or_webp_is_refused_at_once_and_sound_kept_along_is_dropped(tmp_path, suffix, kind):
    from preprocess_helpers import add_sound, make_video

    dance = add_sound(make_video(tmp_path / "dance.mp4", count=10), 0.4)
    with pytest.raises(UserError, match=f"^{tmp_path / ('out' + suffix)}: {kind} holds no sound; write out.mp4 or out.webm to give it --audio$"):
        media.FrameWriter(tmp_path / f"out{suffix}", 25.0, audio=dance)
    assert media.kept_sound(dance, tmp_path / f"out{suffix}") == {}  # dropped as a frames folder drops it: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_video(tmp_path / f"out{suffix}", audio=dance, sound_kept=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", f"out{suffix}"]


@pytest.mark.parametrize("suffix, encoder", [(".gif", "gif"), (".webm", "libvpx-vp9"), (".webp", "libwebp_anim")])
def test_an_ffmpeg_without_the_encoder_is_refused_before_any_work(tmp_path, monkeypatch, suffix, encoder):
    listed = media.ffmpeg._encoders(media.ffmpeg_binary())
    monkeypatch.setattr(media.ffmpeg, "_encoders", lambda binary: listed - {encoder})  # a system ffmpeg built without it
    with pytest.raises(UserError, match=f"^{tmp_path / ('out' + suffix)}: the ffmpeg in use \\(.*\\) has no {encoder} encoder, which "
                                        f"{suffix} needs; write out.mp4 instead"):
        media.FrameWriter(tmp_path / f"out{suffix}")
    write_video(tmp_path / "out.mp4")  # what it has is still written
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_gif_or_webp_is_written_atomically(tmp_path, clip):
    for name in ("v.gif", "v.webp", "v.webm"):
        with pytest.raises(RuntimeError):
            with media.FrameWriter(tmp_path / name) as writer:
                writer.write(clip[0])
                raise RuntimeError("cut off")
    assert list(tmp_path.iterdir()) == []
    media.write_frames(tmp_path / "v.gif", clip[:2])
    with pytest.raises(UserError, match="already exists"):
        media.write_frames(tmp_path / "v.gif", clip)
    media.write_frames(tmp_path / "v.gif", clip, overwrite=True)
    assert len(_animation_frames(tmp_path / "v.gif")[0]) == len(clip) and [p.name for p in tmp_path.iterdir()] == ["v.gif"]


@pytest.mark.parametrize("name, sound", [("out.webm", "music.opus"), ("out.mkv", "dance.mp4")])
def test_a_sound_cut_at_a_time_for_a_webm_or_an_mkv_starts_with_the_first_frame(tmp_path, name, sound):
    from preprocess_helpers import add_sound, make_video

    add_sound(make_video(tmp_path / "dance.mp4", count=75), 3.0)  # AAC, which an MKV would hold as it is
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-t", "3", "-i", "sine=frequency=440",
                    "-c:a", "libopus", str(tmp_path / "music.opus")], check=True)  # fmt: skip
    write_video(tmp_path / name, count=25, audio=tmp_path / sound, audio_start=1.5)  # 1 s from 1.5 s on
    info = media.probe(tmp_path / name)
    assert media.picture_start(tmp_path / name) == 0 and info.frames == 25  # a copy from the packet before 1.5 s delayed the picture
    assert media.sound_end(tmp_path / name) == pytest.approx(1.0, abs=0.03)


def test_a_gif_faster_than_browsers_play_is_written_at_50_fps_with_every_frame_and_a_warning(tmp_path, clip):
    from PIL import Image, ImageSequence

    from magicanimate_cli.errors import InputWarning

    with pytest.warns(InputWarning, match=f"^{tmp_path / 'fast.gif'}: a GIF plays at most 50 fps .* its 60 fps frames are written at 50 fps, "
                                          "every one, playing 1.2× slower; write fast.webp or fast.webm to keep the rate$"):
        media.write_frames(tmp_path / "fast.gif", clip, fps=60)
    with Image.open(tmp_path / "fast.gif") as image:
        delays = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert delays == [20] * len(clip)  # never 10 ms, which browsers play as 100 ms
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 50 fps plays as it is: nothing to say
        media.write_frames(tmp_path / "fifty.gif", clip, fps=50)
        media.write_frames(tmp_path / "fast.webp", clip, fps=60)  # a WebP's delays are in ms


_ENCODING_WRITER = """
import sys
import numpy as np
from magicanimate_cli import media
with media.FrameWriter(sys.argv[1]) as writer:
    writer.write(np.zeros((8, 8, 3), np.uint8))
    media.ffmpeg.ffmpeg_binary = media.writer.ffmpeg_binary = lambda: sys.argv[2]  # an ffmpeg that takes its time over the GIF
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="the kernel's parent-death signal; /proc")
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
def test_the_ffmpeg_encoding_a_gif_ends_with_a_writer_that_is_killed_or_interrupted(tmp_path, stop):
    import contextlib
    import os
    import signal
    import sys
    import time

    slow = tmp_path / "slow-ffmpeg"
    slow.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nexec sleep 60\n")
    slow.chmod(0o755)
    child = subprocess.Popen([sys.executable, "-c", _ENCODING_WRITER, str(tmp_path / "out.gif"), str(slow)], stderr=subprocess.DEVNULL)
    encoder = None
    try:
        for _ in range(300):
            if (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text().strip():
                encoder = int((tmp_path / "pid").read_text())
                break
            time.sleep(0.05)
        assert encoder is not None, "the encoding never started"
        child.send_signal(getattr(signal, stop))
        child.wait(timeout=30)
        for _ in range(100):  # gone (or a zombie waiting for its new parent)
            try:
                with open(f"/proc/{encoder}/stat") as stat:
                    if stat.read().rpartition(")")[2].split()[0] in "ZX":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"ffmpeg went on after the writer was stopped with {stop}")
    finally:
        child.kill()
        child.wait()
        if encoder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(encoder, signal.SIGKILL)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_a_webp_of_held_frames_stays_an_animation_of_every_frame_at_its_rate(tmp_path, rng, fps):
    from magicanimate_cli.densepose.palette import PALETTE

    clips = {
        "empty.webp": np.full((10, 32, 48, 3), 90, np.uint8),  # the masks of an empty scene: libwebp made it one still image
        "held.webp": np.repeat(rng.integers(0, 256, (1, 32, 48, 3), dtype=np.uint8), 10, axis=0),  # a pose held, lossy
        "two.webp": PALETTE[np.repeat([3, 7], 5)][:, None, None].repeat(32, 1).repeat(48, 2),  # two runs: 2 frames, read at 5 fps
        "pairs.webp": np.repeat(rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8), 2, axis=0),  # 12.5 fps made 25: read at 12.5
    }
    for name, clip in clips.items():
        media.write_frames(tmp_path / name, clip, fps=fps)
        info = media.probe(tmp_path / name)
        assert (info.frames, info.fps) == (10, fps), name
        frames = media.read_frames(tmp_path / name)
        assert frames.array.shape == clip.shape and frames.fps == fps, name
        if name in ("empty.webp", "two.webp"):  # few colours: lossless, frame for frame
            assert np.array_equal(frames.array, clip), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(clips)


@pytest.mark.parametrize("suffix, longest", [(".webp", 16383), (".gif", 65535)])
def test_frames_longer_than_a_webp_or_gif_takes_are_refused_before_any_is_stored(tmp_path, suffix, longest):
    for width, height in ((longest + 1, 2), (2, longest + 1)):
        with pytest.raises(UserError, match=f"^{tmp_path / ('wide' + suffix)}: its frames are {width}x{height}, but an? (WebP|GIF)'s sides "
                                            f"are at most {longest} pixels; make the frames smaller \\(a smaller --size\\) or write "):
            media.check_clip_fits(tmp_path / f"wide{suffix}", width, height, 100)
    media.check_clip_fits(tmp_path / "wide.webm", longest + 1, 2)  # VP9 takes it
    with pytest.raises(UserError, match=f"sides are at most {longest} pixels"):
        with media.FrameWriter(tmp_path / f"wide{suffix}") as writer:
            writer.write(np.zeros((1, longest + 1, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []  # refused before any frame was stored (it failed at the end of the encoding)
    media.write_frames(tmp_path / f"edge{suffix}", np.zeros((2, 1, longest, 3), np.uint8))  # the longest side it takes
    assert _animation_frames(tmp_path / f"edge{suffix}")[0].shape == (2, 1, longest, 3)


def test_a_gif_or_webp_whose_stored_frames_would_not_fit_the_disk_is_refused_up_front(tmp_path):
    import shutil

    frame = 512 * 512 * 3  # 0.75 MiB, kept uncompressed until the palette pass
    too_many = shutil.disk_usage(tmp_path).free // frame + 1
    for suffix, kind in ((".gif", "GIF"), (".webp", "WebP")):
        with pytest.raises(UserError, match=f"^{tmp_path / ('long' + suffix)}: its {too_many} frames of 512x512 are kept uncompressed until "
                                            f"the {kind} is encoded, .* but only .* is free on that disk; free space, write it on another "
                                            "disk, or write long.mp4 or long.webm \\(encoded as they come\\)$"):
            media.check_clip_fits(tmp_path / f"long{suffix}", 512, 512, too_many)
        media.check_clip_fits(tmp_path / f"long{suffix}", 512, 512, 100)  # 75 MiB: room enough here
    for suffix in (".mp4", ".webm", ""):  # encoded as the frames come, or PNGs: no stored frames
        media.check_clip_fits(tmp_path / f"long{suffix}", 512, 512, too_many)
