"""The ControlNet's pose embedding once per call (``animate/pose_embedding.py``).

Oracle: the same pipeline call with the cache given no room (``BUDGET_BYTES`` 0), which embeds the
pose images on every step as the official code does; the frames and latents must be bitwise equal.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.models.controlnets.controlnet import ControlNetModel

from magicanimate_cli.animate import pose_embedding
from magicanimate_cli.animate.pipeline import FastPath
from magicanimate_cli.animate.pose_embedding import CachedPoseEmbedding, PoseEmbeddings


def _count_embeddings(pipe, monkeypatch) -> list[int]:
    """How many pose images each real embedding computation saw (a spy on its first convolution)."""
    seen = []
    conv_in = pipe.controlnet.controlnet_cond_embedding.conv_in
    forward = conv_in.forward
    monkeypatch.setattr(conv_in, "forward", lambda x: seen.append(len(x)) or forward(x))
    return seen


def test_the_controlnet_keeps_its_parameters_and_keys(tiny_pipeline):
    controlnet = tiny_pipeline.controlnet
    assert type(controlnet.controlnet_cond_embedding) is CachedPoseEmbedding
    plain = ControlNetModel.from_config(controlnet.config)
    assert list(controlnet.state_dict()) == list(plain.state_dict())


def test_each_chunk_is_embedded_once_per_call_with_the_same_result(tiny_pipeline, inputs, monkeypatch):
    seen = _count_embeddings(tiny_pipeline, monkeypatch)
    cached = tiny_pipeline(*inputs, num_inference_steps=3, seed=0, output_type="np")
    # 20 frames padded to 32: two ControlNet chunks of 16 per step, embedded on the first step only
    assert seen == [16, 16]
    assert not tiny_pipeline._pose_embeddings.on and not tiny_pipeline._pose_embeddings.entries  # emptied after the call

    seen.clear()
    monkeypatch.setattr(pose_embedding, "BUDGET_BYTES", 0)  # no room: every step embeds again, as the official
    every_step = tiny_pipeline(*inputs, num_inference_steps=3, seed=0, output_type="np")
    assert seen == [16, 16] * 3
    assert np.array_equal(cached.frames, every_step.frames)
    assert torch.equal(cached.latents, every_step.latents)


def test_the_budget_bounds_what_a_call_keeps(tiny_pipeline, inputs, monkeypatch):
    one_chunk = 16 * 3 * 64 * 64 * 4 + 16 * tiny_pipeline.controlnet.config.block_out_channels[0] * 8 * 8 * 4
    monkeypatch.setattr(pose_embedding, "BUDGET_BYTES", one_chunk + 1)  # room for the first chunk only
    seen = _count_embeddings(tiny_pipeline, monkeypatch)
    kept = []
    keep = PoseEmbeddings.keep
    monkeypatch.setattr(PoseEmbeddings, "keep", lambda self, i, e: keep(self, i, e) or kept.append(self.bytes))
    tiny_pipeline(*inputs, num_inference_steps=2, seed=0, output_type="latent")
    assert seen == [16, 16, 16]  # the second chunk again on step 2
    assert max(kept) == one_chunk
    monkeypatch.setattr(pose_embedding, "BUDGET_BYTES", one_chunk)  # a chunk of exactly the budget is not kept
    seen.clear()
    tiny_pipeline(*inputs, num_inference_steps=2, seed=0, output_type="latent")
    assert seen == [16, 16] * 2


def test_other_images_are_embedded_anew():
    cache = PoseEmbeddings()
    images = torch.rand(2, 3, 8, 8)
    embedding = torch.rand(2, 4, 1, 1)
    cache.keep(images, embedding)
    assert cache.find(images.clone()) is embedding
    other = images.clone()
    other[1, 2, 7, 7] += 1e-6
    assert cache.find(other) is None
    assert cache.find(images[:1]) is None
    assert cache.find(images.double()) is None
    images += 1  # the kept copy is the caller's images as they were
    assert cache.find(images) is None
    cache.clear()
    assert not cache.entries and cache.bytes == 0


def test_off_with_compile_and_outside_a_call(tiny_pipeline, inputs, monkeypatch):
    states = []
    forward = CachedPoseEmbedding.forward
    monkeypatch.setattr(CachedPoseEmbedding, "forward", lambda self, x: states.append(self.embeddings.on) or forward(self, x))
    monkeypatch.setattr(type(tiny_pipeline), "_compiled_or", lambda self, name, fn, fast: fn)  # no inductor here
    tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="latent", fast=FastPath(compile=True))
    assert states and not any(states)
    states.clear()
    tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="latent", fast=True)
    assert states and all(states)
    states.clear()
    with torch.no_grad():
        tiny_pipeline.controlnet.controlnet_cond_embedding(torch.rand(1, 3, 64, 64))
    assert states == [False]
