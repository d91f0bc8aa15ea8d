"""The pipeline as diffusers users expect it: processor switches, re-entrant calls, generator,
step callbacks, output types and a save_pretrained/from_pretrained round trip."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image

from magicanimate_cli.animate import AnimateConfig
from magicanimate_cli.animate.pipeline import MagicAnimatePipeline, MagicAnimatePipelineOutput
from magicanimate_cli.animate.reference import MissingReferenceError, ReferenceAttentionError, ReferenceWriterProcessor


@pytest.fixture()
def inputs(rng):
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    return reference, motion


@pytest.fixture()
def fresh(tiny_weights):
    """A pipeline of its own (these tests try to break it)."""
    from magicanimate_cli.animate import load_pipeline

    return lambda: load_pipeline(tiny_weights, device="cpu", dtype="float32")


def processors(pipe) -> dict[str, type]:
    return {f"{m}.{k}": type(v) for m in ("unet", "appearance_encoder") for k, v in getattr(pipe, m).attn_processors.items()}


SWITCHES = {
    "xformers": lambda p: p.enable_xformers_memory_efficient_attention(),
    "slicing": lambda p: p.enable_attention_slicing(),
    "slicing_size": lambda p: p.enable_attention_slicing(1),
    "fuse_qkv": lambda p: p.fuse_qkv_projections(),
    "unet_set_attn_processor": lambda p: p.unet.set_attn_processor(AttnProcessor2_0()),
    "unet_default": lambda p: p.unet.set_default_attn_processor(),
    "unet_xformers": lambda p: p.unet.enable_xformers_memory_efficient_attention(),
    "unet_fuse": lambda p: p.unet.fuse_qkv_projections(),
    "unet_slicing": lambda p: p.unet.set_attention_slice(1),
    "encoder_set_attn_processor": lambda p: p.appearance_encoder.set_attn_processor(AttnProcessor()),
    "one_writer": lambda p: p.appearance_encoder.get_submodule(p._readers[0].name).set_processor(AttnProcessor2_0()),
    "one_temporal": lambda p: next(m for n, m in p.unet.named_modules() if ".motion_modules." in n and hasattr(m, "set_processor")).set_processor(AttnProcessor2_0()),
}


def test_processor_switches_are_refused_and_change_nothing(fresh, inputs):
    pipe = fresh()
    before = pipe(*inputs, num_inference_steps=1, seed=3).frames
    kinds = processors(pipe)
    for name, switch in SWITCHES.items():
        with pytest.raises(ReferenceAttentionError):
            switch(pipe)
        assert processors(pipe) == kinds, f"{name} changed processors before refusing"
    # switching off what was never on is harmless
    pipe.disable_attention_slicing()
    pipe.disable_xformers_memory_efficient_attention()
    assert processors(pipe) == kinds
    assert np.array_equal(pipe(*inputs, num_inference_steps=1, seed=3).frames, before)


def test_a_reader_without_its_bank_raises(fresh, inputs):
    pipe = fresh()
    name = pipe._readers[-1].name
    writer = pipe.appearance_encoder.get_submodule(name)
    writer.processor = AttnProcessor2_0()  # behind the guard's back: the call itself must notice
    with pytest.raises(ReferenceAttentionError):
        pipe(*inputs, num_inference_steps=1)
    # a writer of the right kind that banks under another name: the reader finds nothing and raises
    writer.processor = ReferenceWriterProcessor(pipe._bank, "not-" + name)
    with pytest.raises(MissingReferenceError, match=name):
        pipe(*inputs, num_inference_steps=1)


@pytest.mark.parametrize("fast", [False, True])
def test_calls_are_re_entrant(fresh, inputs, rng, fast):
    """Two different calls in a row give what each gives on a fresh pipeline."""
    other_ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first = {"num_inference_steps": 2, "seed": 1, "guidance_scale": 7.5, "fast": fast}
    second = {"num_inference_steps": 1, "seed": 2, "guidance_scale": 1.0, "context_frames": 4, "context_overlap": 1, "fast": fast}
    pipe = fresh()
    a = pipe(*inputs, **first).frames
    b = pipe(other_ref, inputs[1][:5], **second).frames
    assert np.array_equal(a, fresh()(*inputs, **first).frames)
    assert np.array_equal(b, fresh()(other_ref, inputs[1][:5], **second).frames)
    assert not pipe._bank.features and not pipe._bank.armed


def test_an_interrupted_call_leaves_nothing_behind(fresh, inputs):
    pipe = fresh()
    expected = pipe(*inputs, num_inference_steps=1, seed=5).frames

    def stop(stage, done, total):  # after the first window: the bank is filled and armed
        if stage == "denoise" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe(*inputs, num_inference_steps=2, seed=1, progress=stop)
    assert not pipe._bank.features and not pipe._bank.armed
    assert np.array_equal(pipe(*inputs, num_inference_steps=1, seed=5).frames, expected)


def test_generator_is_the_seed_path(tiny_pipeline, inputs):
    by_seed = tiny_pipeline(*inputs, num_inference_steps=1, seed=11).frames
    by_generator = tiny_pipeline(*inputs, num_inference_steps=1, generator=torch.Generator().manual_seed(11), seed=0).frames
    assert np.array_equal(by_seed, by_generator)


def test_callback_on_step_end_sees_and_can_replace_latents(tiny_pipeline, inputs):
    seen = []

    def record(pipe, step_index, timestep, tensors):
        seen.append((step_index, int(timestep), tensors["latents"].clone(), tensors["noise_pred"].shape))
        return {}

    out = tiny_pipeline(*inputs, num_inference_steps=3, seed=2, callback_on_step_end=record,
                        callback_on_step_end_tensor_inputs=["latents", "noise_pred"])
    assert [s[0] for s in seen] == [0, 1, 2]
    assert [s[1] for s in seen] == tiny_pipeline.scheduler.timesteps.tolist()
    assert torch.equal(seen[-1][2], out.latents)
    # resuming from the latents after step 1 gives the uninterrupted result
    resumed = tiny_pipeline(*inputs, num_inference_steps=3, seed=99, latents=seen[0][2], start_step=1)
    assert torch.equal(resumed.latents, out.latents) and np.array_equal(resumed.frames, out.frames)
    # a returned "latents" replaces the latents
    zeroed = tiny_pipeline(*inputs, num_inference_steps=1, seed=2,
                           callback_on_step_end=lambda p, i, t, k: {"latents": torch.zeros_like(k["latents"])})
    assert not zeroed.latents.any()
    with pytest.raises(ValueError):
        tiny_pipeline(*inputs, num_inference_steps=1, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["x"])


def test_output_types(tiny_pipeline, inputs):
    common = {"num_inference_steps": 1, "seed": 0}
    as_uint8 = tiny_pipeline(*inputs, **common)
    assert isinstance(as_uint8, MagicAnimatePipelineOutput)
    as_np = tiny_pipeline(*inputs, output_type="np", **common).frames
    as_pt = tiny_pipeline(*inputs, output_type="pt", **common).frames
    as_pil = tiny_pipeline(*inputs, output_type="pil", **common).frames
    as_latent = tiny_pipeline(*inputs, output_type="latent", **common)
    frames, latents = tiny_pipeline(*inputs, return_dict=False, **common)
    assert as_np.dtype == np.float32 and as_np.shape == (6, 64, 64, 3)
    assert np.array_equal((as_np.astype(np.float64) * 255).astype(np.uint8), as_uint8.frames)  # official truncation
    assert as_pt.shape == (6, 3, 64, 64) and torch.equal(as_pt.permute(0, 2, 3, 1), torch.from_numpy(as_np))
    assert len(as_pil) == 6 and all(isinstance(i, Image.Image) for i in as_pil)
    assert np.array_equal(np.stack([np.asarray(i) for i in as_pil]), as_uint8.frames)
    assert torch.equal(as_latent.frames, as_uint8.latents)
    assert np.array_equal(frames, as_uint8.frames) and torch.equal(latents, as_uint8.latents)
    for unknown in ("jpeg", "float"):  # "float" was an old name of "np"; diffusers' names only
        with pytest.raises(ValueError, match="output_type must be one of uint8, np, pt, pil, latent$"):
            tiny_pipeline(*inputs, output_type=unknown, **common)


def test_the_call_defaults_are_the_animate_defaults():
    """A library caller of the pipeline gets the settings `magicanimate animate` uses (the official ones)."""
    defaults = {name: p.default for name, p in inspect.signature(MagicAnimatePipeline.__call__).parameters.items()}
    config = AnimateConfig()
    assert defaults["num_inference_steps"] == config.steps
    for name in ("guidance_scale", "seed", "context_frames", "context_overlap", "context_schedule", "context_fusion"):
        assert defaults[name] == getattr(config, name), name


def test_save_pretrained_round_trip_on_a_tiny_pipeline(tiny_pipeline, inputs, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = MagicAnimatePipeline.from_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    assert not list((tmp_path / "pipe").rglob("*.bin")) and not list((tmp_path / "pipe").rglob("*.ckpt"))
    common = {"num_inference_steps": 2, "seed": 4}
    assert np.array_equal(loaded(*inputs, **common).frames, tiny_pipeline(*inputs, **common).frames)
    with pytest.raises(ReferenceAttentionError):  # the loaded pipeline is protected too
        loaded.unet.set_default_attn_processor()


def test_from_pretrained_reads_the_official_layout(tiny_weights, tiny_pipeline, inputs):
    loaded = MagicAnimatePipeline.from_pretrained(tiny_weights)
    common = {"num_inference_steps": 1, "seed": 4}
    assert np.array_equal(loaded(*inputs, **common).frames, tiny_pipeline(*inputs, **common).frames)
