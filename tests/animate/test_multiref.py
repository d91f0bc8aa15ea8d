"""Several reference images (``animate --extra-reference``): every reference's tokens in the bank.

Oracle: attention over ``[own ; ref1 ; ref2]`` is invariant to the order of its keys, so [A, B] and
[B, A] give the same frames up to rounding, while [A, B] and [A] differ; each reference's features
are those of the same image encoded beside any other one (the encoder's batch rows are independent).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate
from magicanimate_cli.animate.pipeline import FastPath
from magicanimate_cli.errors import UserError

PATHS = {"default": False, "fast": FastPath()}


@pytest.fixture()
def images(rng):
    """Three 64² references and 4 motion frames (one window)."""
    a, b, c = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3))
    return a, b, c, rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)


def _banks(pipe, monkeypatch) -> list[dict]:
    """The bank of each step, as the appearance encoder left it."""
    banks = []
    original = pipe._encode_appearance

    def recorded(*args):
        original(*args)
        banks.append({name: features.clone() for name, features in pipe._bank.features.items()})

    monkeypatch.setattr(pipe, "_encode_appearance", recorded)
    return banks


def _run(pipe, reference, motion, fast, steps=1):
    return pipe(reference, motion, num_inference_steps=steps, seed=1, output_type="latent", fast=fast).latents


@pytest.mark.parametrize("path", PATHS)
def test_every_block_banks_each_references_tokens_in_the_order_given(tiny_pipeline, images, monkeypatch, path):
    a, b, c, motion = images
    banks = _banks(tiny_pipeline, monkeypatch)
    for reference in (a, [a, b], [a, c], [b, a]):
        _run(tiny_pipeline, reference, motion, PATHS[path])
    alone, ab, ac, ba = banks
    assert alone.keys() == ab.keys() and len(alone) == 4  # the tiny UNet's mid and up attentions
    for name, single in alone.items():
        tokens = single.shape[1]
        assert ab[name].shape == (1, 2 * tokens, single.shape[2])
        # bitwise: a reference's features do not depend on the other one, nor on its place
        assert torch.equal(ab[name][:, :tokens], ac[name][:, :tokens])
        assert torch.equal(ab[name][:, :tokens], ba[name][:, tokens:])
        assert torch.equal(ab[name][:, tokens:], ba[name][:, :tokens])
        # against A encoded alone: the encoder's batch is 4 rows (2 with --fast) instead of 2 (1),
        # for which oneDNN picks other kernels (features up to 7.7e-6 apart before the official
        # float16 rounding, measured); the rounding then moves a few entries by one float16 step
        first = ab[name][:, :tokens]
        step = single.abs() * 2**-9  # at least one float16 step at that value
        assert ((first - single).abs() <= step + 1e-5).all()
        assert (first != single).float().mean() < 0.05


@pytest.mark.parametrize("path", PATHS)
def test_the_order_of_the_references_moves_the_frames_by_rounding_only(tiny_pipeline, images, path):
    a, b, _, motion = images
    ab = _run(tiny_pipeline, [a, b], motion, PATHS[path])
    ba = _run(tiny_pipeline, np.stack([b, a]), motion, PATHS[path])  # one N×H×W×3 array too
    alone = _run(tiny_pipeline, a, motion, PATHS[path])
    order, other = (ab - ba).abs().max().item(), (ab - alone).abs().max().item()
    assert order < 1e-5  # rounding: the keys' order changes the sums' order (measured 3.6e-7)
    assert other > 1e-3 and other > 100 * order  # measured 1.3e-2 at one step (two steps of 20 frames: 0.78)


@pytest.mark.parametrize("path", PATHS)
def test_one_reference_in_a_list_is_the_single_reference_run_bitwise(tiny_pipeline, images, path):
    a, _, _, motion = images
    assert torch.equal(_run(tiny_pipeline, [a], motion, PATHS[path]), _run(tiny_pipeline, a, motion, PATHS[path]))


def test_references_of_other_sizes_are_refused(tiny_pipeline, images):
    a, _, _, motion = images
    with pytest.raises(ValueError, match="one size"):
        _run(tiny_pipeline, [a, a[:32]], motion, False)
    with pytest.raises(ValueError, match="H×W×3"):
        _run(tiny_pipeline, [a, a[..., 0]], motion, False)


def test_on_cpu_the_cuda_graph_lever_runs_every_reference_eagerly(tiny_pipeline, images):
    a, b, _, motion = images
    eager = _run(tiny_pipeline, [a, b], motion, FastPath(cuda_graph=False), steps=2)
    assert torch.equal(_run(tiny_pipeline, [a, b], motion, FastPath(), steps=2), eager)


# -- animate(): files in, files out


@pytest.fixture()
def files(tmp_path, images):
    a, b, c, motion = images
    for name, image in (("a.png", a), ("b.png", b), ("c.png", c)):
        Image.fromarray(image).save(tmp_path / name)
    media.write_frames(tmp_path / "poses", motion)
    return tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", tmp_path / "poses"


def test_extra_references_are_fitted_as_the_reference_and_reach_the_pipeline(tiny_pipeline, tmp_path, files, monkeypatch):
    from PIL import ImageOps

    a, b, _, poses = files
    wide = tmp_path / "wide.jpg"  # another size, mode and orientation: fitted as the reference is
    image = Image.fromarray(np.asarray(Image.open(b)).repeat(2, axis=1)).convert("L")
    exif = image.getexif()
    exif[0x0112] = 6  # rotated: read upright
    image.save(wide, exif=exif)
    seen = []
    original = type(tiny_pipeline).__call__

    def call(self, reference, motion, **kwargs):
        seen.append(reference)
        return original(self, reference, motion, **kwargs)

    monkeypatch.setattr(type(tiny_pipeline), "__call__", call)
    animate(a, poses, tmp_path / "out", extra_references=[wide, b], size=64, steps=1, fit="pad", pipeline=tiny_pipeline)
    from magicanimate_cli.crop import fit_square

    expected = [fit_square(media.read_image(p), 64, "pad", (255, 255, 255)) for p in (a, wide, b)]
    assert len(seen) == 1 and len(seen[0]) == 3
    assert all(np.array_equal(got, want) for got, want in zip(seen[0], expected))
    upright = ImageOps.exif_transpose(Image.open(wide)).convert("RGB")
    assert np.array_equal(seen[0][1], fit_square(np.asarray(upright), 64, "pad", (255, 255, 255)))


@pytest.mark.parametrize("bad", ["missing.png", "broken.png"])
def test_a_bad_extra_reference_is_named_before_the_models_load(tmp_path, tiny_weights, files, monkeypatch, bad):
    from magicanimate_cli.animate import stage

    a, b, _, poses = files
    (tmp_path / "broken.png").write_bytes(b"not an image")
    monkeypatch.setattr(stage, "load_pipeline", lambda *args, **kwargs: pytest.fail("the models loaded"))
    with pytest.raises(UserError, match=bad):
        animate(a, poses, tmp_path / "out.mp4", extra_references=[b, tmp_path / bad], models=tiny_weights, device="cpu", size=64)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("grid", [False, True])
def test_an_output_that_is_an_extra_reference_is_refused_and_kept(tiny_pipeline, tmp_path, files, grid):
    a, b, _, poses = files
    extra = tmp_path / ("x_grid.gif" if grid else "x.gif")  # a still GIF: an image, and a name an output may take
    Image.open(b).save(extra)
    before = extra.read_bytes()
    with pytest.raises(UserError, match=f"is the input {extra}"):
        animate(a, poses, tmp_path / "x.gif", extra_references=[extra], grid=grid, size=64, steps=1, overwrite=True, pipeline=tiny_pipeline)
    assert extra.read_bytes() == before


def test_resume_takes_only_the_run_with_the_same_extra_references(tiny_pipeline, tmp_path, files, monkeypatch):
    from test_resume import interrupt_after

    a, b, c, poses = files
    common = {"size": 64, "steps": 2, "seed": 4, "pipeline": tiny_pipeline}
    cases = [([b], [c]), ([b], None), (None, [b]), ([b, c], [c, b]), ([b], [b, b]), ([b], [b])]
    for index, (first, then) in enumerate(cases):
        output = tmp_path / f"out{index}"
        with monkeypatch.context() as patch:
            interrupt_after(1, patch)
            with pytest.raises(KeyboardInterrupt):
                animate(a, poses, output, extra_references=first, **common)
        resumed = animate(a, poses, output, extra_references=then, **common).resumed_from_step
        assert resumed == (1 if first == then else 0), (first, then)


def test_the_cli_passes_each_extra_reference_on(tmp_path, files, monkeypatch):
    from typer.testing import CliRunner

    import magicanimate_cli.animate as library
    from magicanimate_cli.cli import app

    a, b, c, poses = files
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise UserError("stopped here")

    monkeypatch.setattr(library, "animate", fake)
    result = CliRunner().invoke(app, ["animate", str(a), str(poses), "-o", "out", "--extra-reference", str(b), "--extra-reference", str(c)])
    assert result.exit_code == 2 and result.stderr == "error: stopped here\n"
    assert [str(p) for p in seen["extra_references"]] == [str(b), str(c)]


def test_a_missing_extra_reference_on_the_command_line_is_one_line_and_exit_2(tmp_path, tiny_weights, files):
    from typer.testing import CliRunner

    from magicanimate_cli.cli import app

    a, _, _, poses = files
    missing = tmp_path / "back.png"
    result = CliRunner().invoke(app, ["animate", str(a), str(poses), "-o", str(tmp_path / "out.mp4"), "--extra-reference", str(missing),
                                      "--models", str(tiny_weights), "--device", "cpu", "--size", "64"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and str(missing) in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out.mp4").exists()
