"""magicanimate flip: mirrored clips with DensePose's left/right part swap, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli.cli import app
from magicanimate_cli.errors import UserError
from magicanimate_cli.flip import flip, flip_densepose_array, flip_labels_array

from preprocess_helpers import SYMMETRY_10_5, TABLE_10_3, display_p3_profile, save_sideways, write_clip

runner = CliRunner()


def test_package_tables_match_the_reference():
    from magicanimate_cli.densepose import PALETTE, POINT_LABEL_SYMMETRIES

    assert np.array_equal(np.asarray(PALETTE), TABLE_10_3)
    assert np.array_equal(np.asarray(POINT_LABEL_SYMMETRIES), SYMMETRY_10_5)


def test_every_part_colour_becomes_its_mirror_part_colour_exactly(rng):
    labels = rng.integers(0, 25, (7, 11), dtype=np.uint8)
    out, snapped, _, _ = flip_densepose_array(TABLE_10_3[labels])
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    assert np.array_equal(out, TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])
    assert snapped == 0
    # each of the 25 colours individually
    for label in range(25):
        single, _, _, _ = flip_densepose_array(TABLE_10_3[np.full((1, 1), label)])
        assert tuple(single[0, 0]) == tuple(TABLE_10_3[SYMMETRY_10_5[label]])


def test_lossy_colours_snap_to_the_nearest_palette_colour(rng):
    labels = rng.integers(0, 25, (20, 20), dtype=np.uint8)
    noisy = np.clip(TABLE_10_3[labels].astype(int) + rng.integers(-2, 3, (20, 20, 3)), 0, 255).astype(np.uint8)
    out, snapped, max_distance, _ = flip_densepose_array(noisy)
    assert np.array_equal(out, TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])
    assert snapped > 0 and 0 < max_distance <= np.sqrt(12)


def test_label_maps_are_relabelled_and_other_values_kept():
    labels = np.array([[0, 3, 4, 255], [23, 24, 5, 6]], np.uint8)
    out = flip_labels_array(labels)
    assert out.tolist() == [[255, 3, 4, 0], [5, 6, 23, 24]]


def test_flip_clip_folder(tmp_path):
    clip = tmp_path / "clip"
    arrays = write_clip(clip, count=3)
    (clip / "meta.json").write_text(json.dumps({"clip": "clip", "fps": 25.0}))
    (clip / "notes").mkdir()
    result = flip(clip, tmp_path / "out")
    out = tmp_path / "out"
    assert result.frames == 3 and result.snapped_pixels == 0 and result.ignored == ["notes"]
    assert sorted(p.name for p in out.iterdir()) == ["densepose", "densepose_labels", "images", "masks", "meta.json"]
    for i in range(3):
        name = f"{i:05d}.png"
        with Image.open(out / "images" / name) as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), arrays["images"][i][:, ::-1])
        with Image.open(out / "masks" / name) as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), arrays["masks"][i][:, ::-1])
        with Image.open(out / "densepose" / name) as im:
            assert im.mode == "RGB"
            expected = TABLE_10_3[SYMMETRY_10_5[arrays["densepose_labels"][i]]][:, ::-1]
            assert np.array_equal(np.asarray(im), expected)
        with Image.open(out / "densepose_labels" / name) as im:
            assert im.mode == "L"
            assert np.array_equal(np.asarray(im), SYMMETRY_10_5[arrays["densepose_labels"][i]][:, ::-1])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["flipped"] is True and meta["fps"] == 25.0 and meta["flip"]["of"] == str(clip)
    # flipping twice gives the original pixels back
    flip(out, tmp_path / "back")
    for sub in ("images", "masks", "densepose", "densepose_labels"):
        for i in range(3):
            a = np.asarray(Image.open(clip / sub / f"{i:05d}.png"))
            b = np.asarray(Image.open(tmp_path / "back" / sub / f"{i:05d}.png"))
            assert np.array_equal(a, b), sub


def test_phone_photos_are_mirrored_as_viewers_show_them(tmp_path):
    clip = tmp_path / "clip"
    arrays = write_clip(clip, count=2, width=40, height=30)
    for i, shown in enumerate(arrays["images"]):
        save_sideways(clip / "images" / f"{i:05d}.png", shown)
    flip(clip, tmp_path / "out")
    for i in range(2):
        with Image.open(tmp_path / "out" / "images" / f"{i:05d}.png") as im:
            assert im.getexif().get(0x0112, 1) == 1  # upright, no turn left for a viewer to apply again
            assert np.array_equal(np.asarray(im), arrays["images"][i][:, ::-1])


def test_a_photo_s_colour_profile_is_kept(tmp_path):
    # a mirror changes no colour: a Display P3 photo (an iPhone's) stays one, or it would show washed out
    clip = tmp_path / "clip"
    arrays = write_clip(clip, count=2, width=40, height=30)
    for i, fmt in enumerate(("png", "jpg")):
        (clip / "images" / f"{i:05d}.png").unlink()
        Image.fromarray(arrays["images"][i]).save(clip / "images" / f"{i:05d}.{fmt}", icc_profile=display_p3_profile())
    flip(clip, tmp_path / "out")
    for i, fmt in enumerate(("png", "jpg")):
        with Image.open(tmp_path / "out" / "images" / f"{i:05d}.{fmt}") as image:
            assert image.info.get("icc_profile") == display_p3_profile(), fmt
    with Image.open(tmp_path / "out" / "images" / "00000.png") as image:
        assert np.array_equal(np.asarray(image), arrays["images"][0][:, ::-1])


def test_names_modes_and_formats_are_kept(tmp_path, rng):
    clip = tmp_path / "clip"
    (clip / "images").mkdir(parents=True)
    (clip / "densepose").mkdir()
    (clip / "masks").mkdir()
    yy, xx = np.mgrid[0:16, 0:24]
    photo = np.dstack([xx * 10, yy * 15, (xx + yy) * 6]).astype(np.uint8)  # smooth, so JPEG keeps it well
    Image.fromarray(photo).save(clip / "images" / "frame_7.jpg", quality=90)
    labels = rng.integers(0, 25, (16, 24), dtype=np.uint8)
    rgba = np.dstack([TABLE_10_3[labels], rng.integers(0, 256, (16, 24), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(clip / "densepose" / "frame_7.png")
    palette_image = Image.fromarray(labels, "L").convert("P")
    palette_image.putpalette(TABLE_10_3.reshape(-1).tolist())
    palette_image.save(clip / "densepose" / "frame_8.png")
    Image.fromarray(labels > 12).save(clip / "masks" / "frame_7.png")  # mode "1"
    Image.fromarray(photo).save(clip / "images" / "frame_8.jpg", quality=90)  # every subfolder: the same frames
    Image.fromarray(labels > 12).save(clip / "masks" / "frame_8.png")
    flip(clip, tmp_path / "out")
    out = tmp_path / "out"
    with Image.open(out / "images" / "frame_7.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        with Image.open(clip / "images" / "frame_7.jpg") as source:
            original = np.asarray(source).astype(int)
            assert im.quantization == source.quantization  # same quality settings
        assert np.abs(np.asarray(im).astype(int) - original[:, ::-1]).mean() < 3
    with Image.open(out / "densepose" / "frame_7.png") as im:
        assert im.mode == "RGBA"
        arr = np.asarray(im)
        assert np.array_equal(arr[..., :3], TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])
        assert np.array_equal(arr[..., 3], rgba[..., 3][:, ::-1])
    with Image.open(out / "densepose" / "frame_8.png") as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im.convert("RGB")), TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])
    with Image.open(out / "masks" / "frame_7.png") as im:
        assert im.mode == "1" and np.array_equal(np.asarray(im), (labels > 12)[:, ::-1])


def test_refuses_renderings_that_are_not_viridis(tmp_path, rng):
    clip = tmp_path / "clip"
    (clip / "densepose").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(clip / "densepose" / "00000.png")
    result = runner.invoke(app, ["flip", str(clip), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "not a viridis DensePose rendering" in result.output
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    result = runner.invoke(app, ["flip", str(clip), "-o", str(tmp_path / "new" / "deep" / "out")])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()  # nor the folders made on the way to it


def test_cli_json_and_no_overwrite(tmp_path):
    clip = tmp_path / "clip"
    write_clip(clip, count=2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["flip", str(clip), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["frames"] == 2 and data["subfolders"] == ["images", "densepose", "masks", "densepose_labels"]
    again = runner.invoke(app, ["flip", str(clip), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output and len(again.output.strip().splitlines()) == 1
    assert runner.invoke(app, ["flip", str(clip), "-o", str(out), "--overwrite"]).exit_code == 0


@pytest.mark.parametrize("make", ["missing", "plain"])
def test_not_a_clip_folder(tmp_path, make):
    target = tmp_path / "x"
    if make == "plain":
        target.mkdir()
    result = runner.invoke(app, ["flip", str(target), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize("odd", ["one mask", "all masks"])
def test_parts_of_different_sizes_are_refused_before_any_work(tmp_path, odd):
    clip = tmp_path / "clip"
    write_clip(clip, count=3)  # 40x30
    for name in ["00001.png"] if odd == "one mask" else ["00000.png", "00001.png", "00002.png"]:
        Image.fromarray(np.zeros((60, 80), np.uint8)).save(clip / "masks" / name)
    result = runner.invoke(app, ["flip", str(clip), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    said = result.output.strip()
    if odd == "one mask":
        assert said == f"error: {clip / 'masks' / '00001.png'}: size 80x60 differs from the first frame's 40x30; resize the folder"
    else:
        assert said == (f"error: {clip}: its subfolders hold frames of different sizes "
                        "(images/ 40x30, densepose/ 40x30, masks/ 80x60, densepose_labels/ 40x30); redo the clip so they match")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # nothing written, no temporary


def _on_black(labels: np.ndarray) -> np.ndarray:
    """A viridis rendering of ``labels`` on a black canvas, as some published driving videos are drawn."""
    return np.where(labels[..., None] > 0, TABLE_10_3[labels], np.uint8(0)).astype(np.uint8)


def test_a_rendering_on_black_keeps_its_black_canvas(tmp_path, rng):
    # animate and align take viridis-on-black poses; flip must neither refuse them nor paint the canvas viridis(0)
    labels = np.zeros((2, 30, 40), np.uint8)
    labels[:, 5:28, 16:24] = rng.integers(1, 25, (2, 23, 8))  # the person: 15 % of the frame
    clip = tmp_path / "clip"
    (clip / "densepose").mkdir(parents=True)
    for i, frame in enumerate(labels):
        Image.fromarray(_on_black(frame)).save(clip / "densepose" / f"{i:05d}.png")
    result = flip(clip, tmp_path / "out")
    assert result.snapped_pixels == 0
    for i, frame in enumerate(labels):
        with Image.open(tmp_path / "out" / "densepose" / f"{i:05d}.png") as im:
            assert np.array_equal(np.asarray(im), _on_black(SYMMETRY_10_5[frame])[:, ::-1])
    # a lossy copy: the canvas snaps to black, the parts to their mirror colours
    noisy = np.clip(_on_black(labels[0]).astype(int) + rng.integers(-2, 3, (30, 40, 3)), 0, 255).astype(np.uint8)
    out, snapped, _, _ = flip_densepose_array(noisy)
    assert snapped > 0 and np.array_equal(out, _on_black(SYMMETRY_10_5[labels[0]])[:, ::-1])


def test_an_iuv_rendering_on_black_is_still_refused(tmp_path, rng):
    iuv = np.zeros((30, 40, 3), np.uint8)
    iuv[5:28, 16:24, 0] = rng.integers(1, 25, (23, 8))  # part index, then U and V
    iuv[5:28, 16:24, 1:] = rng.integers(0, 256, (23, 8, 2))
    (tmp_path / "clip" / "densepose").mkdir(parents=True)
    Image.fromarray(iuv).save(tmp_path / "clip" / "densepose" / "00000.png")
    with pytest.raises(UserError, match="not a viridis DensePose rendering"):
        flip(tmp_path / "clip", tmp_path / "out")


def test_a_palette_rendering_flipped_twice_is_the_same_file(tmp_path, rng):
    clip = tmp_path / "clip"
    (clip / "densepose").mkdir(parents=True)
    labels = rng.integers(0, 25, (16, 24), dtype=np.uint8)
    short = Image.fromarray(labels, "P")
    short.putpalette(TABLE_10_3.reshape(-1).tolist())  # 25 entries, as a palette PNG holds them
    short.save(clip / "densepose" / "00000.png")
    full = Image.fromarray(labels, "P")
    full.putpalette(TABLE_10_3.reshape(-1).tolist() + [7] * (768 - 75))  # 256 entries, the unused ones not palette colours
    full.save(clip / "densepose" / "00001.png")
    flip(clip, tmp_path / "once")
    flip(tmp_path / "once", tmp_path / "twice")
    for name in ("00000.png", "00001.png"):
        assert (tmp_path / "twice" / "densepose" / name).read_bytes() == (clip / "densepose" / name).read_bytes(), name
        with Image.open(tmp_path / "once" / "densepose" / name) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), TABLE_10_3[SYMMETRY_10_5[labels]][:, ::-1])


def test_a_video_is_told_to_become_a_clip_first(tmp_path):
    video = tmp_path / "dance.mp4"
    video.write_bytes(b"\0" * 64)
    result = runner.invoke(app, ["flip", str(video), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"magicanimate preprocess {video} -o clips/ --flip" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4"]
