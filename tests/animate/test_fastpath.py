"""The speed levers: the bitwise ones change nothing, the fast path stays within the parity contract.

Oracles: the official computation (the default path, itself bitwise the official fixtures) and the
fixture's expected arrays with the contract of ../shared/parity/README.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import parity_fixtures

from magicanimate_cli.animate.pipeline import FastPath
from magicanimate_cli.animate.shared_halves import guided_forward

NOTHING = FastPath(shared_down=False, shared_skips=False, reference_kv_once=False, text_kv_once=False, appearance_one_row=False,
                   side_by_side_convs=False, upsample_phases=False, decode_chunk=1, cuda_graph=False)  # no lever: the default computation


def test_guided_forward_without_sharing_is_the_unet_forward(tiny_pipeline):
    """Our forward for the shared down path is diffusers' forward, bit for bit, when nothing is shared."""
    unet = tiny_pipeline.unet
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 6, 8, 8)
    text = torch.randn(12, 77, unet.config.cross_attention_dim)
    down = [torch.randn(12, *r.shape[1:]) for r in _residual_shapes(tiny_pipeline, sample)]
    mid = torch.randn(12, *_residual_shapes(tiny_pipeline, sample, mid=True).shape[1:])
    with torch.no_grad():
        expected = unet(sample, 500, encoder_hidden_states=text, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        ours = guided_forward(unet, sample, torch.tensor(500), text, down, mid, halves=1)
    assert torch.equal(ours, expected)


def _residual_shapes(pipe, sample, mid=False):
    frames = sample.permute(0, 2, 1, 3, 4).reshape(-1, *sample.shape[1:2], *sample.shape[3:])
    with torch.no_grad():
        down, middle = pipe.controlnet(frames[:1], 500, encoder_hidden_states=torch.zeros(1, 77, pipe.unet.config.cross_attention_dim),
                                       controlnet_cond=torch.zeros(1, 3, 64, 64), return_dict=False)
    return middle if mid else down


def test_shared_down_path_equals_two_identical_halves(tiny_pipeline):
    """With the reference bank empty both halves are one computation: sharing the down path moves
    the result by rounding only, and the two output halves are identical."""
    unet = tiny_pipeline.unet
    torch.manual_seed(1)
    sample = torch.randn(1, 4, 5, 8, 8)
    text = torch.randn(5, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        full = unet(sample.repeat(2, 1, 1, 1, 1), 300, encoder_hidden_states=text.repeat(2, 1, 1), return_dict=False)[0]
        shared = guided_forward(unet, sample, torch.tensor(300), text, None, None, halves=2)
    assert torch.equal(shared[0], shared[1])
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)


def test_fast_path_is_close_on_random_inputs_and_each_lever_runs(tiny_pipeline, inputs):
    base = tiny_pipeline(*inputs, num_inference_steps=2, seed=3, output_type="np")
    levers = {
        "all": True,
        "shared_down": replace(NOTHING, shared_down=True),
        "shared_skips": replace(NOTHING, shared_down=True, shared_skips=True),
        "kv_once": replace(NOTHING, reference_kv_once=True),
        "text_kv_once": replace(NOTHING, text_kv_once=True),
        "one_row": replace(NOTHING, appearance_one_row=True),
        "side_by_side": replace(NOTHING, side_by_side_convs=True),
        "upsample_phases": replace(NOTHING, upsample_phases=True),
        "decode_chunk": replace(NOTHING, decode_chunk=8),
    }
    for name, fast in levers.items():
        out = tiny_pipeline(*inputs, num_inference_steps=2, seed=3, output_type="np", fast=fast)
        assert out.frames.shape == base.frames.shape
        assert np.abs(out.frames - base.frames).max() < 2e-2, name


def test_decode_in_chunks_streams_every_frame_in_order(tiny_pipeline, inputs):
    received = []
    tiny_pipeline(*inputs, num_inference_steps=1, seed=0, fast=replace(NOTHING, decode_chunk=8),
                  on_frame=lambda i, f: received.append(i))
    assert received == list(range(20))


def test_fast_path_decodes_in_chunks_of_two_on_cpu_unless_asked(tiny_pipeline, inputs, monkeypatch):
    sizes = []
    decode = tiny_pipeline.vae.decode
    monkeypatch.setattr(tiny_pipeline.vae, "decode", lambda z: sizes.append(len(z)) or decode(z))
    for fast in (True, replace(NOTHING, decode_chunk=8)):
        sizes.clear()
        tiny_pipeline(*inputs, num_inference_steps=1, seed=0, fast=fast, output_type="np")
        assert sizes == ([2] * 10 if fast is True else [8, 8, 4])  # CPU: two frames per call (FastPath.decode_chunk)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_path_decodes_in_chunks_of_four_on_cuda(tiny_weights, inputs, monkeypatch):
    from magicanimate_cli.animate import load_pipeline

    pipe = load_pipeline(tiny_weights, device="cuda", dtype="float16")
    sizes = []
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z: sizes.append(len(z)) or decode(z))
    pipe(*inputs, num_inference_steps=1, seed=0, fast=True, output_type="np")
    assert sizes == [4] * 5


FIXTURES = parity_fixtures()

SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from magicanimate_cli.animate import pin_cpu_kernels, load_pipeline
    from magicanimate_cli.crop import fit_square
    pin_cpu_kernels()
    from magicanimate_cli import media
    from magicanimate_cli.animate.pipeline import FastPath
    fixture, out, modes, seed, steps, guidance, size, frames, overlap = sys.argv[1:]
    pipe = load_pipeline(fixture + "/weights", device="cpu", dtype="float32")
    ref = fit_square(media.read_image(fixture + "/inputs/reference.png"), int(size), "stretch", (0, 0, 0))
    motion = np.stack([fit_square(f, int(size), "stretch", (0, 0, 0)) for f in media.iter_frames(fixture + "/inputs/motion.mp4")])
    common = dict(num_inference_steps=int(steps), guidance_scale=float(guidance), seed=int(seed),
                  context_frames=int(frames), context_overlap=int(overlap), output_type="np")
    arrays = {}
    for mode in modes.split(","):
        fast = {"default": False, "fast": True, "compile": FastPath(compile=True)}[mode]
        result = pipe(ref, motion, fast=fast, **common)
        arrays[mode + "_latents"], arrays[mode + "_video"] = result.latents.numpy(), result.frames
    np.savez(out, graphs=len(pipe._compiled), **arrays)
    """
)


def _run_on_fixture(fixture, tmp_path, modes: str, **env):
    """The fixture's run with each of ``modes`` in a fresh process (2 threads, pinned kernels)."""
    run = json.loads((fixture / "expected" / "run.json").read_text())["params"]
    out = tmp_path / "result.npz"
    args = [str(fixture), str(out), modes, *(str(run[k]) for k in ("seed", "steps", "guidance_scale", "size", "context_frames", "context_overlap"))]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def _assert_within_the_contract(fixture, latents, video):
    """../shared/parity/README.md's tolerances against the fixture's expected arrays."""
    expected_latents = np.load(fixture / "expected" / "final_latents.npy")
    expected_video = np.load(fixture / "expected" / "video_float.npy")[0].transpose(1, 2, 3, 0)
    expected_uint8 = np.load(fixture / "expected" / "video_uint8.npy")
    n = len(video)
    assert np.abs(latents - expected_latents).max() <= 1e-3
    assert np.abs(video - expected_video[:n]).max() <= 2e-3
    frames = (video.astype(np.float64) * 255).astype(np.uint8)
    diff = np.abs(frames.astype(int) - expected_uint8.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    # and it is really another computation (otherwise this proves nothing about rounding)
    assert not np.array_equal(latents, expected_latents)


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURES, reason="parity fixtures not found (set MAGICANIMATE_PARITY_DIR)")
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fast_path_stays_within_the_contract_and_default_stays_bitwise(fixture, tmp_path):
    result = _run_on_fixture(fixture, tmp_path, "fast,default")
    expected_latents = np.load(fixture / "expected" / "final_latents.npy")
    expected_video = np.load(fixture / "expected" / "video_float.npy")[0].transpose(1, 2, 3, 0)
    n = len(result["default_video"])
    # the default path (with the bitwise levers: encoder tail skipped, no padded decode) is the official result
    assert np.array_equal(result["default_latents"], expected_latents)
    assert np.array_equal(result["default_video"], expected_video[:n])
    _assert_within_the_contract(fixture, result["fast_latents"], result["fast_video"])


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURES, reason="parity fixtures not found (set MAGICANIMATE_PARITY_DIR)")
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_compiled_fast_path_stays_within_the_contract(fixture, tmp_path):
    """``--compile`` (inductor fuses and reorders the reductions) on CPU: within the contract on the fixture."""
    result = _run_on_fixture(fixture, tmp_path, "compile", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    assert int(result["graphs"]) == 2  # the window and the ControlNet went through inductor
    _assert_within_the_contract(fixture, result["compile_latents"], result["compile_video"])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the AVX2 kernels are x86-64's")
def test_pinned_cpu_kernels_get_an_inductor_cache_of_their_own(tmp_path):
    code = ("from magicanimate_cli.animate import pin_cpu_kernels; pin_cpu_kernels(); import torch; "
            "from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir; "
            "print(cache_dir(), default_cache_dir(), torch.backends.cpu.get_cpu_capability())")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "ATEN_CPU_CAPABILITY")}
    used, default, capability = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert capability == "AVX2" and used == default + "_avx2"  # the shared default folder stays for unpinned processes
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "chosen")  # the user's choice stays
    used = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()[0]
    assert used == str(tmp_path / "chosen")
