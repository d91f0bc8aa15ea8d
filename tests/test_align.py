"""``magicanimate align`` and ``animate --align``: the driving body moved onto the reference person.

The oracles are independent of the module: boxes are measured here with plain numpy on synthetic
DensePose clips drawn with the documented palette (preprocess_helpers.TABLE_10_3), the integer
scale case is checked against ``np.kron`` upsampling, and ``animate --align`` against ``align``
followed by ``animate``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.align import align, aligned_frames, plan_alignment, reference_box
from magicanimate_cli.cli import app
from magicanimate_cli.crop import fit_square
from magicanimate_cli.densepose.charts import Detections
from magicanimate_cli.errors import UserError

from preprocess_helpers import TABLE_10_3, add_sound, assert_keeps_sound, write_clip

VIRIDIS_0 = tuple(int(v) for v in TABLE_10_3[0])
BLACK = (0, 0, 0)
runner = CliRunner()


def draw_clip(boxes, size=96, background=VIRIDIS_0, width=None, seed=0, part=1) -> np.ndarray:
    """A DensePose clip: frame i has random body-part colours (labels 1..24) in ``boxes[i]`` (None: nobody).

    ``part``: the side of the squares of one label (1: every pixel its own label; real renders
    are made of solid parts).
    """
    rng = np.random.default_rng(seed)
    clip = np.empty((len(boxes), size, width or size, 3), np.uint8)
    clip[:] = background
    for frame, box in zip(clip, boxes):
        if box is not None:
            x0, y0, x1, y1 = box  # parts beyond the frame are cut off
            labels = np.kron(rng.integers(1, 25, (-(-(y1 - y0) // part), -(-(x1 - x0) // part))), np.ones((part, part), np.int64))
            patch = TABLE_10_3[labels[: y1 - y0, : x1 - x0]]
            frame[y0:y1, x0:x1] = patch[: frame.shape[0] - y0, : frame.shape[1] - x0]
    return clip


def measured_box(frame, background):
    """Box (x0, y0, x1, y1), ends exclusive, of the pixels that are not exactly ``background``."""
    body = (frame != np.asarray(background, np.uint8)).any(axis=-1)
    if not body.any():
        return None
    ys, xs = np.nonzero(body)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def align_poses(clip, ref_box, **kwargs):
    """``aligned_frames`` gathered in memory: ``(aligned clip, Alignment)``."""
    alignment, moved = aligned_frames(clip, ref_box, **kwargs)
    return np.stack(list(moved)), alignment


def colours(frames) -> set:
    return set(map(tuple, np.asarray(frames).reshape(-1, 3).tolist()))


# ----------------------------------------------------------------------------- geometry

BODY = (30, 20, 50, 70)  # 20 wide, 50 tall
CASES = {
    "scaled up": ([BODY] * 3, (20, 6, 44, 66)),  # 1.2x
    "scaled down": ([BODY] * 3, (60, 40, 72, 70)),  # 0.6x, moved right and down
    "shifted only": ([BODY] * 3, (5, 40, 25, 90)),
    "empty frames first": ([None, None, BODY, BODY], (10, 10, 30, 60)),
    "body cut by the frame": ([(30, 50, 50, 120)] * 2, (40, 10, 60, 56)),  # legs below the input frame: 46 px seen
    "non-integer scale": ([(31, 17, 44, 60)] * 2, (12, 33, 37, 91)),
}


@pytest.mark.parametrize("anchor", ["feet", "center", "head"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_body_lands_on_the_reference_box(case, anchor):
    boxes, ref = CASES[case]
    clip = draw_clip(boxes)
    aligned, alignment = align_poses(clip, ref, anchor=anchor)
    first = next(i for i, box in enumerate(boxes) if box is not None)
    got = measured_box(aligned[first], VIRIDIS_0)
    body = measured_box(clip[first], VIRIDIS_0)
    ref_height, body_height = ref[3] - ref[1], body[3] - body[1]
    assert alignment.scale == pytest.approx(ref_height / body_height)
    if body[2] - body[0] == round((ref[2] - ref[0]) / ref_height * body_height):  # same aspect: the whole box matches
        assert np.abs(np.subtract(got, ref)).max() <= 1, (got, ref)
    else:  # the height and the anchor's column match
        assert abs((got[3] - got[1]) - ref_height) <= 1
        assert abs((got[0] + got[2]) / 2 - (ref[0] + ref[2]) / 2) <= 1
    for index, box in enumerate(boxes):
        if box is None:  # frames where nobody is visible stay empty
            assert (aligned[index] == VIRIDIS_0).all()


@pytest.mark.parametrize("anchor", ["feet", "center", "head"])
def test_the_anchor_point_matches_when_the_aspect_differs(anchor):
    clip = draw_clip([(20, 10, 60, 50)])  # 40 wide, 40 tall (arms out)
    ref = (40, 30, 50, 70)  # 10 wide, 40 tall: scale 1, the body overhangs the box sideways
    got = measured_box(align_poses(clip, ref, anchor=anchor)[0][0], VIRIDIS_0)
    assert (got[1], got[3]) == (30, 70) and (got[0] + got[2]) / 2 == 45


def test_median_box_ignores_outliers_and_empty_frames():
    boxes = [None, (10, 30, 20, 60), BODY, BODY, None, BODY, (0, 0, 90, 90)]
    clip = draw_clip(boxes)
    ref = (20, 6, 44, 66)
    aligned, alignment = align_poses(clip, ref, frames="median")
    assert alignment.body_box == BODY
    for index in (2, 3, 5):
        assert np.abs(np.subtract(measured_box(aligned[index], VIRIDIS_0), ref)).max() <= 1
    first = align_poses(clip, ref, frames="first")[1]
    assert first.body_box == (10, 30, 20, 60)  # the first frame with a body, not frame 0


def test_parts_pushed_out_of_the_frame_are_clipped_not_squeezed():
    clip = draw_clip([(20, 10, 30, 30), (50, 10, 60, 30)])  # frame 1: the body steps right
    aligned, alignment = align_poses(clip, (30, 20, 50, 60))  # scale 2, shift (-10, 0) for the feet
    assert alignment.scale == 2 and alignment.shift == (-10, 0)
    for frame, out in zip(clip, aligned):
        expected = np.kron(frame, np.ones((2, 2, 1), np.uint8))[:96, 10 : 10 + 96]  # out[y, x] = in[y // 2, (x + 10) // 2]
        assert np.array_equal(out, expected)
    assert measured_box(aligned[1], VIRIDIS_0) == (90, 20, 96, 60)  # cut at the edge, still 2x wide per pixel


def test_no_new_colours_and_uncovered_areas_take_the_clip_background():
    clip = draw_clip([(5, 5, 90, 90), (10, 0, 96, 96)], background=BLACK, seed=3)
    aligned, alignment = align_poses(clip, (40, 50, 60, 80))  # shrink to about a third
    assert alignment.background == BLACK
    assert colours(aligned) <= colours(clip)
    assert (aligned[:, :40] == 0).all() and (aligned[:, :, :30] == 0).all()  # filled with black, not viridis(0)


def test_a_clip_without_a_body_is_a_user_error():
    with pytest.raises(UserError, match="no DensePose body"):
        plan_alignment(draw_clip([None, None]), (10, 10, 20, 20), source="empty.mp4")


def test_letterboxed_black_clip_keeps_its_background(tmp_path):
    """--fit pad letterboxes a black clip in black: the bars and the resize seam are no body."""
    clip = draw_clip([(70, 10, 90, 60)] * 2, size=64, width=128, background=BLACK)
    motion = tmp_path / "wide"
    motion.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(motion / f"{i:05d}.png")
    reference = rgba_reference(tmp_path / "ref.png", 64, (20, 8, 40, 58))
    result = align(reference, motion, tmp_path / "out", size=64, fit="pad")
    assert result.transform["background"] == [0, 0, 0]
    # padded to 128x128 (32 rows on top) then halved: the body is (35, 21, 45, 46), give or take the bicubic edge
    assert result.transform["body_box"] == pytest.approx([35, 21, 45, 46], abs=1)
    assert VIRIDIS_0 not in colours(media.read_frames(tmp_path / "out").array)


# ----------------------------------------------------------------------------- the reference person


def rgba_reference(path, size, box, height=None):
    """An RGBA image whose opaque pixels are the person box ``box``; the rest transparent."""
    rng = np.random.default_rng(1)
    image = np.zeros((height or size, size, 4), np.uint8)
    image[..., :3] = rng.integers(0, 256, image[..., :3].shape)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1, 3] = 255
    Image.fromarray(image, "RGBA").save(path)
    return path


def rgb_reference(path, size=64):
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_reference_box_from_the_alpha_channel_through_the_fit(tmp_path):
    # 128 wide, 96 tall; center crop to 96x96 (16 px off the left), then 96 -> 64 (x 2/3)
    reference = rgba_reference(tmp_path / "ref.png", 128, (40, 12, 70, 84), height=96)
    found = reference_box(reference, 64, "crop")
    assert found.source == "alpha"
    assert np.abs(np.subtract(found.box, (16, 8, 36, 56))).max() <= 1


class FakeSegmenter:
    """A PaddleSeg segmenter's interface: ``N×H×W×3`` uint8 in, ``N×H×W`` person probability out."""

    def __init__(self, box):
        self.box = box
        self.calls = 0

    def __call__(self, frames):
        self.calls += 1
        out = np.zeros(frames.shape[:3], np.float32)
        x0, y0, x1, y1 = self.box
        out[:, y0:y1, x0:x1] = 0.9
        return out


class FakeEstimator:
    """detectron2-shaped DensePose results: one person whose box is all label 5."""

    def __init__(self, box):
        self.box = box

    def __call__(self, frames):
        x0, y0, x1, y1 = self.box
        fine = np.full((1, 25, 8, 8), -4.0, np.float32)
        fine[:, 5] = 4.0
        return [
            Detections(np.array([[x0, y0, x1 - x0, y1 - y0]], np.float32), np.array([0.99], np.float32), np.ones((1, 2, 8, 8), np.float32) * [[[[-1]], [[1]]]], fine)
            for _ in frames
        ]


def test_reference_box_from_a_matting_mask(tmp_path):
    segmenter = FakeSegmenter((12, 4, 30, 60))
    found = reference_box(rgb_reference(tmp_path / "ref.png"), 64, "crop", segmenter=segmenter)
    assert (found.source, found.box, segmenter.calls) == ("matte", (12, 4, 30, 60), 1)
    assert found.notes and found.notes[0].startswith("alpha:")


def test_alpha_comes_before_matting_and_ref_box_before_both(tmp_path):
    reference = rgba_reference(tmp_path / "ref.png", 64, (10, 10, 20, 50))
    segmenter = FakeSegmenter((30, 4, 50, 60))
    assert reference_box(reference, 64, "crop", segmenter=segmenter).source == "alpha" and segmenter.calls == 0
    found = reference_box(reference, 64, "crop", ref_box="1,2,33,44", segmenter=segmenter)
    assert (found.source, found.box) == ("ref-box", (1, 2, 33, 44))


def test_missing_matting_weights_fall_through_to_densepose(tmp_path):
    """PaddleSeg is installed here but has no weights: a note, then the next source."""
    found = reference_box(rgb_reference(tmp_path / "ref.png"), 64, "crop", models=tmp_path / "no-models", estimator=FakeEstimator((8, 6, 40, 62)))
    assert (found.source, found.box) == ("densepose", (8, 6, 40, 62))
    assert [note.split(":")[0] for note in found.notes] == ["alpha", "matte"]


def test_nothing_available_is_one_line_naming_the_options(tmp_path):
    reference = rgb_reference(tmp_path / "ref.png")
    with pytest.raises(UserError) as error:
        reference_box(reference, 64, "crop", models=tmp_path / "no-models")
    message = str(error.value)
    assert "\n" not in message and str(reference) in message
    for option in ("--ref-box", "alpha", "matte:", "densepose:", "transparent background"):
        assert option in message


@pytest.mark.parametrize("bad", ["1,2,3", "5,5,2,9", "a,b,c,d", "200,200,300,300", "0,0,999,999", "-4,0,30,30"])
def test_bad_ref_boxes_are_user_errors(tmp_path, bad):
    with pytest.raises(UserError, match="--ref-box"):
        reference_box(rgb_reference(tmp_path / "ref.png"), 64, "crop", ref_box=bad)


# ----------------------------------------------------------------------------- files and the CLI


def write_frames_folder(folder, clip):
    folder.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


def test_align_writes_frames_and_the_transform(tmp_path):
    clip = draw_clip([None, BODY, BODY], size=64 + 32)
    motion = write_frames_folder(tmp_path / "poses", clip)
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    result = align(reference, motion, tmp_path / "out", size=96)
    written = media.read_frames(tmp_path / "out").array
    assert written.shape == (3, 96, 96, 3) and result.frames == 3
    assert np.array_equal(written, align_poses(clip, (20, 6, 44, 66))[0])
    assert colours(written) <= colours(clip)
    assert result.transform["ref_box_source"] == "alpha" and result.transform["scale"] == pytest.approx(1.2)
    with pytest.raises(UserError, match="--overwrite"):
        align(reference, motion, tmp_path / "out", size=96)


def test_a_gif_whose_stored_frames_would_not_fit_the_disk_is_refused_before_the_motion_is_read(tmp_path, monkeypatch):
    import magicanimate_cli.files

    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 3, size=96))
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    monkeypatch.setattr(magicanimate_cli.files, "free_bytes", lambda path: 96 * 96 * 3 * 3 - 1)
    monkeypatch.setattr(media, "iter_frames", lambda *a, **k: pytest.fail("the motion was read"))
    with pytest.raises(UserError, match=r"aligned\.gif: its 3 frames of 96x96 are kept uncompressed until the GIF is encoded"):
        align(reference, motion, tmp_path / "aligned.gif", size=96)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]
    monkeypatch.undo()  # the disk's real room
    assert align(reference, motion, tmp_path / "aligned.gif", size=96).frames == 3


def test_a_motion_video_keeps_its_sound(tmp_path):
    motion = add_sound(media.write_frames(tmp_path / "poses.mp4", draw_clip([BODY] * 5, size=96), fps=10), 1.0, rising=True)
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    align(reference, motion, tmp_path / "aligned.mp4", size=96)
    assert_keeps_sound(tmp_path / "aligned.mp4", motion, 0.5)


def test_align_warns_about_a_motion_that_is_not_densepose_as_animate_does(tmp_path):
    import warnings

    from magicanimate_cli.errors import InputWarning

    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # a DensePose clip: none, and strict lets it through
        poses = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 3, part=4))
        assert align(reference, poses, tmp_path / "a", size=96, strict=True).warnings == []
    noise = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)  # a raw video stands for it
    with pytest.warns(InputWarning, match="does not look like DensePose") as caught:
        result = align(reference, write_frames_folder(tmp_path / "noise", noise), tmp_path / "b", size=96)
    assert result.warnings == [str(w.message) for w in caught] and result.warnings[0].startswith(f"{tmp_path / 'noise'}: ")
    with pytest.raises(UserError, match=r"does not look like DensePose.*\(refused: --strict"):
        align(reference, tmp_path / "noise", tmp_path / "new" / "c", size=96, strict=True)
    assert not (tmp_path / "new").exists()  # nothing written, no new folder
    clip = tmp_path / "clip"
    clip.mkdir()
    write_frames_folder(clip / "densepose", noise)
    with pytest.raises(UserError, match=r"\(refused: --strict"):
        align(reference, clip, tmp_path / "d.mp4", size=96, strict=True)
    assert sorted(p.name for p in clip.iterdir()) == ["densepose"]  # the clip records no run that never began
    plain = tmp_path / "plain.png"  # no alpha: finding its person takes the segmenter, a model, which strict never reaches
    Image.new("RGB", (96, 96), (200, 180, 160)).save(plain)

    def no_model(image):
        raise AssertionError("the segmenter ran")

    with pytest.raises(UserError, match=r"\(refused: --strict"):
        align(plain, tmp_path / "noise", tmp_path / "e.mp4", size=96, strict=True, segmenter=no_model)


def test_a_strict_refusal_comes_before_the_frames_are_fitted_or_any_progress(tmp_path, monkeypatch):
    import magicanimate_cli.align as align_module

    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    noise = write_frames_folder(tmp_path / "noise", np.random.default_rng(0).integers(0, 256, (20, 96, 96, 3), dtype=np.uint8))
    fitted, seen = [], []
    monkeypatch.setattr(align_module, "reference_box", lambda *a, **k: pytest.fail("the reference was looked at"))
    monkeypatch.setattr("magicanimate_cli.crop.fit_square", lambda *a: fitted.append(1) or fit_square(*a))
    with pytest.raises(UserError, match=r"does not look like DensePose.*\(refused: --strict"):
        align(reference, noise, tmp_path / "out", size=96, strict=True, progress=lambda *a: seen.append(a))
    assert seen == [] and len(fitted) == 8  # the 8 frames it judges, not the 20 of the clip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise", "ref.png"]  # no scratch, no output


def test_a_reference_without_a_known_person_is_refused_before_the_motion_is_fitted(tmp_path):
    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 3, size=64))
    seen = []
    with pytest.raises(UserError, match="--ref-box"):
        align(rgb_reference(tmp_path / "plain.png"), motion, tmp_path / "out", size=64, strict=True, models=tmp_path / "none",
              progress=lambda *a: seen.append(a))
    assert seen == []


def test_a_missing_reference_or_a_bad_ref_box_is_refused_before_the_motion_is_read(tmp_path):
    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 3, size=96))
    seen = []
    with pytest.raises(UserError, match="missing.png"):
        align(tmp_path / "missing.png", motion, tmp_path / "out", size=96, progress=lambda *a: seen.append(a))
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    with pytest.raises(UserError, match="--ref-box"):
        align(reference, motion, tmp_path / "out", size=96, ref_box="1,2,x", progress=lambda *a: seen.append(a))
    assert seen == [] and sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


@pytest.mark.parametrize(("box", "message"), [("0,0,999,999", "outside the 160x96 reference"), ("0,0,10,96", "or its fitted square")])
def test_a_ref_box_outside_the_reference_or_its_square_is_refused_before_the_motion_is_read(tmp_path, monkeypatch, box, message):
    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 3, size=96))
    reference = tmp_path / "ref.png"
    Image.new("RGB", (160, 96), (200, 180, 160)).save(reference)  # --fit crop keeps x 32..128 of it

    def no_reading(*args, **kwargs):
        raise AssertionError("the motion was read before --ref-box was checked")

    monkeypatch.setattr(media, "iter_frames", no_reading)
    with pytest.raises(UserError, match=f"^--ref-box {box}: .*{message}"):
        align(reference, motion, tmp_path / "out", size=96, ref_box=box)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


def test_a_truncated_motion_video_is_refused_unless_allowed(tmp_path, tiny_pipeline):
    from magicanimate_cli.animate import animate

    media.write_frames(tmp_path / "full.mp4", draw_clip([BODY] * 28, size=96, part=8), fps=10)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])  # the header still promises 28 frames
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    with pytest.raises(UserError, match=r"half\.mp4: truncated or damaged video"):
        align(reference, tmp_path / "half.mp4", tmp_path / "aligned.mp4", size=96)
    assert 0 < align(reference, tmp_path / "half.mp4", tmp_path / "aligned.mp4", size=96, allow_truncated=True).frames < 28
    result = animate(reference, tmp_path / "half.mp4", tmp_path / "out.mp4", pipeline=tiny_pipeline, size=64, steps=1,
                     align=True, allow_truncated=True)  # fmt: skip
    assert 0 < result.frames < 28  # its first pass (the clip's background) read the video too


def test_clip_folder_records_the_transform_in_meta_json(tmp_path):
    write_clip(tmp_path / "clip", count=3, width=64, height=64, person=(20, 10, 30, 30))
    reference = rgba_reference(tmp_path / "ref.png", 64, (20, 20, 40, 60))
    result = align(reference, tmp_path / "clip", tmp_path / "clip" / "densepose_aligned", size=64)
    meta = json.loads((tmp_path / "clip" / "meta.json").read_text())
    record = meta["stages"]["align"]
    assert record["status"] == "done" and record["result"] == json.loads(json.dumps(result.transform))
    assert record["result"]["scale"] == 2 and result.meta.endswith("meta.json")
    assert len(media.list_frame_files(tmp_path / "clip" / "densepose_aligned")) == 3
    assert result.fps == 25.0  # a clip without a recorded rate: the frames folder default
    (tmp_path / "clip" / "meta.json").write_text(json.dumps({**meta, "fps": 30.0}))
    assert align(reference, tmp_path / "clip", tmp_path / "at30.mp4", size=64).fps == 30.0  # the clip's own rate
    assert media.probe(tmp_path / "at30.mp4").fps == 30.0
    with pytest.raises(UserError, match="input"):  # never onto the frames it reads
        align(reference, tmp_path / "clip", tmp_path / "clip" / "densepose", size=64, overwrite=True)
    images = {f.name: f.read_bytes() for f in (tmp_path / "clip" / "images").iterdir()}
    for part in ("images", "meta.json"):  # nor onto the rest of the clip (its photos were replaced by poses)
        with pytest.raises(UserError, match=f"is the input .*clip/{part}"):
            align(reference, tmp_path / "clip", tmp_path / "clip" / part, size=64, overwrite=True)
    assert {f.name: f.read_bytes() for f in (tmp_path / "clip" / "images").iterdir()} == images


def test_a_clip_folder_gives_an_aligned_video_the_sound_of_the_video_it_was_made_from(tmp_path):
    from magicanimate_cli.clip import write_meta

    write_clip(tmp_path / "clip", count=3, width=64, height=64, person=(20, 10, 30, 30))
    dance = add_sound(media.write_frames(tmp_path / "dance.mp4", np.zeros((3, 64, 64, 3), np.uint8), fps=10), 1.0, rising=True)
    write_meta(tmp_path / "clip", {"fps": 10, "source": {"path": str(dance), "kind": "video"}})
    reference = rgba_reference(tmp_path / "ref.png", 64, (20, 20, 40, 60))
    align(reference, tmp_path / "clip", tmp_path / "aligned.mp4", size=64)
    assert_keeps_sound(tmp_path / "aligned.mp4", dance, 0.3)


def test_cli_json_and_exit_codes(tmp_path):
    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY] * 2, size=64))
    reference = rgba_reference(tmp_path / "ref.png", 64, (20, 6, 44, 66))
    ok = runner.invoke(app, ["align", str(reference), str(motion), "-o", str(tmp_path / "out.mp4"), "--size", "64", "--anchor", "head", "--json"])
    assert ok.exit_code == 0, ok.output
    result = json.loads(ok.stdout)
    assert result["ok"] and result["transform"]["anchor"] == "head" and result["frames"] == 2
    assert media.probe(tmp_path / "out.mp4").frames == 2
    again = runner.invoke(app, ["align", str(reference), str(motion), "-o", str(tmp_path / "out.mp4"), "--size", "64"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(app, ["align", str(reference), str(motion), "-o", str(tmp_path / "b"), "--anchor", "knees"])
    assert bad.exit_code == 2 and "--anchor knees" in bad.output
    plain = rgb_reference(tmp_path / "plain.png")
    nothing = runner.invoke(app, ["align", str(plain), str(motion), "-o", str(tmp_path / "c"), "--models", str(tmp_path / "none"), "--json"])
    assert nothing.exit_code == 2
    assert json.loads(nothing.stdout.splitlines()[0])["error"].count("--ref-box") == 1
    boxed = runner.invoke(app, ["align", str(plain), str(motion), "-o", str(tmp_path / "d"), "--size", "64", "--ref-box", "10,4,30,54", "--frames", "median"])
    assert boxed.exit_code == 0, boxed.output


# ----------------------------------------------------------------------------- animate --align


def test_animate_align_equals_align_then_animate(tiny_pipeline, tmp_path):
    from magicanimate_cli.animate import animate

    clip = draw_clip([(30, 20, 44, 60), None, (34, 22, 48, 62)], size=80, width=96)  # fitted (crop) to 64
    motion = write_frames_folder(tmp_path / "poses", clip)
    reference = rgba_reference(tmp_path / "ref.png", 64, (10, 8, 30, 60))
    settings = {"pipeline": tiny_pipeline, "steps": 1, "size": 64, "seed": 3}
    aligned = align(reference, motion, tmp_path / "aligned", size=64)
    two_steps = animate(reference, tmp_path / "aligned", tmp_path / "two", **settings)
    one_step = animate(reference, motion, tmp_path / "one", align=True, grid=True, **settings)
    a, b = media.read_frames(tmp_path / "two").array, media.read_frames(tmp_path / "one").array
    assert a.shape == (3, 64, 64, 3) and np.array_equal(a, b)
    assert two_steps.alignment is None and one_step.alignment == aligned.transform
    grid = media.read_frames(tmp_path / "one_grid").array
    assert grid.shape == (3, 64, 256, 3)  # reference | pose | aligned pose | result
    assert np.array_equal(grid[:, :, 128:192], media.read_frames(tmp_path / "aligned").array)
    assert np.array_equal(grid[:, :, 192:], b)


def test_animate_align_without_a_known_person_fails_before_loading_the_models(tmp_path, tiny_weights, monkeypatch):
    import magicanimate_cli.animate.stage as stage_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the models were loaded before the reference person was found")

    monkeypatch.setattr(stage_module, "load_pipeline", no_loading)
    motion = write_frames_folder(tmp_path / "poses", draw_clip([BODY], size=64))
    plain = rgb_reference(tmp_path / "plain.png")
    out = runner.invoke(app, ["animate", str(plain), str(motion), "-o", str(tmp_path / "out"), "--size", "64", "--align",
                              "--models", str(tiny_weights), "--json"])
    assert out.exit_code == 2
    error = json.loads(out.stdout.splitlines()[0])["error"]
    assert "--ref-box" in error  # the reference check
    assert not (tmp_path / "out").exists()


def test_cli_options_are_the_function_keywords():
    import inspect

    import typer.main

    command = typer.main.get_command(app).commands["align"]
    signature = inspect.signature(align)
    for param in command.params:
        if param.name != "as_json" and signature.parameters[param.name].default is not inspect.Parameter.empty:
            assert param.default == signature.parameters[param.name].default, param.name
    assert {p.name for p in command.params} - {"as_json"} == set(signature.parameters) - {"progress", "segmenter", "estimator"}
    animate_command = typer.main.get_command(app).commands["animate"]
    assert "align" in {p.name for p in animate_command.params}


@pytest.mark.parametrize("background", [VIRIDIS_0, BLACK])
def test_h264_motion_gives_the_same_body_box(tmp_path, background):
    """Codec noise around the body (solid parts, as real renders) does not move its box by more than a pixel."""
    motion = media.write_frames(tmp_path / "motion.mp4", draw_clip([BODY] * 3, background=background, part=10))
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    result = align(reference, motion, tmp_path / "out", size=96, frames="median")
    assert np.abs(np.subtract(result.transform["background"], background)).max() <= 3  # as decoded (YUV round trip)
    assert np.abs(np.subtract(result.transform["body_box"], BODY)).max() <= 1


# ----------------------------------------------------------------------------- a person cut by the frame


def _cut_warnings(caught) -> list[str]:
    from magicanimate_cli.errors import InputWarning

    return [str(w.message) for w in caught if issubclass(w.category, InputWarning) and "edge" in str(w.message)]


def test_a_body_that_enters_at_the_edge_is_warned_about_not_taken_silently(tmp_path):
    import warnings

    # a hand comes in at the right edge first: its height sets the scale (x5 here), so the aligned dancer is huge
    clip = draw_clip([(88, 40, 96, 52), BODY, BODY], part=4)
    motion = write_frames_folder(tmp_path / "poses", clip)
    reference = rgba_reference(tmp_path / "ref.png", 96, (20, 6, 44, 66))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = align(reference, motion, tmp_path / "out", size=96)
    said = _cut_warnings(caught)
    assert len(said) == 1 and "in frame 0 reaches the right edge of the frame" in said[0] and "--frames median" in said[0]
    assert said == [w for w in result.warnings if "edge" in w] and result.transform["scale"] == 5
    with warnings.catch_warnings(record=True) as caught:  # the median box is whole: nothing to say
        warnings.simplefilter("always")
        median = align(reference, motion, tmp_path / "median", size=96, frames="median")
    assert _cut_warnings(caught) == [] and median.transform["body_box"] == list(BODY)


@pytest.mark.parametrize("cut", ["reference", "body", "both"])
def test_a_person_cut_by_the_bottom_edge_is_warned_about_unless_both_are(cut):
    import warnings

    clip = draw_clip([(30, 40, 50, 96) if cut in ("body", "both") else BODY], part=4)  # feet below the frame
    ref = (20, 40, 44, 96) if cut in ("reference", "both") else (20, 6, 44, 66)  # a half-body photo
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alignment = plan_alignment(clip, ref, source="poses")
    said = _cut_warnings(caught)
    assert list(alignment.warnings) == said and "warnings" not in alignment.to_dict()
    if cut == "both":  # a half-body motion onto a half-body photo: consistent
        assert said == []
    elif cut == "body":
        assert len(said) == 1 and said[0].startswith("poses: the body that sets the scale in frame 0 reaches the bottom edge")
    else:
        assert len(said) == 1 and said[0].startswith("poses: the reference person reaches the bottom edge of its 96x96 square")


def test_animate_align_lists_a_cut_body_in_its_warnings(tiny_pipeline, tmp_path):
    from magicanimate_cli.animate import animate

    motion = write_frames_folder(tmp_path / "poses", draw_clip([(40, 10, 64, 50)] * 2, size=64, part=4))  # cut at the right
    reference = rgba_reference(tmp_path / "ref.png", 64, (10, 8, 30, 60))
    result = animate(reference, motion, tmp_path / "out", pipeline=tiny_pipeline, steps=1, size=64, align=True)
    assert [w for w in result.warnings if "edge" in w] == [
        w for w in align(reference, motion, tmp_path / "aligned", size=64).warnings if "edge" in w
    ]
    assert any("reaches the right edge" in w for w in result.warnings)
