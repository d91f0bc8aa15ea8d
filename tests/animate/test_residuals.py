"""ControlNet residuals of a step: official chunks, window rows, and how long each chunk is held."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from magicanimate_cli.animate.residuals import StepResiduals
from magicanimate_cli.animate.windows import context_windows


class FakeControlNet:
    """Residuals whose every value is its frame's index; records the chunks asked for and the outputs."""

    def __init__(self):
        self.calls: list[list[int]] = []
        self.outputs: list[tuple[list[torch.Tensor], torch.Tensor]] = []

    def __call__(self, frames):
        self.calls.append(frames)
        rows = torch.tensor(frames, dtype=torch.float32)
        self.outputs.append(([rows[:, None, None].expand(-1, 2, 3).clone(), rows[:, None].clone()], rows[:, None] * 10))
        return self.outputs[-1]


def _take_all(windows, chunk=16):
    fake = FakeControlNet()
    residuals = StepResiduals(windows, chunk, fake)
    taken, held = [], []
    for index in range(len(windows)):
        taken.append(residuals.take(index))
        held.append(residuals.held_frames)
    return fake, taken, held


@pytest.mark.parametrize("frames", [16, 32, 64, 96])
def test_each_window_gets_its_frames_rows_from_one_controlnet_call_per_chunk(frames):
    windows = context_windows(frames, 16, 4)
    fake, taken, _ = _take_all(windows)
    assert fake.calls == [list(range(s, s + 16)) for s in range(0, frames, 16)]  # each chunk once, in order
    for window, (down, mid) in zip(windows, taken):
        expected = torch.tensor(window, dtype=torch.float32)
        assert torch.equal(down[0], expected[:, None, None].expand(-1, 2, 3))
        assert torch.equal(down[1], expected[:, None])
        assert torch.equal(mid, expected[:, None] * 10)


def test_a_window_that_is_one_chunk_gets_the_chunk_itself_and_nothing_stays_held():
    fake = FakeControlNet()
    residuals = StepResiduals([list(range(16))], 16, fake)
    down, mid = residuals.take(0)
    assert [d.data_ptr() for d in down] == [d.data_ptr() for d in fake.outputs[0][0]]  # no copy
    assert residuals.held_frames == 0


def test_only_rows_later_windows_read_are_held_whatever_the_length():
    _, _, held = _take_all(context_windows(64, 16, 4))
    # after window 0: frames 0-15 (window 1 reads 12-15, the closing window wraps into 0-11);
    # 1: 0-11, 24-31; 2: 0-11, 36-47; 3: 0-11, 48-63; 4: 0-11, 60-63; 5: nothing
    assert held == [16, 20, 24, 28, 16, 0]
    for frames in (96, 256, 1000):
        _, _, held = _take_all(context_windows(-(-frames // 16) * 16, 16, 4))
        assert max(held) <= 28 and held[-1] == 0, frames


def test_windows_are_taken_in_order():
    residuals = StepResiduals(context_windows(64, 16, 4), 16, FakeControlNet())
    residuals.take(0)
    with pytest.raises(ValueError, match="expected 1, got 2"):
        residuals.take(2)


def test_one_rank_of_a_distributed_run_computes_only_its_windows_chunks():
    windows = context_windows(64, 16, 4)[1::2]  # rank 1 of 2
    fake, taken, held = _take_all(windows)
    assert sorted(frame for call in fake.calls for frame in call) == list(range(64))
    assert all(torch.equal(mid, torch.tensor(w, dtype=torch.float32)[:, None] * 10) for w, (_, mid) in zip(windows, taken))
    assert held[-1] == 0


@pytest.mark.parametrize(("frames", "most"), [(16, 0), (64, 28)])
def test_the_unet_up_path_runs_without_the_windows_own_residuals(tiny_pipeline, rng, monkeypatch, frames, most):
    """When a window's UNet reaches its mid block's attention (where the up path's activations begin;
    the shared down path runs the block's first resnet before it), only the rows later windows read
    are still alive."""
    from magicanimate_cli.animate import pipeline as module

    given: list[list[weakref.ref]] = []
    stores: list[StepResiduals] = []
    at_mid: list[tuple[int, int]] = []  # (tensors given to this window alive and not held for later, frames held)

    def at_mid_block(*_):
        held = {id(d) for _, down, _ in stores[-1]._chunks.values() for d in down}
        alive = [ref() for ref in given[-1]]
        at_mid.append((sum(d is not None and id(d) not in held for d in alive), stores[-1].held_frames))

    class Spy(StepResiduals):
        def __init__(self, *args):
            super().__init__(*args)
            stores.append(self)

        def take(self, index):
            down, mid = super().take(index)
            given.append([weakref.ref(d) for d in down])
            return down, mid

    monkeypatch.setattr(module, "StepResiduals", Spy)
    hook = tiny_pipeline.unet.mid_block.attentions[0].register_forward_pre_hook(at_mid_block)
    try:
        reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        motion = rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
        for fast in (False, True):
            given.clear()
            at_mid.clear()
            tiny_pipeline(reference, motion, num_inference_steps=1, seed=0, output_type="latent", fast=fast)
            assert len(at_mid) == len(context_windows(frames, 16, 4))
            assert [alive for alive, _ in at_mid] == [0] * len(at_mid), fast
            assert max(held for _, held in at_mid) == most, fast
    finally:
        hook.remove()
