"""magicanimate download: yt-dlp against a loopback HTTP server serving generated videos."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from magicanimate_cli import download as download_module
from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.download import download, read_tracklets, tracklet_box, tracklet_frames
from magicanimate_cli.errors import InputWarning, UserError

from preprocess_helpers import add_sound, decode_index, make_video, read_sound, serve, sound_level, with_empty_sound

runner = CliRunner()
VID = "AAAAAAAAAAA"  # an 11-character "YouTube ID"


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    monkeypatch.setattr(download_module, "RETRY_WAIT", 0.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    make_video(root / f"{VID}.mp4", count=30, fps=25.0)
    make_video(root / "talk.mp4", count=20, fps=25.0, width=48, height=32)
    (root / "other").mkdir()
    make_video(root / "other" / "talk.mp4", count=12, fps=25.0)  # another site's video of the same name
    make_video(root / "flaky.mp4", count=10, fps=25.0)
    make_video(root / "broken.mp4", count=30, fps=25.0)
    add_sound(make_video(root / "dance.mp4", count=30, fps=25.0), 1.2, rising=True)
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-i", str(root / "dance.mp4"), "-c", "copy", str(root / "phone.mkv")], check=True)
    add_sound(make_video(root / "long.mp4", count=30, fps=25.0), 3.0, rising=True)  # the sound runs on 1.8 s after the picture
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-itsoffset", "0.5", "-i", str(root / "long.mp4"), "-i", str(root / "long.mp4"),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", str(root / "late.mp4")], check=True)  # the picture starts 0.5 s in  # fmt: skip
    _site_serving_sound_apart(root)
    with serve(root) as httpd:
        yield httpd


def _site_serving_sound_apart(root: Path) -> None:
    """``site.mpd``: a DASH manifest of a video-only mp4 and an m4a sound (a rising tone), as
    YouTube serves them; yt-dlp's generic extractor reads it."""
    make_video(root / "picture.mp4", count=30, fps=25.0)
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", "aevalsrc=0.9*t/1.2*sin(2*PI*440*t):s=44100:d=1.2",
                    "-c:a", "aac", str(root / "music.m4a")], check=True)  # fmt: skip
    (root / "site.mpd").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1.2S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="video/mp4"><Representation id="picture" codecs="avc1.64000d" width="64" height="48" '
        'bandwidth="100000"><BaseURL>picture.mp4</BaseURL></Representation></AdaptationSet>'
        '<AdaptationSet mimeType="audio/mp4"><Representation id="music" codecs="mp4a.40.2" audioSamplingRate="44100" '
        'bandwidth="64000"><BaseURL>music.m4a</BaseURL></Representation></AdaptationSet>'
        "</Period></MPD>"
    )


@pytest.fixture()
def template(server):
    server.plan.clear()
    server.requests.clear()
    return server.url + "/{id}.mp4"


def test_url_download_skip_and_overwrite(server, template, tmp_path):
    url = f"{server.url}/talk.mp4"
    result = download([url], tmp_path)
    assert result.ok and [i["status"] for i in result.items] == ["downloaded"]
    path = tmp_path / "talk.mp4"
    assert media.probe(path).frames == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]  # no work folder left
    stamp = path.stat().st_mtime_ns
    again = download([url], tmp_path)
    assert again.items[0]["status"] == "skipped" and path.stat().st_mtime_ns == stamp
    forced = download([url], tmp_path, overwrite=True)
    assert forced.items[0]["status"] == "downloaded" and media.probe(path).frames == 20


def test_two_urls_whose_videos_have_one_id_do_not_share_a_file(server, template, tmp_path):
    # the second was reported "skipped" with the first one's file, or (--overwrite) written over it
    urls = [f"{server.url}/talk.mp4", f"{server.url}/other/talk.mp4"]
    for overwrite in (False, True):
        result = download(urls, tmp_path, overwrite=overwrite)
        assert [i["status"] for i in result.items] == ["downloaded", "failed"]
        assert f"which {urls[0]} gave in this run" in result.items[1]["error"]
        assert media.probe(tmp_path / "talk.mp4").frames == 20  # the first one's, whole
    assert download(urls[1:], tmp_path / "apart").items[0]["status"] == "downloaded"  # alone, into another folder: fine


def test_id_through_url_template_is_skipped_without_network(server, template, tmp_path):
    download([VID], tmp_path, url_template=template)
    server.requests.clear()
    assert download([VID], tmp_path, url_template=template).items[0]["status"] == "skipped"
    assert server.requests == []


def test_time_range_is_frame_exact(server, template, tmp_path):
    result = download([VID], tmp_path, url_template=template, start="0.2", end="0:00.6")
    item = result.items[0]
    assert item["status"] == "cut" and item["frames"] == 10
    clip = media.read_frames(tmp_path / f"{VID}_0.2-0.6.mp4")
    assert [decode_index(f) for f in clip.array] == list(range(5, 15))
    assert (tmp_path / f"{VID}.mp4").is_file()  # the full video stays for other cuts
    open_ended = download([VID], tmp_path, url_template=template, start=1).items[0]
    assert open_ended["frames"] == 5 and open_ended["output"].endswith(f"{VID}_1-end.mp4")
    from_the_start = download([VID], tmp_path, url_template=template, end="0.2").items[0]
    assert from_the_start["frames"] == 5 and from_the_start["output"].endswith(f"{VID}_0-0.2.mp4")  # not "_end-0.2"
    (tmp_path / f"{VID}.mp4").unlink()  # the source removed to free the disk, unreachable now: the cut is there
    again = download([VID], tmp_path, url_template=server.url + "/missing/{id}.mp4", start="0.2", end="0:00.6").items[0]
    assert again["status"] == "skipped" and again["output"] == str(tmp_path / f"{VID}_0.2-0.6.mp4")


def test_two_cuts_a_frame_apart_do_not_share_a_name(server, template, tmp_path):
    # names rounded the times to milliseconds: --start 1.0001 (frame 26) was "skipped" as _1-end.mp4 (frame 25 on)
    assert download([VID], tmp_path, url_template=template, start="1").items[0]["frames"] == 5
    later = download([VID], tmp_path, url_template=template, start="1.0001").items[0]
    assert later["status"] == "cut" and later["output"] == str(tmp_path / f"{VID}_1.0001-end.mp4")
    assert [decode_index(f) for f in media.read_frames(tmp_path / f"{VID}_1.0001-end.mp4").array] == [26, 27, 28, 29]
    assert [decode_index(f) for f in media.read_frames(tmp_path / f"{VID}_1-end.mp4").array] == [25, 26, 27, 28, 29]
    shorter = download([VID], tmp_path, url_template=template, end="0.6001").items[0]  # one frame more than --end 0.6
    assert shorter["frames"] == 16 and shorter["output"].endswith(f"{VID}_0-0.6001.mp4")
    # the same time typed another way is the same cut: the same name, skipped
    again = download([VID], tmp_path, url_template=template, start="0:01.000").items[0]
    assert again["status"] == "skipped" and again["output"] == str(tmp_path / f"{VID}_1-end.mp4")
    tiny = download([VID], tmp_path, url_template=template, start="0.00001").items[0]  # plain decimals, not 1e-05 (its "-" splits the range)
    assert tiny["output"].endswith(f"{VID}_0.00001-end.mp4")


def test_a_start_after_the_last_frame_is_refused_in_seconds_with_the_latest_start(server, template, tmp_path):
    # was "starts at frame 30 but the video has 30 frames (1.20 s)": a frame number the user never typed, and no fix
    result = runner.invoke(app, ["download", VID, "--url-template", template, "--start", "1.19", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 1  # known only once downloaded: that video fails, the others of the run go on
    item = json.loads(result.stdout)["items"][0]
    assert item["status"] == "failed" and item["error"] == (
        f"--start 1.19: {tmp_path / f'{VID}.mp4'} is 1.20 s long (30 frames at 25 fps), its last frame at 1.16 s; give a --start of 1.16 or less")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{VID}.mp4"]  # no empty or one-frame clip
    latest = download([VID], tmp_path, url_template=template, start="1.16").items[0]
    assert latest["status"] == "cut" and latest["frames"] == 1
    assert [decode_index(f) for f in media.read_frames(tmp_path / f"{VID}_1.16-end.mp4").array] == [29]


def test_an_end_after_the_video_is_refused_not_a_shorter_clip_named_with_it(server, template, tmp_path):
    # was a 0.8 s clip named _0.4-5.mp4: a dataset took it for the 4.6 s it asked for
    result = runner.invoke(app, ["download", VID, f"{server.url}/talk.mp4", "--url-template", template, "--start", "0.4", "--end", "1",
                                 "-o", str(tmp_path), "--json"])  # fmt: skip
    assert result.exit_code == 1
    items = json.loads(result.stdout)["items"]
    assert [i["status"] for i in items] == ["cut", "failed"] and items[0]["frames"] == 15  # the 1.2 s video has it; the 0.8 s one fails alone
    assert items[1]["error"] == (f"--end 1: {tmp_path / 'talk.mp4'} is 0.80 s long (20 frames at 25 fps); "
                                 "give an --end of 0.8 or less, or no --end to cut to its end")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{VID}.mp4", f"{VID}_0.4-1.mp4", "talk.mp4"]  # no clip under a false name
    refused = download([VID], tmp_path, url_template=template, end="1.25").items[0]  # more than a frame (0.04 s) after its end
    assert refused["status"] == "failed" and "give an --end of 1.2 or less" in refused["error"]
    slack = download([VID], tmp_path, url_template=template, start="1", end="1.2001").items[0]  # a length rounded in metadata
    assert slack["status"] == "cut" and slack["frames"] == 5
    assert "output" not in refused  # a failed cut names no clip: none was written


def test_a_range_with_no_frame_in_it_is_refused_not_a_frame_outside_it(server, template, tmp_path):
    # 0.21-0.22 s at 25 fps holds no frame (they are at 0.20 and 0.24 s): it was a 1-frame clip of the frame at 0.24 s
    item = download([VID], tmp_path, url_template=template, start="0.21", end="0.22").items[0]
    assert item["status"] == "failed" and item["error"] == (
        f"--start 0.21 --end 0.22: no frame of {tmp_path / f'{VID}.mp4'} (25 fps) lies between them; widen the range to at least 0.04 s")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{VID}.mp4"]
    one = download([VID], tmp_path, url_template=template, start="0.21", end="0.241").items[0]  # the frame at 0.24 s is inside
    assert one["status"] == "cut" and one["frames"] == 1
    assert [decode_index(f) for f in media.read_frames(tmp_path / f"{VID}_0.21-0.241.mp4").array] == [6]
    latest = download([VID], tmp_path, url_template=template, start="1", end="1.2").items[0]
    assert latest["status"] == "cut" and latest["frames"] == 5 and latest["output"].endswith(f"{VID}_1-1.2.mp4")


def test_a_cut_keeps_the_sound_of_its_frames(server, template, tmp_path, monkeypatch):
    result = download([f"{server.url}/dance.mp4"], tmp_path, start="0.4", end="0.8")
    assert result.ok and result.items[0]["frames"] == 10
    whole, cut = read_sound(tmp_path / "dance.mp4"), read_sound(tmp_path / "dance_0.4-0.8.mp4")
    assert media.audio_streams(tmp_path / "dance_0.4-0.8.mp4") == ["aac"]
    assert len(cut) / 8000 == pytest.approx(0.4, abs=0.03)  # the 10 frames' 0.4 s, not the rest of the video
    for at in (0.0, 0.2, 0.3):  # the rising tone says when: the cut's sound starts at its first frame, 0.4 s
        assert sound_level(cut, at) == pytest.approx(sound_level(whole, 0.4 + at), abs=0.012)
    assert abs(sound_level(cut, 0.0) - sound_level(whole, 0.0)) > 0.2
    monkeypatch.setattr(media.video, "AAC", {"acodec": "no-such-encoder"})  # a sound ffmpeg cannot encode costs the sound, not the cut
    with pytest.warns(InputWarning) as said:
        again = download([f"{server.url}/dance.mp4"], tmp_path / "again", start="0.4", end="0.8")
    assert [str(w.message) for w in said if w.category is InputWarning] == [
        f"{tmp_path / 'again' / 'dance_0.4-0.8.mp4'}: written without the sound of {tmp_path / 'again' / 'dance.mp4'} (ffmpeg could not encode it as AAC)"]
    assert again.ok and again.items[0]["frames"] == 10 and media.audio_streams(tmp_path / "again" / "dance_0.4-0.8.mp4") == []


def test_another_container_becomes_an_mp4_with_its_sound(server, template, tmp_path, monkeypatch):
    result = download([f"{server.url}/phone.mkv"], tmp_path)
    assert result.ok and sorted(p.name for p in tmp_path.iterdir()) == ["phone.mp4"]
    assert media.probe(tmp_path / "phone.mp4").frames == 30 and media.audio_streams(tmp_path / "phone.mp4") == ["aac"]
    assert (tmp_path / "phone.mp4").read_bytes()[4:8] == b"ftyp"  # an mp4 container, not the Matroska file renamed
    monkeypatch.setattr(media.video, "sound_options", lambda codec, output: {"acodec": "no-such-encoder"})  # a sound an mp4 cannot take
    with pytest.warns(InputWarning) as said:
        again = download([f"{server.url}/phone.mkv"], tmp_path / "again")
    assert [str(w.message) for w in said if w.category is InputWarning] == [
        f"{tmp_path / 'again' / 'phone.mp4'}: written without the sound of {server.url}/phone.mkv (ffmpeg could not put it in an mp4)"]
    assert again.ok and media.probe(tmp_path / "again" / "phone.mp4").frames == 30  # the video, without its sound
    assert media.audio_streams(tmp_path / "again" / "phone.mp4") == []


def test_a_cut_after_the_sound_has_ended_says_so(tmp_path):
    song = add_sound(make_video(tmp_path / "song.mp4", count=25), 0.4)  # 1 s of picture, 0.4 s of sound
    with pytest.warns(InputWarning) as said:
        assert download_module.cut(song, tmp_path / "late.mp4", first=15, count=5) == 5
    assert [str(w.message) for w in said if w.category is InputWarning] == [
        f"{tmp_path / 'late.mp4'}: written without the sound of {song} (its sound ends 0.40 s after its first picture, before frame 15)"]
    assert media.sound_end(tmp_path / "late.mp4") == 0.0
    empty = with_empty_sound(song, tmp_path / "empty.mkv")
    with pytest.warns(InputWarning) as said:
        download_module.cut(empty, tmp_path / "none.mp4", first=0, count=5)
    assert [str(w.message) for w in said if w.category is InputWarning] == [
        f"{tmp_path / 'none.mp4'}: written without the sound of {empty} (its sound stream is empty)"]


def test_a_cut_to_the_end_or_from_a_late_picture_keeps_the_sound_of_its_frames_only(server, template, tmp_path):
    to_the_end = download([f"{server.url}/long.mp4"], tmp_path, start="0.8")
    assert to_the_end.items[0]["frames"] == 10
    assert len(read_sound(tmp_path / "long_0.8-end.mp4")) / 8000 == pytest.approx(0.4, abs=0.03)  # not the 2.2 s of sound left
    late = download([f"{server.url}/late.mp4"], tmp_path, end="0.4")
    assert late.items[0]["frames"] == 10
    cut, whole = read_sound(tmp_path / "late_0-0.4.mp4"), read_sound(tmp_path / "late.mp4")
    for at in (0.0, 0.2):  # the first frame is 0.5 s into the sound
        assert sound_level(cut, at) == pytest.approx(sound_level(whole, 0.5 + at), abs=0.012)
    later = download([f"{server.url}/late.mp4"], tmp_path, start="0.2", end="0.6").items[0]
    frames = media.read_frames(tmp_path / "late_0.2-0.6.mp4").array
    assert later["frames"] == 10 and [decode_index(f) for f in frames] == list(range(5, 15))  # counted from the first picture
    cut = read_sound(tmp_path / "late_0.2-0.6.mp4")
    for at in (0.0, 0.2):
        assert sound_level(cut, at) == pytest.approx(sound_level(whole, 0.5 + 0.2 + at), abs=0.012)


def test_a_late_pictures_range_is_checked_against_its_pictures_not_the_frames_that_fill_its_start(server, template, tmp_path):
    # late.mp4's 30 frames (1.2 s) start 0.5 s into its sound: counted with the 13 frames that fill that start, an
    # --end of 1.6 passed and gave its 30 frames as late_0-1.6.mp4, shorter than its name says by 0.4 s
    late = tmp_path / "late.mp4"
    too_far = download([f"{server.url}/late.mp4"], tmp_path, end="1.6").items[0]
    assert too_far["status"] == "failed" and too_far["error"] == (
        f"--end 1.6: {late} is 1.20 s long (30 frames at 25 fps); give an --end of 1.2 or less, or no --end to cut to its end")
    too_late = download([f"{server.url}/late.mp4"], tmp_path, start="1.5").items[0]  # was "the cut from frame 38 is empty"
    assert too_late["status"] == "failed" and too_late["error"].endswith("its last frame at 1.16 s; give a --start of 1.16 or less")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.mp4"]
    last = download([f"{server.url}/late.mp4"], tmp_path, start="1.16", end="1.2").items[0]
    assert last["frames"] == 1 and [decode_index(f) for f in media.read_frames(tmp_path / "late_1.16-1.2.mp4").array] == [29]


def test_sound_served_apart_comes_with_sound_only_and_its_cuts_keep_it(server, template, tmp_path):
    url = f"{server.url}/site.mpd"
    plain = download([url], tmp_path / "plain", start="0.4", end="0.8")
    assert plain.ok and [media.audio_streams(p) for p in sorted((tmp_path / "plain").iterdir())] == [[], []]
    with_sound = download([url], tmp_path / "sound", start="0.4", end="0.8", sound=True)
    assert with_sound.ok and sorted(p.name for p in (tmp_path / "sound").iterdir()) == ["site.mp4", "site_0.4-0.8.mp4"]
    whole = tmp_path / "sound" / "site.mp4"
    assert media.audio_streams(whole) == ["aac"] and media.probe(whole).frames == 30  # merged into one mp4
    cut = read_sound(tmp_path / "sound" / "site_0.4-0.8.mp4")
    assert len(cut) / 8000 == pytest.approx(0.4, abs=0.03)
    assert sound_level(cut, 0.1) == pytest.approx(sound_level(read_sound(whole), 0.5), abs=0.012)
    assert [item["sound"] for item in with_sound.items] == [True] and "sound" not in plain.items[0]
    cli = runner.invoke(app, ["download", url, f"{server.url}/talk.mp4", "-o", str(tmp_path / "cli"), "--sound", "--json"])
    assert cli.exit_code == 0, cli.output
    assert media.audio_streams(tmp_path / "cli" / "site.mp4") == ["aac"]
    assert [(Path(i["output"]).name, i["sound"]) for i in json.loads(cli.stdout)["items"]] == [("site.mp4", True), ("talk.mp4", False)]
    told = runner.invoke(app, ["download", f"{server.url}/talk.mp4", "-o", str(tmp_path / "cli"), "--sound"])
    assert told.exit_code == 0 and "without sound" in told.output and "talk.mp4" in told.output  # it has none to give


def test_tracklets(server, template, tmp_path):
    csv = tmp_path / "ted.csv"
    csv.write_text(
        "video_id,start,end,bbox,fps,width,height,partition\n"
        f"{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,train\n"
        f"{VID}#000000#000099,5,10,0-0-16-12,12.5,32,24,test\n"
    )
    out = tmp_path / "ted"
    result = download(None, out, tracklets=csv, url_template=template)
    assert result.ok, result.items
    train = out / "train" / f"{VID}#000005#000015.mp4"
    test = out / "test" / f"{VID}#000000#000099#000005#000010.mp4"
    a, b = media.read_frames(train), media.read_frames(test)
    assert a.array.shape == (10, 32, 32, 3) and [decode_index(f) for f in a.array] == list(range(5, 15))
    assert b.array.shape == (10, 24, 32, 3) and [decode_index(f) for f in b.array] == list(range(10, 20))
    again = download(None, out, tracklets=csv, url_template=template)
    assert [i["status"] for i in again.items] == ["skipped", "skipped", "skipped"]
    # the source removed to free the disk, and unreachable now: its clips are all there, nothing to fetch
    (out / f"{VID}.mp4").unlink()
    server.requests.clear()
    gone = download(None, out, tracklets=csv, url_template=server.url + "/missing/{id}.mp4")
    assert gone.ok and [i["status"] for i in gone.items] == ["skipped", "skipped", "skipped"] and server.requests == []


def test_tracklets_are_read_as_typed_home_folder_and_empty_path(server, template, tmp_path, monkeypatch):
    # download(tracklets="~/ted.csv") said "~/ted.csv: no such tracklets file" (the CLI expanded it);
    # tracklets="" said ".: no such tracklets file"
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ted.csv").write_text(f"video_id,start,end,bbox,fps,width,height,partition\n{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,train\n")
    result = download(None, tmp_path / "ted", tracklets="~/ted.csv", url_template=template)
    assert result.ok and (tmp_path / "ted" / "train" / f"{VID}#000005#000015.mp4").is_file()
    with pytest.raises(UserError, match='^"": an empty input path') as caught:
        download(None, tmp_path / "none", tracklets="", url_template=template)
    assert "\n" not in str(caught.value) and not (tmp_path / "none").exists()


def test_a_tracklet_after_its_videos_end_fails_alone_in_seconds(server, template, tmp_path):
    # was "starts at frame 40 but the video has 30 frames (1.20 s)": the video's frame number, not the row's, and no row
    csv = tmp_path / "ted.csv"
    csv.write_text("video_id,start,end,bbox,fps,width,height,partition\n"
                   f"{VID}#000040#000050,0,0,8-4-40-36,25.0,64,48,train\n"
                   f"{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,train\n"
                   f"{VID}#000000#000099,20,30,0-0-16-12,12.5,32,24,test\n")  # fmt: skip
    out = tmp_path / "ted"
    result = runner.invoke(app, ["download", "--tracklets", str(csv), "--url-template", template, "-o", str(out), "--json"])
    assert result.exit_code == 1
    items = json.loads(result.stdout)["items"]
    assert [i["status"] for i in items] == ["downloaded", "failed", "cut", "failed"]
    video = out / f"{VID}.mp4"
    tail = f"but {video} is 1.20 s long (30 frames at 25 fps), its last frame at 1.16 s; the row does not fit this video: correct it or leave it out"
    assert items[1]["error"] == f"{csv}:2: starts at frame 40 at 25 fps, 1.60 s in, {tail}"
    assert items[3]["error"] == f"{csv}:4: starts at frame 20 at 12.5 fps, 1.60 s in, {tail}"  # the row's frame, not the video's 40
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [f"{VID}.mp4", f"train/{VID}#000005#000015.mp4"]


def test_tracklets_of_one_name_in_two_partitions_keep_their_names(server, template, tmp_path):
    # they write two files already: no "#L<line>" suffix (which renamed them when a row was added)
    csv = tmp_path / "ted.csv"
    header = "video_id,start,end,bbox,fps,width,height,partition\n"
    rows = [f"{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,train\n", f"{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,test\n"]
    csv.write_text(header + "".join(rows))
    result = download(None, tmp_path / "ted", tracklets=csv, url_template=template)
    assert [Path(i["output"]).relative_to(tmp_path / "ted").as_posix() for i in result.items[1:]] == [
        f"train/{VID}#000005#000015.mp4", f"test/{VID}#000005#000015.mp4"]
    csv.write_text(header + rows[0] + rows[0])  # one place twice: told apart by their lines
    result = download(None, tmp_path / "twice", tracklets=csv, url_template=template)
    assert [Path(i["output"]).name for i in result.items[1:]] == [f"{VID}#000005#000015#L2.mp4", f"{VID}#000005#000015#L3.mp4"]


def test_tracklet_rules():
    from magicanimate_cli.download import Tracklet

    row = Tracklet(2, "X#1#2", "X", 10, 20, (100, 50, 300, 250), 10.0, 400, 400, "train", False)
    assert tracklet_frames(row, 25.0) == (25, 25)  # frames i with 10/10 <= i/25 < 20/10
    assert tracklet_box(row, 800, 600) == (200, 75, 600, 375)


def test_retries_cover_errors_before_the_download(server, template, tmp_path):
    server.plan["/flaky.mp4"] = [503, 503]
    ok = download([f"{server.url}/flaky.mp4"], tmp_path / "a", retries=2)
    assert ok.ok and ok.items[0]["status"] == "downloaded"
    server.plan["/flaky.mp4"] = [503, 503]
    failed = download([f"{server.url}/flaky.mp4"], tmp_path / "b", retries=1)
    assert not failed.ok and "503" in failed.items[0]["error"]
    assert not (tmp_path / "b" / "flaky.mp4").exists()


def test_interrupted_transfer_never_appears_under_the_final_name_and_resumes(server, template, tmp_path):
    url = f"{server.url}/broken.mp4"
    server.plan["/broken.mp4"] = [None, "cut"]  # page read fine, then the file transfer breaks off
    first = download([url], tmp_path, retries=0)
    assert not first.ok and first.items[0]["status"] == "failed"
    assert not (tmp_path / "broken.mp4").exists()
    parts = list(tmp_path.rglob("*.part"))
    assert len(parts) == 1 and parts[0].parent.name.startswith(".")
    server.requests.clear()
    second = download([url], tmp_path, retries=0)
    assert second.ok and media.probe(tmp_path / "broken.mp4").frames == 30
    assert any(rng for _, _, rng in server.requests)  # resumed with a Range request
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


def test_cli_json_partial_failure_and_quiet_stdout(server, template, tmp_path):
    result = runner.invoke(app, ["download", f"{server.url}/talk.mp4", f"{server.url}/missing.mp4", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # yt-dlp prints nothing; one JSON object
    data = json.loads(lines[0])
    assert data["ok"] is False and data["downloaded"] == 1 and data["failed"] == 1
    failed = [i for i in data["items"] if i["status"] == "failed"][0]
    assert "404" in failed["error"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing to resume after a 404


def test_a_url_that_cannot_be_parsed_fails_alone_and_leaves_no_folder(server, template, tmp_path):
    # yt-dlp raises its HTTP library's or urllib's own errors for these, not a DownloadError:
    # they stopped the whole run (exit 1, "RequestError: ...") and left the hidden work folder
    out = tmp_path / "videos"
    result = runner.invoke(app, ["download", "https://exa mple.com/a.mp4", "http://[::1", f"{server.url}/talk.mp4", "-o", str(out), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [i["status"] for i in data["items"]] == ["failed", "failed", "downloaded"]
    assert data["items"][0]["error"].startswith("https://exa mple.com/a.mp4: not a URL that can be fetched (")
    assert data["items"][1]["error"] == "http://[::1: not a URL that can be fetched (Invalid IPv6 URL); check it"
    assert sorted(p.name for p in out.iterdir()) == ["talk.mp4"]
    alone = runner.invoke(app, ["download", "http://[::1", "-o", str(tmp_path / "none"), "--json"])
    assert alone.exit_code == 1 and not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "nothing to download"),
        (["not-a-url-or-id"], "YouTube video ID"),
        (["file:///tmp/dance.mp4"], "file:///tmp/dance.mp4: a local file; `magicanimate download` fetches videos from the web"),  # was: yt-dlp's --enable-file-urls advice
        ([__file__], f"{__file__}: a local file; `magicanimate download` fetches videos from the web"),
        ([VID, "--start", "abc"], "--start 'abc': expected seconds"),
        ([VID, "--start", "5", "--end", "2"], "after the start"),
        ([VID, "--end", "9" * 400 + ":00:00"], "too large a number of seconds"),  # was OverflowError, exit 1
        ([VID, "--max-height", "0"], "--max-height"),
        ([VID, "--url-template", "http://x/"], "{id}"),
        ([VID, "--url-template", "http://x/{id}{bogus}"], "{id} is the only field it may hold ('bogus')"),  # was KeyError, exit 1
        ([VID, "--url-template", "http://x/{id}{"], "write a literal brace as {{ or }}"),
        ([VID, "--url-template", "http://x/{0}{id}"], "{id} is the only field it may hold"),
        ([VID, "--url-template", "http://x/{id}{id.x}"], "{id} is the only field it may hold"),  # was AttributeError
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = runner.invoke(app, ["download", *args, "-o", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("start", "fps", "message"), [
    ("inf", "25", "must be numbers"),  # was OverflowError, exit 1
    ("0", "nan", "a finite fps > 0"),  # was a ValueError after the download, ending the whole run
    ("0", "inf", "a finite fps > 0"),  # was "no video stream" about a hidden temporary file
    ("-5", "25", "need 0 <= start < end"),  # was a 15-frame clip named #-00005#
])
def test_a_tracklet_with_a_number_out_of_range_is_refused_before_any_download(tmp_path, start, fps, message):
    csv = tmp_path / "t.csv"
    csv.write_text(f"video_id,start,end,bbox,fps,width,height,partition\nabcdefghijk,{start},10,1-2-3-4,{fps},10,10,train\n")
    with pytest.raises(UserError, match=rf"t.csv:2: .*{re.escape(message)}"):
        read_tracklets(csv)


@pytest.mark.parametrize("bbox", ["70-0-90-10", "0-48-10-60"])
def test_a_tracklet_box_outside_its_frame_is_refused_not_cut_as_a_strip_of_the_edge(tmp_path, bbox):
    # was a 2-pixel-wide clip of the frame's right (or bottom) edge, written under the row's name
    csv = tmp_path / "t.csv"
    csv.write_text(f"video_id,start,end,bbox,fps,width,height,partition\r\n{VID}#000005#000015,0,0,{bbox},25,64,48,train\r\n")
    with pytest.raises(UserError, match=rf"t.csv:2: bbox '{bbox}' lies outside the row's 64x48 frame; need x0 < 64 and y0 < 48$"):
        read_tracklets(csv)
    csv.write_text(f"video_id,start,end,bbox,fps,width,height,partition\n{VID}#000005#000015,0,0,60-40-90-60,25,64,48,train\n")
    assert tracklet_box(read_tracklets(csv)[0], 64, 48) == (60, 40, 64, 48)  # partly outside: the part inside, as before


def test_bad_tracklets(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("video_id,start,end,bbox\nX#1#2,0,0,1-2-3-4\n")
    with pytest.raises(UserError, match="missing column"):
        read_tracklets(csv)
    csv.write_bytes("video_id,start,end,bbox".encode("utf-16"))  # was UnicodeDecodeError, exit 1
    with pytest.raises(UserError, match=r"t.csv: not UTF-8 text \(byte 0: .*\); save it as UTF-8"):
        read_tracklets(csv)
    csv.write_bytes(b"\xef\xbb\xbfvi\xffdeo_id")  # counted from the file's first byte, the BOM included
    with pytest.raises(UserError, match=r"t.csv: not UTF-8 text \(byte 5: "):
        read_tracklets(csv)
    csv.write_text("video_id,start,end,bbox,fps,width,height,partition\nX#1#2,0,0,1-2-3,25,10,10,train\n")
    with pytest.raises(UserError, match=r"t.csv:2: bbox"):
        read_tracklets(csv)
    csv.write_text("video_id,start,end,bbox,fps,width,height,partition\nX,0,0,1-2-3-4,25,10,10,train\n")
    with pytest.raises(UserError, match="YOUTUBEID#STARTFRAME#ENDFRAME"):
        read_tracklets(csv)
    result = runner.invoke(app, ["download", "--tracklets", str(csv), "--start", "1", "-o", str(tmp_path / "d")])
    assert result.exit_code == 2


@pytest.mark.parametrize("option, value, message", [("--start", "abc", "expected seconds"), ("--end", "-3", "must be a non-negative")])
def test_a_bad_time_names_its_option(tmp_path, option, value, message):
    with pytest.raises(UserError, match=f"^{option} '{value}': {message}"):
        download(["https://example.org/v.mp4"], tmp_path / "out", **{option[2:]: value})
    assert not (tmp_path / "out").exists()


def test_a_tracklet_partition_cannot_leave_the_output_folder(server, template, tmp_path):
    csv = tmp_path / "ted.csv"
    csv.write_text("video_id,start,end,bbox,fps,width,height,partition\n" f"{VID}#000005#000015,0,0,8-4-40-36,25.0,64,48,../../escaped\n")
    out = tmp_path / "deep" / "ted"
    result = download(None, out, tracklets=csv, url_template=template)
    assert result.ok, result.items
    assert not (tmp_path / "escaped").exists()
    assert all(Path(item["output"]).resolve().is_relative_to(out.resolve()) for item in result.items)


def test_a_read_only_folder_is_named_not_the_hidden_work_folder(server, template, tmp_path, monkeypatch):
    import errno
    import pathlib

    mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):  # the disk is mounted read-only: the work folder cannot be made
        if ".download-" in self.name:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    with pytest.raises(UserError) as caught:
        download_module.fetch(f"{server.url}/talk.mp4", tmp_path / "d")
    assert str(caught.value) == f"{tmp_path / 'd'}: cannot write it (Read-only file system); choose an output on a writable disk"


def test_a_cut_of_an_anamorphic_video_crops_the_frames_as_shown(tmp_path):
    """A video of non-square pixels (a DVD rip, HDV's 1440x1080): the box is in the frames as
    ``probe`` sizes them (square pixels), and the whole frame is the probed one."""
    source = tmp_path / "wide.mp4"
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1",
                    "-vf", "setsar=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(source)], check=True)
    shown = media.read_frames(source).array
    assert shown.shape[1:3] == (48, 128)  # stored 64x48, shown twice as wide
    assert download_module.cut(source, tmp_path / "whole.mp4", first=3, count=5) == 5
    assert (media.probe(tmp_path / "whole.mp4").width, media.probe(tmp_path / "whole.mp4").height) == (128, 48)
    assert download_module.cut(source, tmp_path / "right.mp4", first=3, count=5, box=(64, 0, 128, 48)) == 5
    right = media.read_frames(tmp_path / "right.mp4").array
    assert right.shape == (5, 48, 64, 3)
    error = np.abs(right[0].astype(int) - shown[3, :, 64:]).mean()  # the right half as shown (crf 18: a few levels)
    assert error < 8 and np.abs(right[0].astype(int) - shown[3, :, :64]).mean() > 10 * error
