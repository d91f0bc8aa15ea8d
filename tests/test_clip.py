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
