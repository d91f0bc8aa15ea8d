"""media.colours: HDR and wide-gamut video read in the colours a player shows."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import InputWarning

from media_helpers import run_ffmpeg

RED = (192, 32, 32)


def _hdr_video(path: Path, transfer: str) -> Path:
    # a BT.709 red, (192, 32, 32), put into 10-bit BT.2020 video the way BT.2408 places SDR in HDR (its
    # white at the 203 cd/m² reference white), as a phone records it: HLG (an iPhone's default) or PQ
    # (HDR10), or plain BT.2020 SDR (bt2020-10); 64x48, 3 frames
    run_ffmpeg("-f", "lavfi", "-i", "color=c=0xC02020:s=64x48:r=25:d=0.12,format=gbrp", "-vf",
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
