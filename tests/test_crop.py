"""magicanimate crop: center crop, fixed box, person-centred field of view; resampling per layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.cli import app
from magicanimate_cli.crop import (
    CropPlan,
    center_square,
    clip_box,
    compose_box,
    crop,
    fit_square,
    fov_window,
    parse_box,
    parse_fov,
    plan_crop,
    trimmed_box,
    unfit_box,
    unfit_square,
)
from magicanimate_cli.errors import UserError

from preprocess_helpers import (
    TABLE_10_3,
    add_sound,
    assert_keeps_sound,
    display_p3_profile,
    make_video,
    save_sideways,
    with_empty_sound,
    write_clip,
)

runner = CliRunner()


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_modes(fit):
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, :20] = 255  # a white band on the left
    out = fit_square(image, 64, fit, (68, 1, 84))
    assert out.shape == (64, 64, 3)
    if fit == "crop":
        assert out[32, 0].max() < 20  # the left band is cropped away
    elif fit == "pad":
        assert tuple(out[0, 32]) == (68, 1, 84)  # letterbox in the pose background colour
    else:
        assert out[32, 0].min() > 200  # squashed: the band is still there


def test_center_square():
    assert center_square((0, 0, 160, 90)) == (35, 0, 125, 90)
    assert center_square((10, 20, 40, 100)) == (10, 45, 40, 75)


@pytest.mark.parametrize(("width", "height", "fit", "box"), [
    (80, 48, "pad", (0, 13, 64, 51)), (48, 80, "pad", (13, 0, 51, 64)), (1080, 1920, "pad", (112, 0, 400, 512)),
    (81, 40, "pad", (0, 16, 64, 47)), (80, 48, "stretch", (0, 0, 64, 38)), (1080, 1920, "stretch", (0, 0, 288, 512)),
    (50, 50, "crop", (0, 0, 64, 64)),
])
def test_unfit_box_is_where_fit_square_put_the_image(width, height, fit, box):
    size = max(box[2], box[3])
    assert unfit_box(width, height, size, fit) == box
    if fit == "pad":  # the image's own pixels, and no row or column of the padding, inside the box
        image = np.full((height, width, 3), 200, np.uint8)
        fitted = fit_square(image, size, "pad", (0, 0, 0))
        inside = unfit_square(fitted, width, height, "pad")
        assert inside.shape == (box[3] - box[1], box[2] - box[0], 3)
        assert inside[1:-1, 1:-1].min() == 200 and fitted.min() == 0


def test_unfit_square_undoes_a_stretch_and_refuses_a_crop(rng):
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    squashed = fit_square(image, 64, "stretch", (0, 0, 0))
    back = unfit_square(squashed, 80, 48, "stretch")
    assert back.shape == (38, 64, 3)
    assert np.array_equal(back, np.asarray(Image.fromarray(squashed).resize((64, 38), Image.BICUBIC)))
    with pytest.raises(ValueError, match="only pad and stretch"):
        unfit_square(squashed, 80, 48, "crop")
    assert np.array_equal(unfit_square(squashed, 64, 64, "crop"), squashed)  # a square motion: nothing to undo, whatever the fit


@pytest.mark.parametrize("person", [(100, 50, 140, 200), (5, 5, 30, 60), (560, 300, 630, 350)])
def test_fov_window_holds_the_person_with_margin(person):
    width, height, aspect = 640, 360, 2.0
    x0, y0, x1, y1 = fov_window(person, aspect, width, height)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert abs((x1 - x0) / (y1 - y0) - aspect) < 0.05
    assert x0 <= person[0] and y0 <= person[1] and x1 >= person[2] and y1 >= person[3]
    # smallest: the person plus 10 % margin fills the height or the width (unless clamped by the frame)
    need_h = (person[3] - person[1]) * 1.2
    need_w = (person[2] - person[0]) * 1.2
    assert (y1 - y0) <= max(need_h, need_w / aspect) + 2 or (y1 - y0) == height


def test_fov_window_centres_on_the_person_away_from_borders():
    x0, y0, x1, y1 = fov_window((300, 100, 340, 180), 1.0, 1000, 1000)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (320, 140)


def test_fov_window_person_too_big_or_missing():
    assert fov_window((0, 0, 640, 360), 2.0, 640, 360) == (0, 20, 640, 340)  # largest 2:1 window, centred
    assert fov_window(None, 0.5, 640, 360) == (230, 0, 410, 360)  # centred, full height


def test_trimmed_box_ignores_specks():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 30:60] = True
    mask[0, 99] = True  # a speck
    assert trimmed_box(mask) == (30, 20, 60, 80)
    assert trimmed_box(np.zeros((5, 5), bool)) is None


def test_compose_box_maps_the_crop_into_the_source_its_input_was_cut_from():
    plan = CropPlan("center", (640, 320), (0, 0, 640, 320), (160, 0, 480, 320), (512, 512))
    assert compose_box(None, plan) == [160.0, 0.0, 480.0, 320.0]  # the input is the source
    assert compose_box([100, 50, 1380, 690], plan) == [420.0, 50.0, 1060.0, 690.0]  # input: that box, halved
    thirds = CropPlan("box", (30, 9), (1, 0, 4, 9), (1, 0, 4, 9), (3, 9))
    assert compose_box([10, 0, 110, 30], thirds) == [13.333, 0.0, 23.333, 30.0]  # 100/30 source pixels a pixel, rounded


def test_clip_box_is_robust_to_a_bad_frame():
    boxes = [(30, 20, 60, 80)] * 60 + [(0, 0, 100, 100)] + [None]
    assert clip_box(boxes) == (30, 20, 60, 80)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,5,20", "-1,0,5,5"])
def test_parse_box_errors(text):
    with pytest.raises(UserError, match="--box"):
        parse_box(text)


@pytest.mark.parametrize(("text", "box"), [
    ("10.5,20.5,100.5,80.5", (10, 20, 101, 81)),  # outwards, where rounding half to even gave 10,20,100,80
    ("11.5,21.5,101.5,81.5", (11, 21, 102, 82)),  # ... and 12,22,102,82: the size moved with the parity
    ("10.5,0,11.5,5", (10, 0, 12, 5)),  # a region 1 pixel wide over two pixels is held by both
    ("-0.4,0.2,5.01,4.999", (0, 0, 6, 5)),  # a detector's box just outside the frame starts at 0
    ("10.0,20,1e2,80", (10, 20, 100, 80)),  # whole numbers written as decimals are whole pixels
])
def test_a_fractional_box_is_rounded_outwards_to_the_pixels_that_hold_it(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize(("text", "said"), [
    ("0.1,0.1,0.9,0.9", "--box 0.1,0.1,0.9,0.9: coordinates are pixels, not fractions of the frame, e.g. --box 100,0,740,640"),
    ("0,0,0.5,1", "--box 0,0,0.5,1: coordinates are pixels, not fractions of the frame"),
    ("-1.5,0,5,5", "--box -1.5,0,5,5: need 0 <= x0 < x1"),
    ("inf,0,5,5", "--box inf,0,5,5: expected four numbers"),
])
def test_fractions_of_the_frame_and_boxes_outside_it_are_refused(text, said):
    with pytest.raises(UserError) as refused:
        parse_box(text)
    assert str(refused.value).startswith(said)


@pytest.mark.parametrize("text", ["1024", "1024x", "wxh", "0x512", "1x2x3"])
def test_parse_fov_errors(text):
    with pytest.raises(UserError, match="--fov"):
        parse_fov(text)


def test_a_large_fov_is_only_bounded_where_frames_take_its_size():
    assert parse_fov("16000x9000") == (16000, 9000)  # with --size N only its aspect counts
    with pytest.raises(UserError, match="^--fov 16000x9000: frames of that size are written here; at most 8192"):
        parse_fov("16000x9000", as_size=True)


def test_plan_modes(tmp_path):
    assert plan_crop(tmp_path, 160, 90, size=64).crop_box == (35, 0, 125, 90)
    plan = plan_crop(tmp_path, 160, 90, size=0, box="10,10,50,40")
    assert plan.crop_box == (10, 10, 50, 40) and plan.output_size == (40, 30)
    with pytest.raises(UserError, match="outside"):
        plan_crop(tmp_path, 160, 90, box="0,0,200,50")
    with pytest.raises(UserError, match="choose one"):
        plan_crop(tmp_path, 160, 90, box="0,0,20,20", fov="2x1")
    with pytest.raises(UserError, match="--size 0"):
        plan_crop(tmp_path, 160, 90, size=0)


# ----------------------------------------------------------------------------- files


def _quadrants(height=48, width=64):
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2] = (200, 0, 0)
    frame[:, width // 2 :] = (0, 0, 200)
    frame[:, :8] = (0, 200, 0)  # only outside the centred square
    return frame


def test_center_crop_video_to_video(tmp_path):
    source = media.write_frames(tmp_path / "in.mp4", np.stack([_quadrants()] * 5), fps=25)
    result = crop(source, tmp_path / "out.mp4", size=32)
    assert result.mode == "center" and result.crop_box == [8, 0, 56, 48] and result.frames == 5
    out = media.read_frames(tmp_path / "out.mp4")
    assert out.array.shape == (5, 32, 32, 3) and out.fps == 25
    assert out.array[:, :, :, 1].max() < 60  # the green strip at the left edge was cut away


def test_a_video_cropped_into_a_video_keeps_its_sound(tmp_path):
    frames = np.stack([_quadrants()] * 5)
    mute = media.write_frames(tmp_path / "mute.mp4", frames, fps=25)
    dance = add_sound(media.write_frames(tmp_path / "dance.mp4", frames, fps=25), 1.0, rising=True)
    crop(dance, tmp_path / "out.mp4", size=32)
    crop(mute, tmp_path / "mute_out.mp4", size=32)
    assert_keeps_sound(tmp_path / "out.mp4", dance, 0.2)
    assert media.audio_streams(tmp_path / "mute_out.mp4") == []
    assert np.array_equal(media.read_frames(tmp_path / "out.mp4").array, media.read_frames(tmp_path / "mute_out.mp4").array)


@pytest.mark.filterwarnings("default::magicanimate_cli.errors.InputWarning")  # as a user has it, not pyproject.toml's ignore
def test_json_lists_the_warning_of_a_sound_that_could_not_be_kept(tmp_path):
    frames = np.stack([_quadrants()] * 5)
    dance = add_sound(media.write_frames(tmp_path / "dance.mp4", frames, fps=25), 1.0)
    empty = with_empty_sound(dance, tmp_path / "empty.mkv")
    runner = CliRunner()
    kept = runner.invoke(app, ["crop", str(dance), "-o", str(tmp_path / "kept.mp4"), "--size", "32", "--json"])
    lost = runner.invoke(app, ["crop", str(empty), "-o", str(tmp_path / "lost.mp4"), "--size", "32", "--json"])
    assert kept.exit_code == 0 and "warnings" not in json.loads(kept.stdout)
    assert lost.exit_code == 0, lost.output
    said = [line.removeprefix("warning: ") for line in lost.stderr.splitlines() if line.startswith("warning: ")]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'lost.mp4'}: written without the sound of {empty}")
    assert json.loads(lost.stdout)["warnings"] == said  # what a person reads on stderr, a batch job reads in the JSON
    assert media.audio_streams(tmp_path / "lost.mp4") == [] and media.read_frames(tmp_path / "lost.mp4").array.shape == (5, 32, 32, 3)


def test_box_on_frames_folder_keeps_pixels_with_size_0(tmp_path, rng):
    frames = rng.integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    media.write_frames(tmp_path / "in", frames)
    crop(tmp_path / "in", tmp_path / "out", size=0, box="5,4,25,24")
    got = media.read_frames(tmp_path / "out").array
    assert np.array_equal(got, frames[:, 4:24, 5:25])


def test_an_odd_box_reports_the_size_written(tmp_path, rng):
    frames = rng.integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    source = media.write_frames(tmp_path / "in", frames)
    video = crop(source, tmp_path / "out.mp4", size=0, box="5,4,26,25")  # 21x21: H.264 pads it to 22x22
    assert video.output_size == [22, 22] and media.read_frames(tmp_path / "out.mp4").array.shape == (3, 22, 22, 3)
    assert video.crop_box == [5, 4, 26, 25]  # the source pixels cut out are still the box's
    folder = crop(source, tmp_path / "out", size=0, box="5,4,26,25")  # a folder keeps the size exact
    assert folder.output_size == [21, 21] and media.read_frames(tmp_path / "out").array.shape == (3, 21, 21, 3)


def test_single_image(tmp_path):
    media.write_png(tmp_path / "photo.png", _quadrants(), replace=False)
    crop(tmp_path / "photo.png", tmp_path / "square.png", size=16)
    assert media.read_image(tmp_path / "square.png").shape == (16, 16, 3)


def test_a_single_image_keeps_its_transparency(tmp_path, rng):
    # align and animate --align find the reference's person by its alpha: a crop made it white
    rgba = np.dstack([rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), np.where(np.arange(48) < 24, 0, 255).astype(np.uint8)[None].repeat(64, 0)])
    Image.fromarray(rgba).save(tmp_path / "cut-out.png")
    crop(tmp_path / "cut-out.png", tmp_path / "square.png", box="0,8,48,56", size=0)
    assert np.array_equal(media.read_alpha(tmp_path / "square.png"), rgba[8:56, :, 3])


@pytest.mark.parametrize("mode", ["CMYK", "I;16B", "F"])
def test_clip_frames_of_any_image_mode_crop_into_rgb(tmp_path, rng, mode):
    # a CMYK JPEG or a float TIFF failed ("cannot write mode CMYK as PNG"), a 16-bit big-endian
    # TIFF came out white (clipped to 255, not scaled): cropped as every reader reads them
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    if mode == "CMYK":
        image, name = Image.fromarray(rgb).convert("CMYK"), "00000.jpg"
    elif mode == "F":
        image, name = Image.fromarray(rgb[..., 0].astype(np.float32) / 255, "F"), "00000.tif"
    else:
        image, name = Image.frombytes("I;16B", (32, 32), (rgb[..., 0].astype(">u2") * 257).tobytes()), "00000.tif"
    (tmp_path / "clip" / "images").mkdir(parents=True)
    image.save(tmp_path / "clip" / "images" / name)
    for size in (32, 16):  # as stored, and resampled
        crop(tmp_path / "clip", tmp_path / f"out{size}", size=size)
        got = media.read_image(tmp_path / f"out{size}" / "images" / "00000.png")
        expected = media.read_image(tmp_path / "clip" / "images" / name)
        if size == 32:
            assert np.array_equal(got, expected)
        else:
            assert got.shape == (16, 16, 3) and abs(float(got.mean()) - float(expected.mean())) < 8


def test_a_single_image_output_that_appears_meanwhile_is_kept(tmp_path, monkeypatch):
    from magicanimate_cli import crop as crop_module

    media.write_png(tmp_path / "photo.png", _quadrants(), replace=False)
    original = crop_module.crop_image

    def another_job_writes_it(*args):
        (tmp_path / "square.png").write_bytes(b"another job's")
        return original(*args)

    monkeypatch.setattr(crop_module, "crop_image", another_job_writes_it)
    with pytest.raises(UserError, match="square.png: appeared while this run was writing it"):
        crop(tmp_path / "photo.png", tmp_path / "square.png", size=16)
    assert (tmp_path / "square.png").read_bytes() == b"another job's"
    crop(tmp_path / "photo.png", tmp_path / "square.png", size=16, overwrite=True)  # replaced when asked
    assert media.read_image(tmp_path / "square.png").shape == (16, 16, 3)


def test_clip_folder_fov_from_masks_and_resampling(tmp_path):
    clip = tmp_path / "clip"
    arrays = write_clip(clip, count=3, width=80, height=40, person=(56, 10, 70, 36))
    (clip / "meta.json").write_text(json.dumps({"clip": "clip", "crop_box": [100, 0, 260, 80]}))
    result = crop(clip, tmp_path / "out", size=0, fov="40x20")
    assert result.located_by == "masks" and result.person == [56, 10, 70, 36]
    x0, y0, x1, y1 = result.window
    assert x0 <= 56 and x1 >= 70 and y0 <= 10 and y1 >= 36 and (x1 - x0) == 2 * (y1 - y0)
    assert result.output_size == [40, 20]
    out = tmp_path / "out"
    for i in range(3):
        name = f"{i:05d}.png"
        dp = np.asarray(Image.open(out / "densepose" / name))
        assert dp.shape == (20, 40, 3)
        colours = {tuple(c) for c in dp.reshape(-1, 3)}
        assert colours <= {tuple(c) for c in TABLE_10_3}  # nearest keeps exact palette colours
        labels = np.asarray(Image.open(out / "densepose_labels" / name))
        assert np.array_equal(TABLE_10_3[labels], dp)  # renders and labels stay aligned
        assert Image.open(out / "masks" / name).mode == "L"
    meta = json.loads((out / "meta.json").read_text())
    # crop box composed into the original source's coordinates (input was a 2x downscale of x 100..260)
    assert meta["crop_box"] == [100 + 2 * x0, 2 * y0, 100 + 2 * x1, 2 * y1]
    assert meta["crops"][-1]["located_by"] == "masks"
    del arrays


def test_clip_folder_photos_are_cropped_as_viewers_show_them(tmp_path):
    # phone photos in images/ are stored sideways with an EXIF turn; masks/ and densepose/ were made
    # from the upright pictures (every reader applies the turn), so crop must apply it too
    clip = tmp_path / "clip"
    arrays = write_clip(clip, count=2, width=40, height=30)
    for i, shown in enumerate(arrays["images"]):
        save_sideways(clip / "images" / f"{i:05d}.png", shown)
    result = crop(clip, tmp_path / "out", size=0, box="5,0,35,30")
    assert result.source_size == [40, 30]
    for i in range(2):
        name = f"{i:05d}.png"
        assert np.array_equal(media.read_image(tmp_path / "out" / "images" / name), arrays["images"][i][:, 5:35])
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / name)), arrays["masks"][i][:, 5:35])


def test_display_p3_photos_are_cropped_in_srgb_as_viewers_show_them(tmp_path):
    # an iPhone's photos embed Display P3; the crop writes PNGs without a profile, so in sRGB
    red = np.full((30, 40, 3), (200, 60, 60), np.uint8)
    Image.fromarray(red).save(tmp_path / "photo.jpg", quality=95, icc_profile=display_p3_profile())
    crop(tmp_path / "photo.jpg", tmp_path / "square.png", size=16)
    clip = tmp_path / "clip"
    write_clip(clip, count=1, width=40, height=30)
    Image.fromarray(red).save(clip / "images" / "00000.png", icc_profile=display_p3_profile())
    crop(clip, tmp_path / "out", size=0, box="5,0,35,30")
    for written in (tmp_path / "square.png", tmp_path / "out" / "images" / "00000.png"):
        with Image.open(written) as image:
            assert "icc_profile" not in image.info, written
        colour = media.read_image(written)[8, 8].astype(int)
        assert colour[0] >= 210 and colour[1] <= 50, (written, colour)  # P3's red, redder in sRGB


def test_fov_square_output_is_person_centred(tmp_path):
    clip = tmp_path / "clip"
    write_clip(clip, count=2, width=160, height=60, person=(70, 10, 90, 50))
    result = crop(clip, tmp_path / "out", size=16, fov="2x1")
    x0, _, x1, _ = result.crop_box
    assert result.output_size == [16, 16] and x0 <= 70 and x1 >= 90
    assert abs((x0 + x1) / 2 - 80) <= 1


def test_fov_from_motion_and_from_nothing(tmp_path):
    moving = make_video(tmp_path / "moving.mp4", count=20, width=96, height=48, moving=True)
    result = crop(moving, tmp_path / "m.mp4", size=0, fov="1x1")
    assert result.located_by == "motion"
    x0, y0, x1, y1 = result.person
    assert x0 >= 40 and x1 <= 96  # the bar moves in the right half only
    still = media.write_frames(tmp_path / "still.mp4", np.full((5, 48, 96, 3), 90, np.uint8))
    result = crop(still, tmp_path / "s.mp4", size=0, fov="1x1")
    assert result.located_by == "center" and result.window == [24, 0, 72, 48]


def test_cli(tmp_path):
    clip = tmp_path / "clip"
    write_clip(clip, count=2)
    ok = runner.invoke(app, ["crop", str(clip), "-o", str(tmp_path / "out"), "--size", "16", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["ok"] and data["subfolders"] == ["images", "densepose", "masks", "densepose_labels"] and data["output_size"] == [16, 16]
    again = runner.invoke(app, ["crop", str(clip), "-o", str(tmp_path / "out")])
    assert again.exit_code == 2 and "--overwrite" in again.output
    for args in (["--box", "1,2,3"], ["--box", "0,0,0.5,0.5"], ["--fov", "nope"], ["--box", "0,0,5,5", "--fov", "2x1"], ["--size", "0"], ["--size", "3"]):
        bad = runner.invoke(app, ["crop", str(clip), "-o", str(tmp_path / "x"), *args])
        assert bad.exit_code == 2, args
        assert len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    missing = runner.invoke(app, ["crop", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "y.mp4")])
    assert missing.exit_code == 2
