"""The DensePose palette: the viridis colours of the 25 labels, both ways, and the left/right symmetries."""

from __future__ import annotations

import numpy as np
import pytest

from magicanimate_cli.densepose import (
    BACKGROUND,
    MASK_LABEL_SYMMETRIES,
    PALETTE,
    PART_NAMES,
    POINT_LABEL_SYMMETRIES,
    labels_from_render,
    render_labels,
)
from magicanimate_cli.densepose.palette import palette_shares

from densepose_helpers import TABLE_10_3


def test_palette_is_the_table_of_section_10_3():
    assert PALETTE.shape == (25, 3) and PALETTE.dtype == np.uint8
    for label, (index, rgb) in TABLE_10_3.items():
        assert (label * 255) // 24 == index
        assert tuple(int(v) for v in PALETTE[label]) == rgb
    assert len({tuple(c) for c in PALETTE.tolist()}) == 25  # the inverse is well defined
    assert tuple(int(v) for v in PALETTE[0]) == BACKGROUND  # the canvas colour the other stages use
    with pytest.raises(ValueError):
        PALETTE[0, 0] = 1  # read-only


def test_palette_is_opencv_viridis_of_floor_l_255_over_24():
    cv2 = pytest.importorskip("cv2")
    index = np.array([[(label * 255) // 24 for label in range(25)]], np.uint8)
    bgr = cv2.applyColorMap(index, cv2.COLORMAP_VIRIDIS)[0]
    assert np.array_equal(PALETTE, bgr[:, ::-1])
    # detectron2's float path: clip(l * 10.625).astype(uint8) gives the same LUT indices
    scaled = (np.arange(25, dtype=np.float32) * np.float32(255.0 / 24)).clip(0, 255).astype(np.uint8)
    assert np.array_equal(scaled, index[0])


def test_render_and_inverse_are_exact():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 25, (3, 17, 23), dtype=np.uint8)
    rgb = render_labels(labels)
    assert rgb.shape == (3, 17, 23, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[labels == 0], np.tile(PALETTE[0], ((labels == 0).sum(), 1)))
    assert np.array_equal(labels_from_render(rgb), labels)
    assert np.array_equal(labels_from_render(rgb[0]), labels[0])
    with pytest.raises(ValueError, match="0..24"):
        render_labels(np.full((2, 2), 25, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        render_labels(labels.astype(np.int32))


def test_inverse_of_a_compressed_render_needs_nearest():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 25, (20, 20), dtype=np.uint8)
    noisy = (render_labels(labels).astype(np.int16) + rng.integers(-2, 3, (20, 20, 3))).clip(0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match="not DensePose palette colours"):
        labels_from_render(noisy)
    assert np.array_equal(labels_from_render(noisy, nearest=True), labels)


def test_point_label_symmetries_swap_left_and_right():
    sym = POINT_LABEL_SYMMETRIES
    assert list(sym) == [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23]
    assert np.array_equal(sym[sym], np.arange(25))  # an involution
    for label in range(25):
        mirrored = PART_NAMES[sym[label]].replace("left", "L").replace("right", "left").replace("L", "right")
        assert PART_NAMES[label] == mirrored or label in (0, 1, 2, 23, 24)
    assert list(MASK_LABEL_SYMMETRIES) == [0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14]
    labels = np.array([[3, 4, 0, 24]], np.uint8)
    assert sym[labels].tolist() == [[4, 3, 0, 23]]




def _render_clip(frames=4, size=96, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A render of solid 8×8 parts of random labels in a box, as real renders are made of solid parts."""
    labels = np.zeros((frames, size, size), np.uint8)
    parts = np.random.default_rng(seed).integers(1, 25, (frames, 8, 5))
    labels[:, 16:80, 28:68] = np.kron(parts, np.ones((8, 8), np.int64))
    return labels, render_labels(labels)


def test_palette_shares_of_a_render_are_its_person_and_all_of_it_in_the_palette():
    labels, render = _render_clip()
    person = float((labels > 0).mean())
    assert palette_shares(render) == (person, 1.0)
    on_black = np.where(labels[..., None] > 0, render, 0).astype(np.uint8)  # some published renders are on black
    assert palette_shares(on_black, background=(0, 0, 0)) == (person, 1.0)
    assert palette_shares(np.broadcast_to(BACKGROUND, (2, 8, 8, 3))) == (0.0, 0.0)  # nobody


def test_palette_shares_survive_h264(tmp_path):
    from magicanimate_cli import media

    labels, render = _render_clip()
    media.write_frames(tmp_path / "render.mp4", render, 25.0)  # libx264 yuv420p: colours drift and bleed at edges
    decoded = np.stack(list(media.iter_frames(tmp_path / "render.mp4")))
    assert not np.array_equal(decoded, render)
    person, palette = palette_shares(decoded)
    assert abs(person - (labels > 0).mean()) < 0.02 and palette > 0.95


def test_a_video_that_is_not_a_render_has_almost_none_of_its_pixels_in_the_palette(tmp_path):
    import subprocess

    from magicanimate_cli import media
    from magicanimate_cli.densepose.palette import clip_background

    video = tmp_path / "testsrc2.mp4"  # ffmpeg's colourful moving test pattern, as a raw video stands for
    subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=96x96:rate=25:duration=1",
                    "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    frames = np.stack(list(media.iter_frames(video)))
    person, palette = palette_shares(frames, clip_background(frames))
    assert person > 0.5 and palette < 0.05


def test_a_motion_with_nobody_in_most_of_its_frames_is_warned_about(tmp_path):
    # a person in frames 27-36 of 64 only: 8 frames spread over the clip saw them twice, and the
    # clip passed unwarned (only a clip with nobody at all was said); `densepose` refuses under half
    from magicanimate_cli.densepose.palette import motion_warnings
    from magicanimate_cli.errors import InputWarning, UserError

    labels = np.zeros((64, 48, 48), np.uint8)
    labels[27:37, 8:40, 16:32] = 2  # a torso, in 10 of 64 frames
    poses = render_labels(labels)
    with pytest.warns(InputWarning, match=r"no person in 6 of 8 frames spread over the clip") as said:
        found = motion_warnings(poses, tmp_path / "poses.mp4")
    assert found == [str(w.message) for w in said] and len(found) == 1
    labels[:, 8:40, 16:32] = 2  # in every frame: nothing to say
    assert motion_warnings(render_labels(labels), tmp_path / "poses.mp4") == []
    labels[:28] = 0  # sampled frames 0, 9, 18, 27, 36, ..., 63: nobody in 4 of 8 (a person who walks in half-way): not said
    assert motion_warnings(render_labels(labels), tmp_path / "poses.mp4") == []
    labels[:40] = 0  # nobody in 5 of 8: said, and --strict refuses it
    with pytest.raises(UserError, match=r"no person in 5 of 8 frames .* \(refused: --strict"):
        motion_warnings(render_labels(labels), tmp_path / "poses.mp4", strict=True)


def test_an_iuv_motion_is_told_to_be_converted_with_from_iuv(tmp_path):
    from magicanimate_cli.crop import fit_square
    from magicanimate_cli.densepose.palette import motion_warnings
    from magicanimate_cli.errors import InputWarning

    rng = np.random.default_rng(0)
    labels = np.zeros((8, 48, 40), np.uint8)
    labels[:, 6:42, 10:30] = np.repeat(np.arange(1, 25, dtype=np.uint8), 30)[: 36 * 20].reshape(36, 20)  # parts 1..24 in stripes
    uv = rng.integers(0, 256, (*labels.shape, 2), dtype=np.uint8) * (labels > 0)[..., None].astype(np.uint8)
    caffe2 = np.concatenate([uv[..., 1:], uv[..., :1], labels[..., None]], axis=-1)  # as read in RGB: V, U, I (I blue)
    poses = np.stack([fit_square(frame, 64, "crop", (0, 0, 0)) for frame in caffe2])  # as animate fits them: bicubic
    (tmp_path / "dp").mkdir()
    with pytest.warns(InputWarning, match=r"does not look like DensePose in MagicAnimate's colours .* but like DensePose IUV "
                                          r"\(part indices in the blue channel, on black\).*`magicanimate densepose \S*dp --from-iuv -o POSES`"):  # fmt: skip
        motion_warnings(poses, tmp_path / "dp")
    rgb = np.concatenate([labels[..., None], uv], axis=-1)  # I red: saved with Pillow in (I, U, V) order
    (tmp_path / "clip" / "images").mkdir(parents=True)
    with pytest.warns(InputWarning, match=r"in the red channel, on black\).*`magicanimate densepose \S*clip/densepose --from-iuv"):
        motion_warnings(np.stack([fit_square(frame, 64, "crop", (0, 0, 0)) for frame in rgb]), tmp_path / "clip")
    with pytest.warns(InputWarning, match=r"IUV PNG frames this video was made from"):
        motion_warnings(poses, tmp_path / "dp.mp4")

    colourful = rng.integers(0, 256, poses.shape, dtype=np.uint8) * poses.any(axis=-1, keepdims=True)  # on black, but not IUV
    with pytest.warns(InputWarning, match=r"will probably not follow it; make the poses with `magicanimate densepose VIDEO`$") as said:
        motion_warnings(colourful, tmp_path / "dp")
    assert "IUV" not in str(said[0].message)


def _iuv_clip(count=8, red=False):
    """``count`` DensePose IUV frames (48², parts 1..24 in stripes, I in blue or red) and their label maps."""
    rng = np.random.default_rng(1)
    labels = np.zeros((count, 48, 48), np.uint8)
    labels[:, 6:42, 14:34] = np.repeat(np.arange(1, 25, dtype=np.uint8), 30)[: 36 * 20].reshape(36, 20)
    uv = rng.integers(0, 256, (*labels.shape, 2), dtype=np.uint8) * (labels > 0)[..., None].astype(np.uint8)
    return (np.concatenate([labels[..., None], uv], -1) if red else np.concatenate([uv[..., ::-1], labels[..., None]], -1)), labels


def _as_animate_reads(motion):
    """The fitted poses ``animate`` judges: the motion as shown, fitted to 64² on its background."""
    from magicanimate_cli import media
    from magicanimate_cli.crop import fit_square

    return np.stack([fit_square(frame, 64, "crop", BACKGROUND) for frame in media.iter_frames(motion)])


def _write_iuv_motion(path, kind):
    """An IUV motion saved as people save one, which shows other than it stores: 16-bit PNGs (numpy's (I, U, V)
    made uint16, through OpenCV), PNGs on a transparent background (I red, through Pillow), a 16-bit FFV1 video."""
    import subprocess

    from PIL import Image

    from magicanimate_cli import media

    iuv, labels = _iuv_clip(red=kind == "transparent")
    if kind == "16-bit video":
        subprocess.run([media.ffmpeg_binary(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", "48x48", "-framerate",
                        "25", "-i", "-", "-c:v", "ffv1", "-pix_fmt", "rgb48le", str(path)], input=iuv.astype("<u2").tobytes(), check=True)  # fmt: skip
        return path
    path.mkdir()
    for i, (frame, person) in enumerate(zip(iuv, labels)):
        if kind == "16-bit":
            assert pytest.importorskip("cv2").imwrite(str(path / f"{i:04d}.png"), frame[..., ::-1].astype(np.uint16))
        else:
            alpha = np.where(person > 0, 255, 0).astype(np.uint8)[..., None]
            Image.fromarray(np.concatenate([frame, alpha], -1), "RGBA").save(path / f"{i:04d}.png")
    return path


@pytest.mark.parametrize("kind, name, channel", [("16-bit", "deep", "blue"), ("transparent", "clear", "red"),
                                                 ("16-bit video", "deep.mkv", "blue")])  # fmt: skip
def test_an_iuv_motion_in_16_bits_or_with_a_transparent_background_is_told_to_be_converted(tmp_path, kind, name, channel):
    # as shown, 16-bit values 0..255 are nearly black ("no person in 8 frames") and a transparent background
    # is white ("does not look like DensePose ... make the poses with `magicanimate densepose VIDEO`")
    from magicanimate_cli.densepose.palette import motion_warnings
    from magicanimate_cli.errors import InputWarning

    motion = _write_iuv_motion(tmp_path / name, kind)
    with pytest.warns(InputWarning) as said:
        found = motion_warnings(_as_animate_reads(motion), motion)
    assert len(found) == 1 and found == [str(w.message) for w in said if w.category is InputWarning]  # (imageio-ffmpeg leaves pipes to the GC)
    assert f"but like DensePose IUV (part indices in the {channel} channel, on black)" in found[0]
    assert found[0].endswith(f"convert it first: `magicanimate densepose {motion} --from-iuv -o POSES`, then animate POSES")


def test_real_densepose_renders_are_not_taken_for_iuv(tmp_path):
    from conftest import parity_fixtures
    from PIL import Image

    from magicanimate_cli.densepose.palette import motion_warnings

    _, labels = _iuv_clip(16)
    labels[:12] = 0  # a person in 4 of 16 frames: said as such, not as IUV
    (tmp_path / "renders").mkdir()
    for i, frame in enumerate(render_labels(labels)):
        Image.fromarray(frame).save(tmp_path / "renders" / f"{i:04d}.png")
    with pytest.warns(UserWarning, match=r"no person in 6 of 8 frames spread over the clip"):
        motion_warnings(_as_animate_reads(tmp_path / "renders"), tmp_path / "renders")
    for fixture in parity_fixtures():  # IUV-coloured, but not IUV: its channels span 0..245
        for motion in (fixture / "inputs" / "motion.mp4", fixture / "inputs" / "motion_frames"):
            with pytest.warns(UserWarning) as said:
                motion_warnings(_as_animate_reads(motion), motion)
            assert [str(w.message) for w in said] and not any("IUV" in str(w.message) for w in said)
