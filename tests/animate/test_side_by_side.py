"""Small convolutions laid side by side (``animate/side_by_side.py``).

Oracle: ``nn.Conv2d`` with padding 1 on the same weights and inputs, bitwise, in a fresh process on
the pinned AVX2 kernels (as the CLI runs) at the real model's channel counts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from magicanimate_cli.animate import side_by_side
from magicanimate_cli.animate.pipeline import FastPath
from magicanimate_cli.animate.side_by_side import SideBySideConv2d, install_side_by_side

BITWISE = textwrap.dedent(
    """
    from magicanimate_cli.animate import pin_cpu_kernels
    pin_cpu_kernels()  # before torch is imported
    import torch
    from torch import nn
    from magicanimate_cli.animate.side_by_side import install_side_by_side
    torch.set_num_threads(2)
    torch.manual_seed(0)
    # the UNet's and ControlNet's shapes at 128²: 1280 output channels, 2x2 to 8x8, 16 or 32 images
    for images, channels, height, width, out in [
        (16, 1280, 2, 2, 1280), (32, 2560, 2, 2, 1280), (16, 1280, 4, 4, 1280), (32, 1920, 4, 4, 1280),
        (20, 1280, 8, 8, 1280), (16, 1280, 2, 3, 1280), (16, 1280, 5, 2, 1280),  # and images that are not square
    ]:
        conv = nn.Conv2d(channels, out, 3, padding=1)
        switch = install_side_by_side(conv)
        x = torch.randn(images, channels, height, width)
        with torch.no_grad():
            plain = conv(x)
            switch.on = True
            laid = conv(x)
        assert type(conv).__name__ == "SideBySideConv2d"
        assert laid.is_contiguous() and laid.shape == plain.shape
        assert torch.equal(laid, plain), (images, channels, height, width, out, (laid - plain).abs().max().item())
    print("ok")
    """
)


def test_side_by_side_is_bitwise_the_convolution_on_the_real_shapes():
    proc = subprocess.run([sys.executable, "-c", BITWISE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def _model():
    return nn.Sequential(
        nn.Conv2d(1280, 1280, 3, padding=1),  # taken
        nn.Conv2d(1280, 640, 3, padding=1),  # too few output channels
        nn.Conv2d(640, 1280, 3, padding=1),  # too few input channels
        nn.Conv2d(1280, 1280, 3, stride=2, padding=1),  # a downsampler
        nn.Conv2d(1280, 1280, 1),  # 1x1
        nn.Conv2d(1280, 1280, 3, padding=1, groups=2),
    )


def test_install_swaps_only_the_3x3_same_convolutions_and_keeps_the_parameters():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    switch = install_side_by_side(model)
    assert [type(m) is SideBySideConv2d for m in model] == [True, False, False, False, False, False]
    assert model[0].side_by_side is switch and switch.on is False
    assert install_side_by_side(model) is not switch and model[0].side_by_side is switch  # swapped once only
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_inputs_it_does_not_take_run_the_plain_convolution(monkeypatch):
    torch.manual_seed(1)
    conv = nn.Conv2d(1280, 1280, 3, padding=1)
    plain = nn.Conv2d(1280, 1280, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    install_side_by_side(conv).on = True
    rows = []

    def conv2d(x, *args, **kwargs):
        rows.append(tuple(x.shape))
        return torch.nn.functional.conv2d(x, *args, **kwargs)

    monkeypatch.setattr(side_by_side, "F", SimpleNamespace(conv2d=conv2d))
    with torch.no_grad():
        for shape in [(8, 1280, 2, 2), (16, 1280, 9, 9), (16, 1280, 1, 1)]:  # too few images, too large, 1x1
            x = torch.randn(shape)
            assert torch.equal(conv(x), plain(x))
        assert rows == []
        x = torch.randn(16, 1280, 2, 3)  # taken: one row of 16 images of 2x3, each followed by a zero column
        # (bitwise on the pinned kernels: the test above; this process's kernels are not pinned)
        assert torch.allclose(conv(x), plain(x), atol=1e-5, rtol=0)
        assert rows == [(1, 1280, 2 + 2, 16 * (3 + 1) + 2)]
        conv.side_by_side.on = False  # switched off: the plain convolution again
        conv(x)
    assert len(rows) == 1


def test_the_switch_is_on_only_inside_a_fast_call(tiny_pipeline, inputs):
    seen = []
    hook = tiny_pipeline.controlnet.register_forward_pre_hook(lambda *_: seen.append(tiny_pipeline._side_by_side.on))
    try:
        for fast in (False, True, FastPath(side_by_side_convs=False)):
            tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="latent", fast=fast)
            assert seen and len(set(seen)) == 1, fast
            assert seen[0] is (fast is True)
            assert tiny_pipeline._side_by_side.on is False  # off again after the call
            seen.clear()
    finally:
        hook.remove()


def test_the_pipeline_gives_the_same_frames_with_every_convolution_laid_side_by_side(tiny_weights, monkeypatch, inputs):
    """The tiny models are too narrow for the lever; with its limits lowered every 3x3 convolution of
    their UNet and ControlNet takes it (other kernels at these sizes: close, not bitwise)."""
    from magicanimate_cli.animate import load_pipeline

    monkeypatch.setattr(side_by_side, "MIN_CHANNELS", 1)
    monkeypatch.setattr(side_by_side, "MIN_IMAGES", 2)
    pipe = load_pipeline(tiny_weights, device="cpu", dtype="float32")
    swapped = [m for model in (pipe.unet, pipe.controlnet) for m in model.modules() if type(m) is SideBySideConv2d]
    assert len(swapped) > 10 and not any(type(m) is SideBySideConv2d for m in pipe.appearance_encoder.modules())
    taken = []
    monkeypatch.setattr(side_by_side, "F", SimpleNamespace(conv2d=lambda x, *a, **k: taken.append(x.shape) or torch.nn.functional.conv2d(x, *a, **k)))
    base = pipe(*inputs, num_inference_steps=2, seed=3, output_type="np", fast=FastPath(side_by_side_convs=False))
    assert not taken
    laid = pipe(*inputs, num_inference_steps=2, seed=3, output_type="np", fast=True)
    assert taken  # the lever ran
    assert np.abs(laid.frames - base.frames).max() < 1e-4
    assert torch.allclose(laid.latents, base.latents, atol=1e-4, rtol=0)
