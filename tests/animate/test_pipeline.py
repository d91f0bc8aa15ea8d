import math
from fractions import Fraction

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("length", [1, 5, 16, 20])
def test_any_length_gives_one_frame_per_motion_frame(tiny_pipeline, rng, length):
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (length, 64, 64, 3), dtype=np.uint8)
    out = tiny_pipeline(reference, motion, num_inference_steps=1, seed=0)
    assert out.frames.shape == (length, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.latents.shape[2] == -(-length // 16) * 16  # edge-padded to whole noise clips


def test_same_seed_same_result_other_seed_other_result(tiny_pipeline, inputs):
    a = tiny_pipeline(*inputs, num_inference_steps=1, seed=1).frames
    b = tiny_pipeline(*inputs, num_inference_steps=1, seed=1).frames
    c = tiny_pipeline(*inputs, num_inference_steps=1, seed=2).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_is_one_clip_tiled_along_the_video(tiny_pipeline, inputs, monkeypatch):
    seen = {}
    original = tiny_pipeline.scheduler.step

    def step(noise_pred, t, latents, **kwargs):
        seen.setdefault("first", latents.clone())
        return original(noise_pred, t, latents, **kwargs)

    monkeypatch.setattr(tiny_pipeline.scheduler, "step", step)
    tiny_pipeline(*inputs, num_inference_steps=1, seed=7)
    first = seen["first"]
    expected = torch.randn((1, 4, 16, 8, 8), generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[:, :, :16], expected) and torch.equal(first[:, :, 16:], expected)


def test_every_branch_changes_the_result(tiny_pipeline, inputs):
    # float frames: at one step the tiny models' ControlNet moves the frames by about 1e-6, far
    # below one grey level, so the uint8 truncation can hide it (an unwired branch changes nothing)
    reference, motion = inputs[0], inputs[1][:4]
    run = {"num_inference_steps": 1, "seed": 1, "output_type": "np"}
    base = tiny_pipeline(reference, motion, **run).frames
    other_pose = tiny_pipeline(reference, motion[::-1].copy(), **run).frames
    other_reference = tiny_pipeline(255 - reference, motion, **run).frames
    no_guidance = tiny_pipeline(reference, motion, **run, guidance_scale=1.0).frames
    for other in (other_pose, other_reference, no_guidance):
        assert not np.array_equal(base, other)


def test_guidance_of_one_or_less_is_off_and_runs_one_unet_half(tiny_pipeline, inputs, monkeypatch):
    # diffusers' rule, as the CLI's help says: at 1 or less there is no guidance, and the UNet
    # sees only the half with the reference's features
    reference, motion = inputs[0], inputs[1][:4]
    rows = _batch_sizes(monkeypatch, tiny_pipeline.unet)
    run = {"num_inference_steps": 1, "seed": 1, "output_type": "np"}
    frames = {scale: tiny_pipeline(reference, motion, **run, guidance_scale=scale).frames for scale in (7.5, 1.0, 0.0, -3.0)}
    assert rows == [2, 1, 1, 1]
    assert np.array_equal(frames[1.0], frames[0.0]) and np.array_equal(frames[1.0], frames[-3.0])
    assert not np.array_equal(frames[7.5], frames[1.0])


def _batch_sizes(monkeypatch, module) -> list[int]:
    """The batch size of every call of ``module`` from now on (its sample's first dimension)."""
    sizes = []
    original = module.forward

    def counting(sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(module, "forward", counting)
    return sizes


def test_controlnet_runs_once_per_frame_per_step_in_16_frame_chunks(tiny_pipeline, inputs, monkeypatch):
    batches = _batch_sizes(monkeypatch, tiny_pipeline.controlnet)
    tiny_pipeline(inputs[0], np.concatenate([inputs[1]] * 3), num_inference_steps=1, seed=0)  # 60 -> 64 frames
    assert batches == [16] * 4


def test_frames_stream_in_order(tiny_pipeline, inputs):
    received = []
    out = tiny_pipeline(*inputs, num_inference_steps=1, seed=0, on_frame=lambda i, f: received.append((i, f)))
    assert out.frames is None
    assert [i for i, _ in received] == list(range(20))
    collected = tiny_pipeline(*inputs, num_inference_steps=1, seed=0).frames
    assert np.array_equal(np.stack([f for _, f in received]), collected)


def test_uint8_output_is_the_truncated_float_output(tiny_pipeline, inputs):
    floats = tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="np").frames
    ints = tiny_pipeline(*inputs, num_inference_steps=1, seed=0).frames
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 1
    # Oracle, exact rational arithmetic: the official uint8 value is floor(x * 255) of the float32 x
    # (float64(x) * 255 is exact, so the official's float64 product truncates to exactly that).
    values, index = np.unique(floats, return_inverse=True)
    truncated = np.array([math.floor(Fraction(float(v)) * 255) for v in values], dtype=np.uint8)
    assert np.array_equal(ints, truncated[index].reshape(floats.shape))
    # and the check can tell truncation from rounding: many pixels would round up
    assert (np.rint(floats.astype(np.float64) * 255) != ints).mean() > 0.1


def test_progress_reports_windows_and_frames(tiny_pipeline, inputs):
    events = []
    tiny_pipeline(*inputs, num_inference_steps=2, seed=0, progress=lambda *e: events.append(e))
    denoise = [e for e in events if e[0] == "denoise"]
    assert denoise == [("denoise", done, 6) for done in range(7)]  # 2 steps x 3 windows (20 frames -> 32 padded), from 0
    assert events[-1] == ("decode", 20, 20)


def test_bfloat16_follows_the_float32_run(tiny_weights, tiny_pipeline, inputs):
    from magicanimate_cli.animate import load_pipeline

    pipe = load_pipeline(tiny_weights, device="cpu", dtype="bfloat16")
    assert pipe.unet.dtype == torch.bfloat16
    reference, motion = inputs[0], inputs[1][:4]
    low = pipe(reference, motion, num_inference_steps=1, seed=0, output_type="np").frames
    full = tiny_pipeline(reference, motion, num_inference_steps=1, seed=0, output_type="np").frames
    other_seed = tiny_pipeline(reference, motion, num_inference_steps=1, seed=1, output_type="np").frames
    assert low.shape == full.shape == (4, 64, 64, 3)
    # Oracle: the float32 run. Measured: mean |bf16 - fp32| 0.002 (max 0.018), while another seed
    # moves the frames by 0.15 on average; bfloat16 must stay an approximation of the same run.
    assert np.abs(low - full).mean() < 0.02 and np.abs(low - full).max() < 0.1
    assert np.abs(other_seed - full).mean() > 0.1


def test_open_windows_keep_the_clips_end_out_of_its_start(tiny_pipeline, rng):
    # 40 frames, padded to 48. The official loop's last window is frames 36..47 followed by 0..3,
    # so the end of the motion reaches the first frames; the open schedule's windows (0..15,
    # 11..26, 21..36, 32..47) let nothing past frame 31 reach frames 0..20 in one step.
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    other_end = motion.copy()
    other_end[32:] = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    run = {"num_inference_steps": 1, "seed": 3, "output_type": "np"}
    frames = {
        (schedule, which): tiny_pipeline(reference, clip, **run, context_schedule=schedule).frames
        for schedule in ("loop", "open") for which, clip in (("same", motion), ("other end", other_end))
    }
    assert np.array_equal(frames["open", "same"][:21], frames["open", "other end"][:21])
    assert not np.array_equal(frames["open", "same"][21:], frames["open", "other end"][21:])
    for first in range(4):
        assert not np.array_equal(frames["loop", "same"][first], frames["loop", "other end"][first])
    assert np.array_equal(frames["loop", "same"][4:12], frames["loop", "other end"][4:12])


def test_open_windows_need_no_wrapped_window(tiny_pipeline, inputs):
    events = []
    motion = np.concatenate([inputs[1]] * 3)  # 60 frames, padded to 64: 6 windows a step in the loop, 5 open
    out = tiny_pipeline(inputs[0], motion, num_inference_steps=1, seed=0, context_schedule="open",
                        progress=lambda *e: events.append(e))
    assert [e for e in events if e[0] == "denoise"][-1] == ("denoise", 5, 5)
    assert out.frames.shape == (60, 64, 64, 3)
    short = inputs[1][:5]  # one window either way: the same computation
    run = {"num_inference_steps": 1, "seed": 0, "output_type": "np"}
    assert np.array_equal(tiny_pipeline(inputs[0], short, **run, context_schedule="open").frames,
                          tiny_pipeline(inputs[0], short, **run).frames)
    with pytest.raises(ValueError, match="context_schedule"):
        tiny_pipeline(*inputs, num_inference_steps=1, context_schedule="spiral")


@pytest.mark.parametrize("schedule", ["loop", "open"])
@pytest.mark.parametrize("fusion", ["flat", "pyramid"])
def test_overlapping_windows_are_averaged_alike_or_by_the_frames_place(tiny_pipeline, inputs, monkeypatch, schedule, fusion):
    from magicanimate_cli.animate.windows import context_windows, window_weights

    calls = []

    def window(sample, t, text, down, mid, halves, fast):  # window i predicts i + 1 everywhere
        calls.append(len(calls) + 1)
        return torch.full((halves, *sample.shape[1:]), float(calls[-1]))

    seen = {}

    def keep(pipe, step, t, tensors):
        seen.update(tensors)
        return {}

    monkeypatch.setattr(tiny_pipeline, "_window", window)
    motion = np.concatenate([inputs[1]] * 2)  # 40 frames, padded to 48
    tiny_pipeline(inputs[0], motion, num_inference_steps=1, seed=0, context_schedule=schedule, context_fusion=fusion,
                  output_type="latent", callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["noise_pred"])
    windows = context_windows(48, 16, 4, schedule)

    def mean(weights):
        out = []
        for frame in range(48):
            covering = [(weights[w.index(frame)], i + 1) for i, w in enumerate(windows) if frame in w]
            out.append(sum(weight * value for weight, value in covering) / sum(weight for weight, _ in covering))
        return out

    expected = mean(window_weights(16, fusion))
    assert len(calls) == len(windows)
    assert torch.allclose(seen["noise_pred"][0, 0, :, 0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
    if fusion == "pyramid":  # and not the flat mean
        assert max(abs(a - b) for a, b in zip(expected, mean([1] * 16))) > 0.1


def test_pyramid_fusion_changes_only_clips_of_more_than_one_window(tiny_pipeline, inputs):
    run = {"num_inference_steps": 1, "seed": 0, "output_type": "np"}
    short, long = inputs[1][:16], inputs[1]  # one window; 20 frames, padded to 32: three
    assert np.array_equal(tiny_pipeline(inputs[0], short, **run, context_fusion="pyramid").frames,
                          tiny_pipeline(inputs[0], short, **run).frames)
    assert not np.array_equal(tiny_pipeline(inputs[0], long, **run, context_fusion="pyramid").frames,
                              tiny_pipeline(inputs[0], long, **run).frames)
    with pytest.raises(ValueError, match="context_fusion"):
        tiny_pipeline(*inputs, num_inference_steps=1, context_fusion="gauss")
