"""Several reference images (``animate --extra-reference``): every reference's tokens in the bank.

Oracle: attention over ``[own ; ref1 ; ref2]`` is invariant to the order of its keys, so [A, B] and
[B, A] give the same frames up to rounding, while [A, B] and [A] differ; each reference's features
are those of the same image encoded beside any other one (the encoder's batch rows are independent).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicanimate_cli.animate.pipeline import FastPath

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
