"""media.paths: inputs as typed and outputs checked before the work (never an input, never the user's own files)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.errors import UserError


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
    with pytest.raises(UserError, match=r'^--labels "": an empty output path \(an unset shell variable\?\); name a folder$'):
        media.output_path("", "--labels")  # a folder option is not told to name a video
    with pytest.raises(UserError, match=r'^-o "": .*; name a video \(out\.mp4\) or a folder \(out/\)$'):
        media.output_path("")
    with pytest.raises(UserError, match=r"^a\.MP4/: ends in / \(a folder\) but \.MP4 names a video file"):
        media.output_path("a.MP4/")
    media.write_frames(tmp_path / "in.mp4", clip[:2])
    from magicanimate_cli.frames import frames

    frames("~/in.mp4", "~/frames")  # the library as the CLI: ~ is the home folder
    assert len(media.list_frame_files(tmp_path / "frames")) == 2


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


def test_check_output_removes_what_a_killed_run_left_even_when_it_refuses(tmp_path):
    # a run killed mid-way leaves its temporaries (an animation's scratch motion: hundreds of MB);
    # the next run's check removes them, also when it then refuses the output that is there
    import os
    import signal

    final = tmp_path / "out.mp4"
    final.write_bytes(b"earlier")
    child = "import sys, time\nfrom magicanimate_cli import files\nprint(files.temp_beside(sys.argv[1], directory=False), flush=True)\ntime.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
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


def test_gif_webm_and_webp_are_written_and_image_names_still_refused_for_a_clip(tmp_path):
    for name in ("out.gif", "out.webm", "out.webp", "OUT.WEBP"):
        assert media.check_output(tmp_path / name, overwrite=False) == tmp_path / name
        media.check_sequence_output(tmp_path / name)  # an output named .webp is an animated WebP
    assert media.is_video_output(tmp_path / "out.webp") and not media.is_video(tmp_path / "out.webp")  # a .webp input not there (or still) stays an image
    with pytest.raises(UserError, match="cannot write .avi video; use one of .gif, .m4v, .mkv, .mov, .mp4, .webm, .webp"):
        media.check_output(tmp_path / "out.avi", overwrite=False)
    with pytest.raises(UserError, match="an image file name, but this writes every frame"):
        media.check_sequence_output(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_an_animated_webp_is_a_video_and_a_still_one_an_image(tmp_path, clip):
    from PIL import Image

    media.write_frames(tmp_path / "anim.webp", clip[:3], fps=25)
    Image.fromarray(clip[0]).save(tmp_path / "still.webp")  # a photo: VP8, no animation flag
    Image.fromarray(clip[0]).convert("RGBA").save(tmp_path / "alpha.webp")  # VP8X, alpha flag only
    (tmp_path / "UPPER.WEBP").write_bytes((tmp_path / "anim.webp").read_bytes())
    (tmp_path / "empty.webp").write_bytes(b"")
    assert media.is_video(tmp_path / "anim.webp") and not media.is_image(tmp_path / "anim.webp")
    assert media.is_video(tmp_path / "UPPER.WEBP") and not media.is_image(tmp_path / "UPPER.WEBP")
    for name in ("still.webp", "alpha.webp", "empty.webp", "missing.webp"):  # missing: what its name says, as its error does
        assert media.is_image(tmp_path / name) and not media.is_video(tmp_path / name), name
    (tmp_path / "folder.webp").mkdir()
    assert not media.is_video(tmp_path / "folder.webp")
    assert media.is_video_output(tmp_path / "anim.webp") and media.is_video_output(tmp_path / "still.webp")
