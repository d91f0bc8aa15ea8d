"""magicanimate frames: a video -> 00000.png... at a fixed rate, through ffmpeg."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.frames import frames

from preprocess_helpers import decode_index, make_video

runner = CliRunner()


@pytest.fixture(scope="module")
def video30(tmp_path_factory):
    """30 frames at 30 fps (1 s); frame i has grey level 8 + 8 i."""
    return make_video(tmp_path_factory.mktemp("v") / "v30.mp4", count=30, fps=30.0)


def test_resamples_to_25_fps_by_timestamp(video30, tmp_path):
    calls = []
    result = frames(video30, tmp_path / "f", progress=lambda *a: calls.append(a))
    files = media.list_frame_files(tmp_path / "f")
    assert result.frames == 25 == len(files)
    assert [f.name for f in files[:3]] == ["00000.png", "00001.png", "00002.png"]
    assert result.fps == 25.0 and result.source_fps == pytest.approx(30.0) and (result.width, result.height) == (64, 48)
    indices = [decode_index(media.read_image(f)) for f in files]
    # output frame k shows the source frame at t = k/25, i.e. source index round(k * 30 / 25) (ffmpeg's fps filter)
    assert indices == [int(k * 30 / 25 + 0.5) for k in range(25)]
    assert calls and calls[-1] == ("frames", 25, 25)


def test_other_rate_and_rgb_png(video30, tmp_path):
    result = frames(video30, tmp_path / "f", fps=10)
    assert result.frames == 10
    image = media.read_image(tmp_path / "f" / "00000.png")
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)


def test_cli_json_no_overwrite_and_errors(video30, tmp_path):
    out = tmp_path / "f"
    ok = runner.invoke(app, ["frames", str(video30), "-o", str(out), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["frames"] == 25
    again = runner.invoke(app, ["frames", str(video30), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, ["frames", str(video30), "-o", str(out), "--overwrite", "--fps", "5"]).exit_code == 0
    assert len(media.list_frame_files(out)) == 5
    for args in (["frames", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "a")],
                 ["frames", str(out), "-o", str(tmp_path / "b")],
                 ["frames", str(video30), "-o", str(tmp_path / "c"), "--fps", "0"]):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2, args
        assert len(bad.output.strip().splitlines()) == 1 and "Traceback" not in bad.output


def test_unreadable_video_is_exit_2_and_leaves_nothing(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    result = runner.invoke(app, ["frames", str(junk), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["junk.mp4"]


def test_percent_signs_in_the_folder_and_refusing_to_replace_the_input(video30, tmp_path):
    assert frames(video30, tmp_path / "speed_50%d", fps=5).frames == 5
    assert len(media.list_frame_files(tmp_path / "speed_50%d")) == 5
    from magicanimate_cli.errors import UserError

    with pytest.raises(UserError, match="holds the input"):
        frames(video30, video30.parent, overwrite=True)
    assert video30.is_file()


def test_a_clip_shorter_than_one_frame_at_the_rate_says_so(tmp_path):
    make_video(tmp_path / "one.mp4", 1, fps=25)
    result = runner.invoke(app, ["frames", str(tmp_path / "one.mp4"), "-o", str(tmp_path / "f"), "--fps", "5"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'one.mp4'}: the video (1 frames at 25 fps) is shorter than one frame at --fps 5; raise --fps"
    )
    assert not (tmp_path / "f").exists()
    assert frames(tmp_path / "one.mp4", tmp_path / "f", fps=25).frames == 1


def test_an_animated_webp_gives_every_frame_and_a_still_one_is_an_image(tmp_path, rng):
    # -o poses.webp of any command, read back: "is an image" before
    from PIL import Image

    clip = rng.integers(0, 4, (12, 24, 32, 1), dtype=np.uint8) * np.array([60, 20, 80], np.uint8)  # 4 colours: lossless
    media.write_frames(tmp_path / "poses.webp", clip, fps=30)
    result = runner.invoke(app, ["frames", str(tmp_path / "poses.webp"), "-o", str(tmp_path / "f"), "--fps", "30", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source_fps"] == 30.0
    files = media.list_frame_files(tmp_path / "f")
    assert len(files) == 12 and all(np.array_equal(media.read_image(f), frame) for f, frame in zip(files, clip))
    Image.fromarray(clip[0]).save(tmp_path / "photo.webp")
    still = runner.invoke(app, ["frames", str(tmp_path / "photo.webp"), "-o", str(tmp_path / "g")])
    assert still.exit_code == 2 and "is an image; `magicanimate frames` takes a video file" in still.output
