"""``folders``: the folders a step creates are taken back when it fails, and only those."""

from __future__ import annotations

import pytest

from magicanimate_cli.folders import taking_back


def test_a_failed_step_takes_back_the_empty_folders_it_made_and_nothing_else(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), taking_back(tmp_path / "kept" / "new" / "deeper") as missing:
        assert missing == [tmp_path / "kept" / "new" / "deeper", tmp_path / "kept" / "new"]
        (tmp_path / "kept" / "new" / "deeper").mkdir(parents=True)
        raise KeyboardInterrupt  # Ctrl-C too
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not any((tmp_path / "kept").iterdir())


def test_a_folder_with_something_in_it_keeps_itself_and_those_above_it(tmp_path):
    with pytest.raises(RuntimeError), taking_back(tmp_path / "a" / "b" / "c"):
        (tmp_path / "a" / "b" / "c").mkdir(parents=True)
        (tmp_path / "a" / "b" / ".resume.safetensors").write_bytes(b"x")  # a resumable partial result
        raise RuntimeError("failed")
    assert not (tmp_path / "a" / "b" / "c").exists() and (tmp_path / "a" / "b" / ".resume.safetensors").is_file()


def test_a_step_that_succeeds_keeps_its_folders_unless_always(tmp_path):
    with taking_back(tmp_path / "done"):
        (tmp_path / "done").mkdir()
    with taking_back(tmp_path / "nothing" / "fetched", always=True):  # download: every video failed, exit 1, no exception
        (tmp_path / "nothing" / "fetched").mkdir(parents=True)
    with taking_back(tmp_path / "fetched", always=True):
        (tmp_path / "fetched").mkdir()
        (tmp_path / "fetched" / "talk.mp4").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "fetched"]
