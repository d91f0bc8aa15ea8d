"""Nearest ×2 upsampling and its convolution computed by phases (``animate/upsample_phases.py``).

Oracle: diffusers' ``Upsample2D`` forward (nearest interpolation, then the 3×3 convolution) on the
same weights and inputs: equal in float64 up to rounding, close in float32, and bitwise itself
whenever the lever does not take the input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.upsampling import Upsample2D
from torch import nn

from magicanimate_cli.animate import upsample_phases
from magicanimate_cli.animate.pipeline import FastPath
from magicanimate_cli.animate.upsample_phases import PhaseUpsample2D, install_upsample_phases, phase_kernels


def _upsampler(channels: int, out: int | None = None, seed: int = 0) -> Upsample2D:
    torch.manual_seed(seed)
    return Upsample2D(channels, use_conv=True, out_channels=out).eval().requires_grad_(False)


@pytest.mark.parametrize("shape", [(3, 8, 4, 4), (2, 16, 5, 7), (4, 6, 8, 4)])
def test_phases_are_the_upsampled_convolution(shape):
    """The module's float32 phases against the stock forward in float64: as close as the stock
    float32 forward is (the same sums, rounded in another order), and not its bits."""
    up = _upsampler(shape[1], out=5)
    x = torch.randn(*shape)
    with torch.no_grad():
        exact = Upsample2D.forward(up.double(), x.double()).float()
        up.float()
        stock = Upsample2D.forward(up, x)
        install_upsample_phases(up).on = True
        ours = up(x)
    assert type(up) is PhaseUpsample2D and up._kernels is not None  # the phases ran
    assert ours.shape == stock.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    assert ours.is_contiguous()
    stock_error = (stock - exact).abs().max().item()
    assert (ours - exact).abs().max().item() <= 4 * stock_error + 1e-7
    assert torch.allclose(ours, stock, atol=1e-5, rtol=0)
    assert not torch.equal(ours, stock)  # it is really another computation


def test_inputs_it_does_not_take_run_the_stock_forward_bitwise(monkeypatch):
    up = _upsampler(8)
    switch = install_upsample_phases(up)
    switch.on = True
    calls = []
    kernels = PhaseUpsample2D._phase_kernels
    monkeypatch.setattr(PhaseUpsample2D, "_phase_kernels", lambda self: calls.append(1) or kernels(self))
    with torch.no_grad():
        for x, size in [
            (torch.randn(2, 8, 2, 2), None),  # smaller than MIN_SIDE
            (torch.randn(2, 8, 4, 4), (9, 8)),  # an output size that is not twice the input
            (torch.randn(2, 8, 4, 4).double(), None),  # not float32
        ]:
            stock = Upsample2D.forward(up.double() if x.dtype == torch.float64 else up.float(), x, size)
            assert torch.equal(up(x, size), stock)
        up.float()
        up.conv.weight.requires_grad_(True)  # a weight being trained: the stock forward keeps its gradient
        x = torch.randn(2, 8, 4, 4)
        assert torch.equal(up(x), Upsample2D.forward(up, x))
        up.conv.weight.requires_grad_(False)
        switch.on = False  # switched off: the stock forward whatever the input
        x = torch.randn(2, 8, 4, 4)
        assert torch.equal(up(x), Upsample2D.forward(up, x))
        assert not calls
        switch.on = True
        up(x)
    assert calls == [1]  # and that input it takes


def test_install_swaps_only_upsamplers_with_a_3x3_convolution_and_keeps_the_parameters():
    model = nn.ModuleDict({
        "conv": _upsampler(4),
        "no_conv": Upsample2D(4, use_conv=False),
        "transpose": Upsample2D(4, use_conv_transpose=True),
        "other": nn.Conv2d(4, 4, 3, padding=1),
    })
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    install_upsample_phases(model)
    assert type(model["conv"]) is PhaseUpsample2D
    assert [type(model[k]) for k in ("no_conv", "transpose", "other")] == [Upsample2D, Upsample2D, nn.Conv2d]
    assert model.state_dict().keys() == keys.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in keys.items())


def test_the_summed_kernels_are_kept_until_the_weight_changes(monkeypatch):
    up = _upsampler(4)
    install_upsample_phases(up).on = True
    sums = []
    monkeypatch.setattr(upsample_phases, "phase_kernels", lambda w: sums.append(1) or phase_kernels(w))
    x = torch.randn(1, 4, 4, 4)

    def matches_stock():
        return torch.allclose(up(x), Upsample2D.forward(up, x), atol=1e-5, rtol=0)

    with torch.no_grad():
        up(x)
        up(x)
        assert sums == [1]  # kept
        up.conv.weight.mul_(2)  # changed in place
        assert matches_stock() and sums == [1, 1]
        up.conv.weight = nn.Parameter(torch.randn_like(up.conv.weight), requires_grad=False)  # replaced
        assert matches_stock() and sums == [1, 1, 1]
        up.double().float()  # cast with the module (as .to() does)
        assert up._kernels is None
        assert matches_stock() and sums == [1, 1, 1, 1]
        up(x)
    assert sums == [1, 1, 1, 1]


def test_the_pipeline_upsamples_by_phases_only_in_a_fast_call_on_its_unet_and_vae_decoder(tiny_pipeline, inputs):
    """The UNet's upsamplers take the phases while denoising and the VAE decoder's while decoding, in
    a fast call only; the appearance encoder's never."""
    unets = [m for m in tiny_pipeline.unet.modules() if type(m) is PhaseUpsample2D]
    decoders = [m for m in tiny_pipeline.vae.decoder.modules() if type(m) is PhaseUpsample2D]
    assert unets and decoders and not any(type(m) is PhaseUpsample2D for m in tiny_pipeline.appearance_encoder.modules())
    assert not any(p.requires_grad for p in tiny_pipeline.vae.parameters())  # loaded for inference: the lever applies
    seen = {"unet": [], "vae": []}
    hooks = [m.register_forward_pre_hook(lambda m, a: seen["unet"].append(m.switch.on)) for m in unets]
    hooks += [m.register_forward_pre_hook(lambda m, a: seen["vae"].append(m.switch.on)) for m in decoders]
    try:
        for fast, on in ((False, False), (True, True), (FastPath(upsample_phases=False), False), (FastPath(shared_down=False), True)):
            tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="np", fast=fast)
            assert seen["unet"] and set(seen["unet"]) == {on}, fast
            assert seen["vae"] and set(seen["vae"]) == {on}, fast
            assert tiny_pipeline._upsample_phases.on is False and tiny_pipeline._decode_phases.on is False  # off after the call
            seen["unet"].clear()
            seen["vae"].clear()
    finally:
        for hook in hooks:
            hook.remove()


def test_the_vae_decoder_moves_the_frames_by_rounding_only(tiny_pipeline, inputs):
    """The same latents decoded in the same chunks with and without the decoder's phases: they do
    take part (the tiny VAE's upsamplers have 8×8 to 32×32 inputs), and move the frames by rounding only."""
    latents = tiny_pipeline(*inputs, num_inference_steps=1, seed=3, output_type="latent", fast=False).latents

    def decoded(on: bool) -> np.ndarray:
        tiny_pipeline._decode_phases.on = on
        try:
            with torch.no_grad():
                return tiny_pipeline._decode(latents, len(inputs[1]), "np", None, None, 2)
        finally:
            tiny_pipeline._decode_phases.on = False

    plain, phased = decoded(False), decoded(True)
    assert not np.array_equal(plain, phased)
    assert np.abs(plain - phased).max() < 1e-4


def test_the_tiny_pipeline_moves_by_rounding_only(tiny_pipeline, inputs):
    """The tiny UNet's upsampler on 4×4 latents takes the lever: the frames move by rounding only."""
    base = tiny_pipeline(*inputs, num_inference_steps=2, seed=3, output_type="np", fast=FastPath(upsample_phases=False))
    ours = tiny_pipeline(*inputs, num_inference_steps=2, seed=3, output_type="np", fast=True)
    assert not torch.equal(ours.latents, base.latents)
    assert torch.allclose(ours.latents, base.latents, atol=1e-4, rtol=0)
    assert np.abs(ours.frames - base.frames).max() < 1e-3
