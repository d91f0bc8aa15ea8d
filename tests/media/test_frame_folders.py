"""media.frame_folders: the frames of a folder, in frame order, or a refusal naming why there is none."""


import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError


def test_folders_sort_numerically(tmp_path, clip):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in (10, 9, 1):
        Image.fromarray(clip[0]).save(folder / f"frame{i}.png")
    assert [p.name for p in media.list_frame_files(folder)] == ["frame1.png", "frame9.png", "frame10.png"]


def test_frames_named_two_ways_are_refused_naming_one_of_each(tmp_path, clip):
    # sorted by name, 0001.png, frame_0002.png, 0003.png were read as frames 1, 3, 2, and a cover.jpg
    # beside the frames as the last frame; two files for frame 1 (1.png, 01.png) in either order
    def folder(*names):
        made = tmp_path / str(len(list(tmp_path.iterdir())))
        made.mkdir()
        for name in names:
            Image.fromarray(clip[0]).save(made / name)
        return made

    two_ways = {
        ("0001.png", "frame_0002.png", "0003.png"): "0001.png and frame_0002.png",
        ("frame_0001.png", "frame_0002.png", "img_0001.png"): "frame_0001.png and img_0001.png",
        ("00000.png", "00001.png", "cover.jpg"): "00000.png and cover.jpg",
        ("Frame_0001.png", "frame_0002.png"): "Frame_0001.png and frame_0002.png",
    }
    for names, examples in two_ways.items():
        with pytest.raises(UserError, match=rf": frames named two ways \({examples}\), so their order is unclear; rename them one way"):
            media.list_frame_files(folder(*names))
    with pytest.raises(UserError, match=r"01.png and 1.png: two frames of one number in the folder; keep one of them"):
        media.list_frame_files(folder("01.png", "1.png", "2.png"))
    result = CliRunner().invoke(app, ["crop", str(folder("0001.png", "frame_0002.png")), "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "frames named two ways" in result.output
    one_way = [("1.png", "2.png", "10.png"), ("frame_001.png", "frame_002.png", "frame_10.png"), ("a.png", "b.png", "c.png"),
               ("shot1_0001.png", "shot1_0002.png", "shot2_0001.png"), ("00000.png", "00001.jpg", "00002.jfif")]
    for names in one_way:  # numbers in order, padded or not; names without numbers in name order
        assert [p.name for p in media.list_frame_files(folder(*reversed(names)))] == list(names)


def test_two_frames_of_one_name_are_refused(tmp_path, clip):
    media.write_frames(tmp_path / "f", clip[:3])
    Image.fromarray(clip[1]).save(tmp_path / "f" / "00001.jpg")
    with pytest.raises(UserError, match=r"00001.jpg and 00001.png: two frames of one name in the folder; keep one of them"):
        media.list_frame_files(tmp_path / "f")
    (tmp_path / "f" / "00001.jpg").rename(tmp_path / "f" / "00003.jfif")  # Windows' name for a web JPEG
    assert [p.name for p in media.list_frame_files(tmp_path / "f")] == ["00000.png", "00001.png", "00002.png", "00003.jfif"]
