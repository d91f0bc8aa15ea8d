"""The appearance encoder replayed from a CUDA graph (``FastPath.cuda_graph``).

Oracle: the same fast path with the encoder run eagerly on every step. On CUDA the replayed kernels
are the eager ones, so the latents and frames must be bitwise equal; elsewhere the lever must leave
the eager encoder in charge of every step. The CUDA tests run on a GPU machine only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from magicanimate_cli.animate import cuda_graph
from magicanimate_cli.animate.pipeline import FastPath

EAGER = FastPath(cuda_graph=False)
STEPS = 4


def _encoder_calls(pipe, monkeypatch) -> list:
    """Every appearance-encoder forward that Python runs (a replay runs none)."""
    calls = []
    original = pipe._encode_appearance

    def counted(*args):
        calls.append(torch.cuda.is_current_stream_capturing() if torch.cuda.is_available() else False)
        original(*args)

    monkeypatch.setattr(pipe, "_encode_appearance", counted)
    return calls


def _graphs(monkeypatch) -> list:
    made = []
    original = cuda_graph.AppearanceGraph

    class Recorded(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("magicanimate_cli.animate.pipeline.AppearanceGraph", Recorded)
    return made


def test_on_cpu_the_encoder_runs_eagerly_on_every_step(tiny_pipeline, inputs, monkeypatch):
    eager = tiny_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=EAGER)
    graphs = _graphs(monkeypatch)
    calls = _encoder_calls(tiny_pipeline, monkeypatch)
    out = tiny_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=FastPath())
    assert len(calls) == STEPS and not any(calls)
    assert [(g.eager_calls, g.replays) for g in graphs] == [(STEPS, 0)]
    assert torch.equal(out.latents, eager.latents)
    assert np.array_equal(out.frames, eager.frames)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_pipeline(tiny_weights):
    from magicanimate_cli.animate import load_pipeline

    return load_pipeline(tiny_weights, device="cuda", dtype="float16")


@cuda
@pytest.mark.parametrize("fast", [FastPath(), FastPath(appearance_one_row=False), FastPath(reference_kv_once=False)],
                         ids=["fast", "two_rows", "readers_read_the_bank"])
def test_replayed_encoder_gives_the_eager_latents_and_frames_bitwise(cuda_pipeline, inputs, monkeypatch, fast):
    eager = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=replace(fast, cuda_graph=False))
    graphs = _graphs(monkeypatch)
    calls = _encoder_calls(cuda_pipeline, monkeypatch)
    out = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=fast)
    assert calls == [False, True]  # step 1 eagerly, step 2 captured; the rest are replays
    assert [(g.eager_calls, g.replays) for g in graphs] == [(1, STEPS - 1)]
    assert torch.equal(out.latents, eager.latents)
    assert np.array_equal(out.frames, eager.frames)


@cuda
def test_resumed_run_with_the_graph_continues_exactly(cuda_pipeline, inputs):
    seen = {}

    def keep(pipe, step, t, tensors):
        seen[step] = tensors["latents"].clone()
        return {}

    full = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=True, callback_on_step_end=keep)
    resumed = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=True, latents=seen[0], start_step=1)
    assert torch.equal(resumed.latents, full.latents)


@cuda
def test_an_encoder_that_cannot_be_captured_runs_eagerly_with_a_warning(cuda_pipeline, inputs, monkeypatch):
    """A host synchronisation inside the encoder makes the capture fail: the run goes on eagerly."""
    eager = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=EAGER)
    original = cuda_pipeline._encode_appearance

    def synchronising(latents, t, text):
        original(latents, t, text)
        torch.cuda.synchronize()  # not permitted while a stream is captured

    monkeypatch.setattr(cuda_pipeline, "_encode_appearance", synchronising)
    graphs = _graphs(monkeypatch)
    with pytest.warns(UserWarning, match="could not be captured in a CUDA graph"):
        out = cuda_pipeline(*inputs, num_inference_steps=STEPS, seed=2, fast=FastPath())
    assert [(g.eager_calls, g.replays) for g in graphs] == [(STEPS, 0)]
    assert torch.equal(out.latents, eager.latents)


@cuda
@pytest.mark.parametrize("fast", [FastPath(), FastPath(appearance_one_row=False)], ids=["fast", "two_rows"])
def test_the_graph_holds_every_reference_and_replays_them_bitwise(cuda_pipeline, inputs, monkeypatch, fast):
    reference, motion = inputs
    references = [reference, 255 - reference]  # animate --extra-reference
    eager = cuda_pipeline(references, motion, num_inference_steps=STEPS, seed=2, fast=replace(fast, cuda_graph=False))
    graphs = _graphs(monkeypatch)
    out = cuda_pipeline(references, motion, num_inference_steps=STEPS, seed=2, fast=fast)
    assert [(g.eager_calls, g.replays) for g in graphs] == [(1, STEPS - 1)]
    assert graphs[0]._inputs[0].shape[0] == 2 * (1 if fast.appearance_one_row else 2)  # its static input: every reference
    assert torch.equal(out.latents, eager.latents)
    assert not torch.equal(out.latents, cuda_pipeline(reference, motion, num_inference_steps=STEPS, seed=2, fast=fast).latents)
