"""The fast path's UNet forward with work shared by the guidance halves (``shared_halves.py``)."""

import pytest
import torch

from magicanimate_cli.animate import shared_halves
from magicanimate_cli.animate.shared_halves import guided_forward, resnet_on_shared_skip
from magicanimate_cli.animate.unet import FrameCount, WindowGroupNorm


def _up_resnet(in_hidden: int, in_skip: int, out: int, groups: int, frames: FrameCount):
    """A resnet of an up block (input: hidden and skip channels concatenated) with the window GroupNorms
    (a ``conv_shortcut`` when its input and output widths differ, as in diffusers)."""
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(3)
    resnet = ResnetBlock2D(in_channels=in_hidden + in_skip, out_channels=out, temb_channels=12, groups=groups).eval()
    for norm in (resnet.norm1, resnet.norm2):
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
        norm.__class__ = WindowGroupNorm
        norm.frames = frames
    return resnet.requires_grad_(False)


@pytest.mark.parametrize(
    "hidden_channels, skip_channels, out, side",
    [
        (24, 24, 24, 8),  # the split on a group boundary
        (20, 28, 32, 8),  # a group across the split
        (32, 16, 16, 9),  # a group across it, two wholly in the skip, on 9×9
        (16, 16, 32, 8),  # no conv_shortcut (as many channels in as out)
    ],
)
def test_resnet_on_shared_skip_is_the_resnet_on_the_repeated_skip(hidden_channels, skip_channels, out, side, monkeypatch):
    """Oracle: the resnet on ``cat([hidden, skip repeated for both halves])``, as the UNet computes it;
    the same sums in another order (float64: equal to rounding; float32: close, not bitwise)."""
    frames = FrameCount()
    frames.value = 4
    resnet = _up_resnet(hidden_channels, skip_channels, out, groups=8, frames=frames)
    assert (resnet.conv_shortcut is None) == (hidden_channels + skip_channels == out)
    torch.manual_seed(4)
    hidden = torch.randn(2 * 4, hidden_channels, side, side)  # two halves of four frames
    skip = torch.randn(4, skip_channels, side, side)  # one half
    temb = torch.randn(2 * 4, 12)
    parts = []
    conv_part = shared_halves._conv_part
    monkeypatch.setattr(shared_halves, "_conv_part", lambda conv, x, *a, **k: parts.append(len(x)) or conv_part(conv, x, *a, **k))
    with torch.no_grad():
        expected = resnet(torch.cat([hidden, skip.repeat(2, 1, 1, 1)], dim=1), temb)
        ours = resnet_on_shared_skip(resnet, hidden, skip, temb, halves=2)
        assert sorted(parts)[:1] == [4]  # the skip's products ran on one half (4 rows)
        assert torch.allclose(ours, expected, atol=1e-5, rtol=0)
        resnet.double()
        args64 = hidden.double(), skip.double(), temb.double()
        expected64 = resnet(torch.cat([args64[0], args64[1].repeat(2, 1, 1, 1)], dim=1), args64[2])
        assert torch.allclose(resnet_on_shared_skip(resnet, *args64[:2], args64[2], halves=2), expected64, atol=1e-12, rtol=0)


def test_resnet_on_shared_skip_leaves_small_skips_and_skips_without_a_group_of_their_own_to_the_resnet():
    frames = FrameCount()
    frames.value = 4
    for hidden_channels, skip_channels, groups, side in [
        (16, 16, 8, 4),  # 4×4 < SHARED_SKIP_MIN_PIXELS
        (28, 4, 4, 8),  # groups of 8 channels: the skip lies inside the last one
    ]:
        resnet = _up_resnet(hidden_channels, skip_channels, 16, groups=groups, frames=frames)
        hidden = torch.randn(8, hidden_channels, side, side)
        skip = torch.randn(4, skip_channels, side, side)
        temb = torch.randn(8, 12)
        with torch.no_grad():
            expected = resnet(torch.cat([hidden, skip.repeat(2, 1, 1, 1)], dim=1), temb)
            assert torch.equal(resnet_on_shared_skip(resnet, hidden, skip, temb, halves=2), expected)


def test_guided_forward_with_shared_skips_moves_by_rounding_only(tiny_pipeline, monkeypatch):
    """With the reference bank empty both halves are one computation: sharing the skips leaves the
    two output halves identical and the result within rounding of the UNet's own forward."""
    unet = tiny_pipeline.unet
    torch.manual_seed(1)
    sample = torch.randn(1, 4, 5, 8, 8)
    text = torch.randn(5, 77, unet.config.cross_attention_dim)
    split = []
    original = shared_halves._conv_part
    monkeypatch.setattr(shared_halves, "_conv_part", lambda conv, x, *a, **k: split.append(x.shape) or original(conv, x, *a, **k))
    with torch.no_grad():
        full = unet(sample.repeat(2, 1, 1, 1, 1), 300, encoder_hidden_states=text.repeat(2, 1, 1), return_dict=False)[0]
        assert not split
        shared = guided_forward(unet, sample, torch.tensor(300), text, None, None, halves=2, shared_skips=True)
    assert (5, 32, 8, 8) in split  # a skip's products on one half (5 frames, 32 channels, 8×8)
    assert torch.equal(shared[0], shared[1])
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)
