"""The file-level API `animate()`: inputs of any kind in, atomic outputs out."""

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate, fit_square
from magicanimate_cli.errors import UserError


@pytest.fixture()
def motion_dir(tmp_path, rng):
    folder = tmp_path / "poses"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def run(tiny_pipeline, reference, motion, output, **kwargs):
    kwargs.setdefault("steps", 1)
    kwargs.setdefault("size", 64)
    return animate(reference, motion, output, pipeline=tiny_pipeline, **kwargs)


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P", "RGB"])
def test_any_image_mode_is_a_valid_reference(tiny_pipeline, tmp_path, motion_dir, mode, rng):
    array = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray((array[..., 0].astype(np.uint16) * 257))
    else:
        image = image.convert(mode)
    image.save(tmp_path / "ref.png")
    result = run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out")
    frames = media.list_frame_files(tmp_path / "out")
    assert result.frames == 3 and [f.name for f in frames] == ["00000.png", "00001.png", "00002.png"]
    assert media.read_image(frames[0]).shape == (64, 64, 3)


def test_sixteen_bit_images_are_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16))
    assert image.mode == "I;16" and media.to_rgb(image)[0, 0, 0] == 100


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert (media.to_rgb(Image.fromarray(rgba, "RGBA")) == 255).all()


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


def test_square_input_of_the_right_size_is_untouched():
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert np.array_equal(fit_square(image, 64, "crop", (0, 0, 0)), image)


def test_video_output_keeps_the_motion_fps_and_grid(tiny_pipeline, tmp_path, rng):
    motion = tmp_path / "motion.mp4"
    media.write_frames(motion, rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), fps=12)
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    result = run(tiny_pipeline, reference, motion, tmp_path / "out.mp4", grid=True)
    info = media.probe(tmp_path / "out.mp4")
    assert (info.frames, info.fps, info.width) == (5, 12.0, 64)
    grid = media.probe(tmp_path / "out_grid.mp4")
    assert (grid.frames, grid.width, grid.height) == (5, 192, 64)
    assert result.grid.endswith("out_grid.mp4")


def test_frames_folder_means_25_fps_unless_told(tiny_pipeline, tmp_path, motion_dir, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    assert run(tiny_pipeline, reference, motion_dir, tmp_path / "a.mp4").fps == 25.0
    assert run(tiny_pipeline, reference, motion_dir, tmp_path / "b.mp4", fps=10).fps == 10.0
    assert media.probe(tmp_path / "b.mp4").fps == 10.0


def test_existing_output_is_never_overwritten(tiny_pipeline, tmp_path, motion_dir, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="--overwrite"):
        run(tiny_pipeline, reference, motion_dir, target)
    assert target.read_bytes() == b"precious"
    run(tiny_pipeline, reference, motion_dir, target, overwrite=True)
    assert media.probe(target).frames == 3


def test_a_failed_run_leaves_nothing_behind(tiny_pipeline, tmp_path, motion_dir, rng, monkeypatch):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)

    def boom(*args, **kwargs):
        kwargs["on_frame"](0, np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("interrupted")

    monkeypatch.setattr(type(tiny_pipeline), "__call__", boom)
    with pytest.raises(RuntimeError):
        run(tiny_pipeline, reference, motion_dir, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses", "ref.png"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "--steps"),
        ({"context_overlap": 16}, "--context-overlap"),
        ({"fit": "zoom"}, "--fit"),
        ({"size": 60}, "--size"),
        ({"fps": -1}, "--fps"),
    ],
)
def test_bad_settings_are_user_errors(tiny_pipeline, tmp_path, motion_dir, kwargs, message):
    with pytest.raises(UserError, match=message):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4", **kwargs)


def test_missing_or_broken_inputs_name_the_file(tiny_pipeline, tmp_path, motion_dir):
    with pytest.raises(UserError, match="ref.png: no such image file"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4")
    (tmp_path / "ref.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="ref.png: not a readable image"):
        run(tiny_pipeline, tmp_path / "ref.png", motion_dir, tmp_path / "out.mp4")


def test_cpu_kernels_are_pinned_before_torch_is_imported(tmp_path):
    """A fresh process calling animate() pins the kernels while torch is still unimported."""
    import subprocess
    import sys

    code = (
        "import sys, magicanimate_cli.animate as A\n"
        "seen = []\n"
        "original = A.pin_cpu_kernels\n"
        "A.pin_cpu_kernels = lambda: (seen.append('torch' in sys.modules), original())\n"
        "try:\n"
        f"    A.animate({str(tmp_path / 'missing.png')!r}, {str(tmp_path)!r}, {str(tmp_path / 'o.mp4')!r})\n"
        "except Exception:\n"
        "    pass\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False]"
