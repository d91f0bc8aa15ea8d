"""An interrupted animation resumes after its last finished step and gives the same frames."""

import os

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import animate
from magicanimate_cli.animate.resume import StepCheckpoint


@pytest.fixture()
def inputs(tmp_path, rng):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    motion = tmp_path / "poses"
    media.write_frames(motion, rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8))
    return reference, motion


def interrupt_after(step, monkeypatch):
    original = StepCheckpoint.save

    def save(self, steps_done, latents):
        original(self, steps_done, latents)
        if steps_done == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(StepCheckpoint, "save", save)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, inputs, tiny_pipeline, monkeypatch):
    common = {"size": 64, "steps": 3, "seed": 4, "pipeline": tiny_pipeline}
    whole = animate(*inputs, tmp_path / "whole", **common)
    assert whole.resumed_from_step == 0

    with monkeypatch.context() as patch:
        interrupt_after(2, patch)
        with pytest.raises(KeyboardInterrupt):
            animate(*inputs, tmp_path / "cut", **common)
    assert not (tmp_path / "cut").exists()
    assert (tmp_path / ".cut.animate-resume.safetensors").is_file()

    resumed = animate(*inputs, tmp_path / "cut", **common)
    assert resumed.resumed_from_step == 2
    assert np.array_equal(media.read_frames(tmp_path / "cut").array, media.read_frames(tmp_path / "whole").array)
    assert not (tmp_path / ".cut.animate-resume.safetensors").exists()


@pytest.mark.parametrize("other", [{"seed": 2}, {"context_schedule": "open"}, {"context_fusion": "pyramid"}])
def test_other_settings_start_afresh(tmp_path, inputs, tiny_pipeline, monkeypatch, other):
    with monkeypatch.context() as patch:
        interrupt_after(1, patch)
        with pytest.raises(KeyboardInterrupt):
            animate(*inputs, tmp_path / "out", size=64, steps=2, seed=1, pipeline=tiny_pipeline)
    result = animate(*inputs, tmp_path / "out", **{"size": 64, "steps": 2, "seed": 1, "pipeline": tiny_pipeline, **other})
    assert result.resumed_from_step == 0


@pytest.mark.parametrize("component", ["MagicAnimate/densepose_controlnet", "sd-vae-ft-mse", "stable-diffusion-v1-5/unet"])
def test_other_weights_in_the_same_folder_start_afresh(tmp_path, inputs, tiny_weights, tiny_pipeline, monkeypatch, component):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_weights, models)
    common = {"size": 64, "steps": 2, "seed": 1, "pipeline": tiny_pipeline, "models": models}
    with monkeypatch.context() as patch:
        interrupt_after(1, patch)
        with pytest.raises(KeyboardInterrupt):
            animate(*inputs, tmp_path / "out", **common)
    (weights,) = [p for p in (models / component).iterdir() if p.suffix in (".safetensors", ".bin")]
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # replaced by other weights
    assert animate(*inputs, tmp_path / "out", **common).resumed_from_step == 0


def test_the_same_weights_resume(tmp_path, inputs, tiny_weights, tiny_pipeline, monkeypatch):
    common = {"size": 64, "steps": 2, "seed": 1, "pipeline": tiny_pipeline, "models": tiny_weights}
    with monkeypatch.context() as patch:
        interrupt_after(1, patch)
        with pytest.raises(KeyboardInterrupt):
            animate(*inputs, tmp_path / "out", **common)
    assert animate(*inputs, tmp_path / "out", **common).resumed_from_step == 1


def test_a_damaged_checkpoint_is_ignored(tmp_path):
    checkpoint = StepCheckpoint(tmp_path / "out.mp4", "key")
    checkpoint.path.write_bytes(b"not safetensors")
    assert checkpoint.load() is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_checkpoint_gets_the_permissions_of_the_outputs(tmp_path):
    import torch

    old = os.umask(0o022)
    try:
        checkpoint = StepCheckpoint(tmp_path / "out.mp4", "key")
        checkpoint.save(1, torch.zeros(1, 4, 2, 8, 8))
    finally:
        os.umask(old)
    assert checkpoint.path.stat().st_mode & 0o777 == 0o644  # what open() gives under umask 022; safetensors' own file was 0o600
    assert checkpoint.load()[0] == 1


def test_a_full_disk_during_the_checkpoint_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    import errno

    import torch

    from magicanimate_cli.animate import resume
    from magicanimate_cli.errors import UserError

    class FullDisk:
        def __init__(self, path, mode):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "open", FullDisk, raising=False)
    checkpoint = StepCheckpoint(tmp_path / "out.mp4", "key")
    with pytest.raises(UserError) as caught:
        checkpoint.save(1, torch.zeros(1, 4, 2, 8, 8))
    assert str(caught.value) == (
        f"{tmp_path / 'out.mp4'}: cannot write its resume checkpoint beside it (No space left on device); "
        "free space on that disk or choose an output on another one, then run again"
    )
    assert list(tmp_path.iterdir()) == []  # no 0-byte *.partial.safetensors, no lock


def test_the_checkpoint_is_written_only_through_our_own_temporary(tmp_path, monkeypatch):
    # safetensors' save_file makes a .tmpXXXXXX of its own beside the file; killed there, it stays for good
    import safetensors.torch
    import torch

    def own_temporary(*args, **kwargs):
        raise AssertionError("save_file writes a temporary that no sweep knows")

    monkeypatch.setattr(safetensors.torch, "save_file", own_temporary)
    checkpoint = StepCheckpoint(tmp_path / "out.mp4", "key")
    checkpoint.save(2, torch.ones(1, 4, 2, 8, 8))
    steps, latents = checkpoint.load()
    assert steps == 2 and torch.equal(latents, torch.ones(1, 4, 2, 8, 8))
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.path.name]


def test_an_output_with_the_longest_name_resumes(tmp_path, inputs, tiny_pipeline, monkeypatch):
    output = tmp_path / ("n" * 251 + ".mp4")  # 255 bytes: the checkpoint's and the temporaries' names are longer
    common = {"size": 64, "steps": 2, "seed": 4, "pipeline": tiny_pipeline}
    with monkeypatch.context() as patch:
        interrupt_after(1, patch)
        with pytest.raises(KeyboardInterrupt):
            animate(*inputs, output, **common)
    checkpoint = [p.name for p in tmp_path.iterdir() if p.name.endswith(".animate-resume.safetensors")]
    assert len(checkpoint) == 1 and len(checkpoint[0]) <= 255
    assert animate(*inputs, output, **common).resumed_from_step == 1
    assert output.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted(["ref.png", "poses", output.name])
