"""The clip folder's meta.json records: what makes preprocessing resumable."""

from __future__ import annotations

import pytest

from magicanimate_cli.clip import Clip, is_clip_folder, read_meta, subfolders, versions
from magicanimate_cli.errors import UserError

from preprocess_helpers import write_clip


def test_stage_records_round_trip(tmp_path):
    clip = Clip(tmp_path / "c")
    clip.start("frames", {"fps": 25.0, "box": (1, 2)})
    assert read_meta(tmp_path / "c")["stages"]["frames"]["status"] == "running"  # saved before the work
    assert not clip.is_done("frames", {"fps": 25.0, "box": (1, 2)})
    clip.finish("frames", {"frames": 10})
    again = Clip(tmp_path / "c")
    assert again.is_done("frames", {"fps": 25.0, "box": [1, 2]})  # compared as JSON
    assert not again.is_done("frames", {"fps": 30.0, "box": [1, 2]})
    assert again.record("frames")["result"] == {"frames": 10} and again.record("frames")["seconds"] >= 0
    again.fail("densepose", "not installed", status="unavailable", hint="pip install x", params={})
    again.skip("matte", "--skip")
    stages = read_meta(tmp_path / "c")["stages"]
    assert stages["densepose"] == {**stages["densepose"], "status": "unavailable", "error": "not installed", "hint": "pip install x"}
    assert stages["matte"]["status"] == "skipped"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["meta.json"]  # no temporary left


def test_broken_meta_is_a_user_error(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="meta.json"):
        read_meta(tmp_path)


def test_layout_helpers(tmp_path):
    assert not is_clip_folder(tmp_path)
    write_clip(tmp_path / "c", count=1)
    assert is_clip_folder(tmp_path / "c")
    assert subfolders(tmp_path / "c") == ["images", "densepose", "masks", "densepose_labels"]
    assert {"magicanimate_cli", "ffmpeg"} <= set(versions()) and versions()["ffmpeg"].startswith("ffmpeg")


def test_a_clip_without_poses_is_refused_with_why_its_densepose_stage_failed(tmp_path):
    from magicanimate_cli.clip import motion_of

    folder = tmp_path / "clip"
    (folder / "images").mkdir(parents=True)
    clip = Clip(folder)
    clip.start("densepose", {})
    clip.fail("densepose", "detectron2 is not installed\n(see docs)", status="unavailable")
    with pytest.raises(UserError) as error:
        motion_of(folder)
    message = str(error.value)
    assert message == (f"{folder}: clip folder without densepose/ (its densepose stage unavailable: detectron2 is not "
                       f"installed (see docs)); run `magicanimate densepose {folder}` first")
    (folder / "meta.json").write_text("{damaged")  # a damaged record: the plain refusal, not a second error
    with pytest.raises(UserError, match=r"clip folder without densepose/; run"):
        motion_of(folder)


@pytest.mark.parametrize("command", [["animate", "REF"], ["densepose"], ["matte"]])
def test_a_clip_is_read_at_the_rate_it_records_and_another_fps_is_refused(tmp_path, command):
    # a clip made at 25 fps was read at --fps 30 without a word: the poses, masks or animation
    # played 1.2 times as fast, and out of step with the sound kept from its video
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from magicanimate_cli.cli import app

    write_clip(tmp_path / "clip")
    (tmp_path / "clip" / "meta.json").write_text(json.dumps({"format": 1, "fps": 25.0}))
    Image.new("RGB", (40, 30)).save(tmp_path / "ref.png")
    args = [str(tmp_path / "ref.png") if arg == "REF" else arg for arg in command]
    done = CliRunner().invoke(app, [*args, str(tmp_path / "clip"), "-o", str(tmp_path / "out.mp4"), "--fps", "30", "--models", str(tmp_path / "none")])
    assert done.exit_code == 2, done.output
    assert f"--fps 30: {tmp_path / 'clip'} is a clip made at 25 fps (meta.json)" in " ".join(done.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "ref.png"]  # nothing written
