"""DensePose IUV images -> MagicAnimate's driving frames (``iuv.py``, ``densepose(from_iuv=True)``,
``magicanimate densepose --from-iuv``): exact for lossless IUV, refused for anything else, no model."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.densepose import densepose, labels_from_iuv, render_labels
from magicanimate_cli.densepose import estimator as est
from magicanimate_cli.densepose.iuv import iuv_channel
from magicanimate_cli.densepose.stage import TooFewPeople
from magicanimate_cli.errors import UserError

from densepose_helpers import read_png

H, W = 40, 56


def known_labels(seed: int = 0) -> np.ndarray:
    """A person with every part 1..24 in blocks, on background 0."""
    labels = np.zeros((H, W), np.uint8)
    for part in range(1, 25):
        row, col = divmod(part - 1, 6)
        labels[4 + 8 * row : 10 + 8 * row, 4 + 8 * col : 11 + 8 * col] = part
    return np.roll(labels, seed, axis=1)


def iuv_of(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The IUV array DensePose makes (I, U·255, V·255 per pixel; all 0 on the background), channels in I, U, V order."""
    rng = np.random.default_rng(seed)
    uv = rng.integers(0, 256, (*labels.shape, 2), dtype=np.uint8) * (labels > 0)[..., None].astype(np.uint8)
    return np.dstack([labels, uv])


def write_caffe2(path, labels, seed=0):
    """As the original DensePose's infer_simple.py saves it: the (I, U, V) array through cv2.imwrite (BGR),
    so I is blue when read as RGB."""
    cv2 = pytest.importorskip("cv2")
    assert cv2.imwrite(str(path), iuv_of(labels, seed))


def write_rgb(path, labels, seed=0):
    """As scripts that save detectron2's (labels, uv·255) with Pillow do: I is red."""
    Image.fromarray(iuv_of(labels, seed)).save(path)


def iuv_folder(folder, count=3, writer=write_caffe2, empty=()):
    folder.mkdir(parents=True)
    names, labels = [f"{i + 1:04d}.png" for i in range(count)], []
    for i, name in enumerate(names):
        want = np.zeros((H, W), np.uint8) if i in empty else known_labels(i)
        writer(folder / name, want, seed=i)
        labels.append(want)
    return names, labels


# ----------------------------------------------------------------------------- labels_from_iuv


@pytest.mark.parametrize("writer, channel", [(write_caffe2, 2), (write_rgb, 0)])
def test_a_lossless_iuv_frame_is_the_render_of_its_labels_byte_for_byte(tmp_path, writer, channel):
    labels = known_labels()
    writer(tmp_path / "f_IUV.png", labels)
    iuv = media.read_image(tmp_path / "f_IUV.png")
    assert iuv_channel(iuv) == channel  # the channel that never exceeds 24
    assert int(iuv[..., 2 - channel].max()) > 24  # (the other one is U·255 or V·255)
    got = labels_from_iuv(iuv)
    assert got.dtype == np.uint8 and np.array_equal(got, labels)
    assert np.array_equal(render_labels(got), render_labels(labels))


def test_a_frame_without_anybody_is_valid_and_empty():
    assert not labels_from_iuv(np.zeros((H, W, 3), np.uint8)).any()


def test_what_is_not_lossless_iuv_is_refused_saying_why(tmp_path):
    labels = known_labels()
    with pytest.raises(ValueError, match=r"already DensePose in MagicAnimate's colours, not IUV"):
        labels_from_iuv(render_labels(labels))
    photo = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"not a DensePose IUV image: neither its blue nor its red channel .*blue reaches 255"):
        labels_from_iuv(photo)
    Image.fromarray(iuv_of(labels)[..., ::-1]).save(tmp_path / "iuv.jpg", quality=95)  # a JPEG copy: chroma blurs onto the background
    with pytest.raises(ValueError, match=r"not a (lossless )?DensePose IUV image"):
        labels_from_iuv(media.read_image(tmp_path / "iuv.jpg"))
    blurred = iuv_of(labels)[..., ::-1].copy()
    blurred[0, 0] = (3, 0, 0)  # a background pixel (I = 0) with U = 3: not what DensePose writes
    with pytest.raises(ValueError, match=r"not a lossless DensePose IUV image: 1 pixels of part 0"):
        labels_from_iuv(blurred)


# ----------------------------------------------------------------------------- the stage


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to need or load detectron2 fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("--from-iuv must not need detectron2")

    monkeypatch.setattr(est, "require_detectron2", refuse)
    monkeypatch.setattr(est, "load_estimator", refuse)


def test_an_iuv_folder_becomes_exact_driving_frames_without_a_model(tmp_path, no_model):
    names, labels = iuv_folder(tmp_path / "densepose", 4, empty=(2,))  # the TikTok dataset's names: 0001.png, ...
    result = densepose(tmp_path / "densepose", tmp_path / "poses", labels=tmp_path / "labels", from_iuv=True, fps=30)
    assert result.model == "iuv" and result.frames == 4 and result.fps == 30 and result.weights is None
    assert result.batch_size is result.min_score is result.max_people is None  # no model ran
    assert result.missing_frames == ["0003.png"] and result.filled == 0 and result.resumed == 0
    assert sorted(p.name for p in (tmp_path / "poses").iterdir()) == names
    for name, want in zip(names, labels):
        assert np.array_equal(read_png(tmp_path / "poses" / name), render_labels(want))
        assert np.array_equal(read_png(tmp_path / "labels" / name), want)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work folder left

    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        densepose(tmp_path / "densepose", tmp_path / "poses", from_iuv=True)
    again = densepose(tmp_path / "densepose", tmp_path / "poses", from_iuv=True, fill_missing=True, overwrite=True)
    assert again.filled == 1 and np.array_equal(read_png(tmp_path / "poses" / "0003.png"), render_labels(labels[1]))


def test_an_interrupted_conversion_resumes_where_it_stopped(tmp_path, no_model, monkeypatch):
    from magicanimate_cli.densepose import iuv, stage

    names, labels = iuv_folder(tmp_path / "in", 5)
    monkeypatch.setattr(stage, "IUV_CHUNK", 1)
    real, calls = iuv.labels_from_iuv, []

    def stopped_at_the_fourth(frame, *channel):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(frame, *channel)

    monkeypatch.setattr(iuv, "labels_from_iuv", stopped_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "poses", from_iuv=True)
    assert not (tmp_path / "poses").exists()
    result = densepose(tmp_path / "in", tmp_path / "poses", from_iuv=True)
    assert result.resumed == 3 and len(calls) == 3 + 1 + 2
    for name, want in zip(names, labels):
        assert np.array_equal(read_png(tmp_path / "poses" / name), render_labels(want))


def test_both_channel_orders_and_a_lossless_rgb_video_convert(tmp_path, no_model):
    _, labels = iuv_folder(tmp_path / "rgb", 3, writer=write_rgb)
    densepose(tmp_path / "rgb", tmp_path / "from_rgb", from_iuv=True)
    assert np.array_equal(read_png(tmp_path / "from_rgb" / "0002.png"), render_labels(labels[1]))

    iuv_folder(tmp_path / "bgr", 3)
    video = tmp_path / "iuv.mkv"  # lossless and RGB: bgr0 in FFV1
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-framerate", "25", "-i", str(tmp_path / "bgr" / "%04d.png"),
                    "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)], check=True)  # fmt: skip
    result = densepose(video, tmp_path / "from_video", from_iuv=True)
    assert result.frames == 3 and result.fps == 25
    for i, want in enumerate(labels):
        assert np.array_equal(read_png(tmp_path / "from_video" / media.frame_name(i)), render_labels(want))


def test_a_frame_where_both_channels_could_hold_the_parts_is_read_as_the_clips_other_frames(tmp_path, no_model):
    _, labels = iuv_folder(tmp_path / "rgb", 3, writer=write_rgb)  # I in red
    hand = np.zeros((H, W), np.uint8)
    hand[20:24, 30:34] = 4  # a hand entering the picture: its V·255 stays under 24, so blue could hold parts too
    rng = np.random.default_rng(9)
    u, v = rng.integers(30, 256, (H, W)), rng.integers(1, 20, (H, W))
    Image.fromarray(np.dstack([hand, u * (hand > 0), v * (hand > 0)]).astype(np.uint8)).save(tmp_path / "rgb" / "0004.png")
    assert iuv_channel(media.read_image(tmp_path / "rgb" / "0004.png")) == 2  # alone, it is read from blue
    densepose(tmp_path / "rgb", tmp_path / "poses", labels=tmp_path / "labels", from_iuv=True)
    for name, want in zip(["0001.png", "0004.png"], [labels[0], hand]):
        assert np.array_equal(read_png(tmp_path / "labels" / name), want)

    iuv_folder(tmp_path / "mixed", 3)  # I in blue
    write_rgb(tmp_path / "mixed" / "0004.png", known_labels(3))  # and one frame with I in red
    with pytest.raises(UserError, match=r"mixed/0004\.png: its part indices are in the red channel, but in the blue one in the clip's "
                                        r"frames before it: IUV images saved two ways"):
        densepose(tmp_path / "mixed", tmp_path / "mixed_poses", from_iuv=True)
    assert not (tmp_path / "mixed_poses").exists()


def test_an_iuv_mp4_is_refused_as_its_yuv_colours_lost_the_part_indices(tmp_path, no_model):
    iuv_folder(tmp_path / "bgr", 3)
    frames = np.stack([media.read_image(p) for p in media.list_frame_files(tmp_path / "bgr")])
    media.write_frames(tmp_path / "iuv.mp4", frames, 25.0)  # libx264, yuv420p
    decoded = np.stack(list(media.iter_frames(tmp_path / "iuv.mp4")))
    wrong = (np.clip(decoded[..., 2], 0, 24) != frames[..., 2])[frames[..., 2] > 0].mean()
    assert wrong > 0.3  # what the refusal spares: a large share of the person's pixels on another part
    with pytest.raises(UserError, match=r"iuv\.mp4: an IUV video stored as yuv420p has lost its part indices.*as PNGs") as info:
        densepose(tmp_path / "iuv.mp4", tmp_path / "poses", from_iuv=True)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "poses").exists()


def test_a_frame_that_is_not_iuv_is_refused_naming_it_and_nothing_is_left(tmp_path, no_model):
    iuv_folder(tmp_path / "in", 20)
    Image.fromarray(render_labels(known_labels())).save(tmp_path / "in" / "0018.png")  # a viridis render among them
    with pytest.raises(UserError, match=r"in/0018\.png: already DensePose in MagicAnimate's colours"):
        densepose(tmp_path / "in", tmp_path / "poses", from_iuv=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no work folder


def test_the_options_of_a_model_and_a_clip_folder_are_refused(tmp_path, no_model):
    iuv_folder(tmp_path / "in", 2)
    for kwargs, option in [({"config": "densepose_rcnn_R_101_FPN_s1x"}, "--config"), ({"weights": tmp_path / "w.pkl"}, "--weights"),
                           ({"min_score": 0.5}, "--min-score 0.5"), ({"max_people": 0}, "--max-people 0"), ({"batch_size": 8}, "--batch-size 8"),
                           ({"estimator": lambda frames: []}, "estimator")]:  # fmt: skip
        with pytest.raises(UserError, match=rf"^{option}: not used with --from-iuv"):
            densepose(tmp_path / "in", tmp_path / "poses", from_iuv=True, **kwargs)
    (tmp_path / "clip" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match=r"clip: a clip folder's images/ holds photos, not IUV; .*clip/densepose"):
        densepose(tmp_path / "clip", from_iuv=True)


def test_black_frames_count_as_nobody(tmp_path, no_model):
    iuv_folder(tmp_path / "none", 2, empty=(0, 1))
    with pytest.raises(UserError, match=r"all of its 2 IUV frames are black"):
        densepose(tmp_path / "none", tmp_path / "poses", from_iuv=True)
    iuv_folder(tmp_path / "few", 3, empty=(0, 1))
    with pytest.raises(TooFewPeople, match=r"the IUV frames show a person in only 1 of 3 frames .*--fill-missing") as info:
        densepose(tmp_path / "few", tmp_path / "poses", from_iuv=True)
    assert "--min-score" not in str(info.value)


# ----------------------------------------------------------------------------- IUV files saved other ways (read_iuv)


def converted(tmp_path, name, write, count=3):
    """The renders and label maps ``densepose --from-iuv`` makes of ``count`` IUV frames written by ``write(path, labels, seed)``."""
    folder = tmp_path / name
    folder.mkdir()
    for i in range(count):
        write(folder / f"{i + 1:04d}.png", known_labels(i), i)
    densepose(folder, tmp_path / f"{name}_poses", labels=tmp_path / f"{name}_labels", from_iuv=True)
    return [(read_png(tmp_path / f"{name}_poses" / f"{i + 1:04d}.png"), read_png(tmp_path / f"{name}_labels" / f"{i + 1:04d}.png"))
            for i in range(count)]  # fmt: skip


def write_16bit(scale):
    def write(path, labels, seed):
        """As OpenCV's imwrite saves DensePose's (I, U, V) made uint16: values as they are (scale 1) or scaled to 16 bits."""
        cv2 = pytest.importorskip("cv2")
        assert cv2.imwrite(str(path), iuv_of(labels, seed).astype(np.uint16) * scale)

    return write


@pytest.mark.parametrize("scale", [1, 257, 256])
def test_a_16bit_iuv_gives_the_frames_of_the_8bit_one(tmp_path, no_model, scale):
    # values 0..255 in a 16-bit PNG read as black (Pillow keeps the high byte): "all of its 3 IUV frames are black"
    want = converted(tmp_path, "eight", write_caffe2)
    assert Image.open(tmp_path / "eight" / "0001.png").mode == "RGB"
    got = converted(tmp_path, "sixteen", write_16bit(scale))
    assert media.is_16bit_colour(tmp_path / "sixteen" / "0001.png")
    for (render, labels), (want_render, want_labels) in zip(got, want):
        assert np.array_equal(labels, want_labels) and np.array_equal(render, want_render)
    assert np.array_equal(want[0][1], known_labels(0))


def test_a_16bit_iuv_of_unclear_values_is_refused_saying_what_was_found(tmp_path, no_model):
    cv2 = pytest.importorskip("cv2")
    iuv_folder(tmp_path / "in", 2)
    iuv = iuv_of(known_labels(2)).astype(np.uint16) * 257
    iuv[10, 10, 1] += 3  # not a multiple of 257: neither 8-bit values nor 8-bit ones scaled
    assert cv2.imwrite(str(tmp_path / "in" / "0003.png"), iuv)
    with pytest.raises(UserError, match=r"in/0003\.png: a 16-bit image whose values \(up to 65535\) are neither 0\.\.255 nor 8-bit "
                                        r"values scaled to 16 bits \(×257\), so its part indices are unclear; save the IUV images as 8-bit PNGs"):
        densepose(tmp_path / "in", tmp_path / "poses", from_iuv=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def iuv_video(path, iuv, pix_fmt, codec="ffv1"):
    """A video of IUV frames (``T×H×W×3`` uint8 or uint16, RGB) as people make one from numpy: raw RGB
    piped into the bundled ffmpeg, stored as ``pix_fmt``."""
    raw, source = (iuv, "rgb24") if iuv.dtype == np.uint8 else (iuv.astype("<u2"), "rgb48le")
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", source, "-s", f"{iuv.shape[2]}x{iuv.shape[1]}",
                    "-framerate", "25", "-i", "-", "-c:v", codec, "-pix_fmt", pix_fmt, str(path)], input=raw.tobytes(), check=True)  # fmt: skip
    return path


def small_clip(count=8, size=32, red=False):
    """``count`` frames of ``size``² IUV (every part, moving) and their label maps; I in blue, or in red."""
    labels = np.zeros((count, size, size), np.uint8)
    for part in range(1, 25):
        row, col = divmod(part - 1, 6)
        labels[:, 4 + 5 * row : 9 + 5 * row, 1 + 5 * col : 6 + 5 * col] = part
    labels = np.stack([np.roll(frame, i, axis=0) for i, frame in enumerate(labels)])
    iuv = np.stack([iuv_of(frame, i) for i, frame in enumerate(labels)])  # I, U, V
    return (iuv if red else iuv[..., ::-1]).copy(), labels


@pytest.mark.parametrize("codec, pix_fmt, name, scale, red", [
    ("ffv1", "rgb48le", "iuv.mkv", 1, False),  # values 0..255: read as 8 bits (ffmpeg scales them down) nearly black, refused
    ("png", "rgb48be", "iuv.mov", 1, True),
    ("ffv1", "rgba64le", "iuv.mkv", 257, False),
    ("png", "rgb48be", "iuv.mkv", 257, True),  # 8-bit values ×257 (these read right as 8 bits too)
])  # fmt: skip
def test_a_16bit_iuv_video_gives_the_frames_of_its_8bit_values(tmp_path, no_model, codec, pix_fmt, name, scale, red):
    iuv, labels = small_clip(red=red)
    video = iuv_video(tmp_path / name, iuv.astype(np.uint16) * scale, pix_fmt, codec)
    assert media.pixel_format(video).startswith(("rgb48", "gbrp16", "gbrap16"))
    result = densepose(video, tmp_path / "poses", labels=tmp_path / "labels", from_iuv=True)
    assert result.frames == 8 and result.missing_frames == []
    for i, want in enumerate(labels):
        assert np.array_equal(read_png(tmp_path / "labels" / media.frame_name(i)), want)
        assert np.array_equal(read_png(tmp_path / "poses" / media.frame_name(i)), render_labels(want))


def test_a_16bit_iuv_video_of_unclear_values_and_other_depths_are_refused_naming_the_fix(tmp_path, no_model):
    iuv, _ = small_clip()
    values = iuv.astype(np.uint16) * 257
    values[3, 10, 10, 1] += 3  # frame 3: neither 8-bit values nor 8-bit ones scaled
    with pytest.raises(UserError, match=r"unclear\.mkv \(frame 3\): a 16-bit frame whose values \(up to 65535\) are neither 0\.\.255 nor "
                                        r"8-bit values scaled to 16 bits \(×257\), so its part indices are unclear; make the video from "
                                        r"8-bit values \(ffmpeg -c:v ffv1 -pix_fmt bgr0\)") as info:
        densepose(iuv_video(tmp_path / "unclear.mkv", values, "rgb48le"), tmp_path / "poses", from_iuv=True)
    assert "\n" not in str(info.value) and not (tmp_path / "poses").exists()

    # 10 bits: its values as they are, or 8-bit ones rescaled (ffmpeg: ×4), cannot be told apart
    video = iuv_video(tmp_path / "ten.mkv", iuv.astype(np.uint16), "gbrp10le")
    with pytest.raises(UserError, match=r"ten\.mkv: an IUV video stored as gbrp10le, neither 8 nor 16 bits per channel, whose part "
                                        r"indices are unclear .*-pix_fmt rgb48le \(16 bits\)"):
        densepose(video, tmp_path / "poses", from_iuv=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ten.mkv", "unclear.mkv"]


def test_a_grey_iuv_holding_only_the_part_indices_converts_in_8_and_16_bits(tmp_path, no_model):
    # a 16-bit grey one (numpy uint16 through Pillow: mode I;16) was scaled down to black by read_image
    want = converted(tmp_path, "eight", write_caffe2)
    for name, dtype in [("grey8", np.uint8), ("grey16", np.uint16)]:
        got = converted(tmp_path, name, lambda path, labels, seed: Image.fromarray(labels.astype(dtype)).save(path))
        assert Image.open(tmp_path / name / "0001.png").mode == ("L" if dtype == np.uint8 else "I;16")
        for (render, labels), (want_render, want_labels) in zip(got, want):
            assert np.array_equal(labels, want_labels) and np.array_equal(render, want_render)


def test_a_transparent_background_is_background_and_opaque_pixels_keep_their_values(tmp_path, no_model):
    # composited on white (read_image), the background made the frame "not a DensePose IUV image"
    def write_rgba(path, labels, seed):
        iuv = iuv_of(labels, seed)
        iuv[labels == 0] = 255  # what is under a transparent pixel does not count
        Image.fromarray(np.dstack([iuv, np.where(labels > 0, 255, 0).astype(np.uint8)]), "RGBA").save(path)

    want = converted(tmp_path, "rgb", write_rgb)
    got = converted(tmp_path, "rgba", write_rgba)
    assert Image.open(tmp_path / "rgba" / "0001.png").mode == "RGBA"
    for (render, labels), (want_render, want_labels) in zip(got, want):
        assert np.array_equal(labels, want_labels) and np.array_equal(render, want_render)

    iuv_folder(tmp_path / "blended", 2, writer=write_rgb)
    iuv = np.dstack([iuv_of(known_labels(2)), np.full((H, W), 255, np.uint8)])
    iuv[5:7, 5:7, 3] = 128  # half transparent: a blended or resized copy
    Image.fromarray(iuv, "RGBA").save(tmp_path / "blended" / "0003.png")
    with pytest.raises(UserError, match=r"blended/0003\.png: 4 pixels are partly transparent, as in a blended or resized copy"):
        densepose(tmp_path / "blended", tmp_path / "blended_poses", from_iuv=True)


def test_a_jpeg_among_the_pngs_is_refused_as_lossy_even_when_black(tmp_path, no_model):
    # a black JPEG (nobody) was taken as a frame, and an IUV one refused without saying it is the JPEG
    for name, iuv in [("black", np.zeros((H, W, 3), np.uint8)), ("person", iuv_of(known_labels(2))[..., ::-1])]:
        iuv_folder(tmp_path / name, 2)
        Image.fromarray(np.ascontiguousarray(iuv)).save(tmp_path / name / "0003.jpg", quality=100)
        with pytest.raises(UserError, match=rf"{name}/0003\.jpg: a JPEG, whose lossy compression moves part indices onto other parts; "
                                            "give --from-iuv the IUV images as PNGs"):
            densepose(tmp_path / name, tmp_path / f"{name}_poses", from_iuv=True)
        assert not (tmp_path / f"{name}_poses").exists()


def test_caffe2_densepose_output_with_its_inds_files_is_refused_saying_which_to_move(tmp_path, no_model):
    # infer_simple.py writes NAME_IUV.png and NAME_INDS.png side by side: "frames named two ways ... rename them one way"
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "infer_simple"
    folder.mkdir()
    for i in range(2):
        assert cv2.imwrite(str(folder / f"frame{i:04d}_IUV.png"), iuv_of(known_labels(i), i))
        assert cv2.imwrite(str(folder / f"frame{i:04d}_INDS.png"), (known_labels(i) > 0).astype(np.uint8))
    with pytest.raises(UserError, match=r"infer_simple: holds DensePose's \*_INDS\.png .* beside its \*_IUV\.png; move the \*_INDS\.png"):
        densepose(folder, tmp_path / "poses", from_iuv=True)
    for inds in folder.glob("*_INDS.png"):
        inds.rename(tmp_path / inds.name)
    assert densepose(folder, tmp_path / "poses", from_iuv=True).frames == 2


# ----------------------------------------------------------------------------- the command


def test_cli_converts_and_refuses_in_one_line(tmp_path, no_model):
    from magicanimate_cli.cli import app

    names, labels = iuv_folder(tmp_path / "in", 3)
    result = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "--from-iuv", "-o", str(tmp_path / "poses"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True and payload["model"] == "iuv" and payload["frames"] == 3
    assert not {"batch_size", "min_score", "max_people"} & set(payload)  # the model's settings: no model ran
    assert payload["min_detected"] == 0.5 and payload["smooth"] == 0 and payload["weights"] is None
    for name, want in zip(names, labels):
        assert np.array_equal(read_png(tmp_path / "poses" / name), render_labels(want))

    bad = CliRunner().invoke(app, ["densepose", str(tmp_path / "poses"), "--from-iuv", "-o", str(tmp_path / "again"), "--json"])
    said = f"{tmp_path / 'poses' / '0001.png'}: already DensePose in MagicAnimate's colours, not IUV: use it as the motion as it is, without converting"
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines() == [f"error: {said}"]
    assert json.loads(bad.stdout) == {"ok": False, "error": said, "exit_code": 2}
    assert not (tmp_path / "again").exists()


def test_a_gif_whose_stored_frames_would_not_fit_the_disk_is_refused_before_any_frame_is_read(tmp_path, no_model, monkeypatch):
    # the renders of a GIF are kept uncompressed until the palette pass: a long clip on a small disk
    # is refused before the (long, with a model) estimation, not after it
    import magicanimate_cli.files
    from magicanimate_cli.densepose import iuv

    iuv_folder(tmp_path / "in", 4)
    frame = media.probe(tmp_path / "in")
    need = frame.width * frame.height * 3 * 4
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: need - 1)
    monkeypatch.setattr(iuv, "read_iuv", lambda path: pytest.fail("a frame was read"))
    with pytest.raises(UserError, match=r"poses\.gif: its 4 frames of \d+x\d+ are kept uncompressed until the GIF is encoded"):
        densepose(tmp_path / "in", tmp_path / "poses.gif", from_iuv=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    monkeypatch.undo()  # the disk's real room
    assert densepose(tmp_path / "in", tmp_path / "poses.gif", from_iuv=True).frames == 4
