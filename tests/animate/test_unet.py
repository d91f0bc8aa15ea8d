import pytest
import torch

from magicanimate_cli.animate import unet as unet_module
from magicanimate_cli.animate.unet import (
    FrameCount,
    FrameSharedLinear,
    FramewiseGroupNorm,
    OfficialLayoutLinear,
    WindowGroupNorm,
    build_unet,
    guided_forward,
    resnet_on_shared_skip,
)

from factories import unet_config

# Whether this process runs the AVX2 kernels the fixtures were made with: the assertions that
# show what an adapter replaces (a last-bit difference of another kernel) are made only there.
AVX2 = torch.backends.cpu.get_cpu_capability() == "AVX2"


def test_window_groupnorm_pools_frames_like_a_5d_groupnorm():
    torch.manual_seed(0)
    x5 = torch.randn(2, 32, 16, 4, 4)  # b c f h w, as the official UNet sees it
    reference = torch.nn.GroupNorm(8, 32)
    torch.nn.init.normal_(reference.weight)
    norm = WindowGroupNorm(8, 32)
    norm.load_state_dict(reference.state_dict())
    norm.frames = FrameCount()
    norm.frames.value = 16
    flat = x5.permute(0, 2, 1, 3, 4).reshape(32, 32, 4, 4)  # (b f) c h w, as diffusers sees it
    expected = reference(x5).permute(0, 2, 1, 3, 4).reshape(32, 32, 4, 4)
    assert torch.allclose(norm(flat), expected, atol=1e-6)
    # and it is not per-frame normalisation
    assert not torch.allclose(torch.nn.functional.group_norm(flat, 8, norm.weight, norm.bias), expected, atol=1e-3)


def test_framewise_groupnorm_normalises_each_frame_alone():
    torch.manual_seed(0)
    x5 = torch.randn(2, 32, 16, 4, 4)
    norm = FramewiseGroupNorm(32, 32)
    out = norm(x5)
    frame = x5[1, :, 5]
    expected = torch.nn.functional.group_norm(frame[None], 32, norm.weight, norm.bias, norm.eps)[0]
    assert torch.allclose(out[1, :, 5], expected, atol=1e-6)


def test_frame_shared_linear_is_the_official_one_row_projection_broadcast_over_frames():
    # Real size of a resnet's time_emb_proj (1280 -> 320), 2 guidance rows, a 16-frame window.
    torch.manual_seed(0)
    batch, frames = 2, 16
    official = torch.nn.Linear(1280, 320)  # the official projects each batch element's row once ...
    rows = torch.randn(batch, 1280)
    broadcast = official(rows)[:, None, :].expand(batch, frames, 320).reshape(batch * frames, 320)  # ... and broadcasts
    linear = FrameSharedLinear(1280, 320)
    linear.load_state_dict(official.state_dict())
    linear.frames = FrameCount()
    linear.frames.value = frames
    repeated = rows.repeat_interleave(frames, dim=0)  # what UNetMotionModel feeds: the row repeated per frame
    assert torch.equal(linear(repeated), broadcast)
    if AVX2:  # what the adapter replaces: one GEMM over the repeated rows rounds differently
        assert not torch.equal(official(repeated), broadcast)


def test_motion_proj_in_computes_on_the_official_layout():
    # The official TemporalTransformer3DModel projects the GroupNorm output seen as (b f) (h w) c;
    # diffusers hands proj_in a contiguous (b h w) f c tensor. Real size: 320 channels, 16x16 latents.
    torch.manual_seed(0)
    batch, frames, channels, side = 2, 16, 320, 16
    official = torch.nn.Linear(channels, channels)
    normed = torch.randn(batch * frames, channels, side, side)  # (b f) c h w
    expected = official(normed.permute(0, 2, 3, 1).reshape(batch * frames, side * side, channels))
    diffusers_layout = normed.reshape(batch, frames, channels, side * side).permute(0, 3, 1, 2)
    diffusers_layout = diffusers_layout.reshape(batch * side * side, frames, channels)
    linear = OfficialLayoutLinear(channels, channels)
    linear.load_state_dict(official.state_dict())
    linear.tokens = side * side
    out = linear(input=diffusers_layout)

    def official_layout(y):  # (b h w) f c -> (b f) (h w) c
        return y.reshape(batch, side * side, frames, -1).permute(0, 2, 1, 3).reshape(batch * frames, side * side, -1)

    assert out.shape == diffusers_layout.shape
    assert torch.equal(official_layout(out), expected)
    if AVX2:  # what the adapter replaces: one addmm over the contiguous rows rounds differently at this size
        assert not torch.equal(official_layout(official(diffusers_layout)), expected)


def test_motion_proj_in_learns_the_token_count_from_each_call(tiny_pipeline):
    unet = tiny_pipeline.unet  # two levels: 16x8 latents in down_blocks.0 / up_blocks.1, 8x4 in the others
    sample = torch.randn(1, 4, 3, 16, 8)
    text = torch.zeros(3, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        unet(sample, 10, encoder_hidden_states=text)
    tokens = {n: m.tokens for n, m in unet.named_modules() if isinstance(m, OfficialLayoutLinear)}
    assert len(tokens) == len(unet.down_blocks[0].motion_modules) * 2 + len(unet.up_blocks[0].motion_modules) * 2
    for name, count in tokens.items():
        full = name.startswith(("down_blocks.0.", f"up_blocks.{len(unet.up_blocks) - 1}."))
        assert count == (16 * 8 if full else 8 * 4), name


def test_adapters_are_installed_on_a_motion_unet(tiny_pipeline):
    unet = tiny_pipeline.unet
    kinds = {type(m).__name__ for m in unet.modules()}
    assert {"WindowGroupNorm", "FramewiseGroupNorm", "FrameSharedLinear", "OfficialLayoutLinear"} <= kinds
    motion_norms = [m for m in unet.modules() if isinstance(m, FramewiseGroupNorm)]
    assert motion_norms and all(m.num_groups == 32 for m in motion_norms)
    assert isinstance(unet.conv_norm_out, WindowGroupNorm)


def test_frame_counter_follows_the_call(tiny_pipeline):
    unet = tiny_pipeline.unet
    norm = next(m for m in unet.modules() if isinstance(m, WindowGroupNorm))
    sample = torch.randn(1, 4, 5, 8, 8)
    text = torch.zeros(5, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        unet(sample, 10, encoder_hidden_states=text)
    assert norm.frames.value == 5


def test_build_unet_is_strict(tiny_pipeline):
    state = dict(tiny_pipeline.unet.state_dict())
    state.pop(next(k for k in state if ".motion_modules." in k))
    with pytest.raises(RuntimeError):
        build_unet(unet_config(), state, 24)


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
    conv_part = unet_module._conv_part
    monkeypatch.setattr(unet_module, "_conv_part", lambda conv, x, *a, **k: parts.append(len(x)) or conv_part(conv, x, *a, **k))
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
    original = unet_module._conv_part
    monkeypatch.setattr(unet_module, "_conv_part", lambda conv, x, *a, **k: split.append(x.shape) or original(conv, x, *a, **k))
    with torch.no_grad():
        full = unet(sample.repeat(2, 1, 1, 1, 1), 300, encoder_hidden_states=text.repeat(2, 1, 1), return_dict=False)[0]
        assert not split
        shared = guided_forward(unet, sample, torch.tensor(300), text, None, None, halves=2, shared_skips=True)
    assert (5, 32, 8, 8) in split  # a skip's products on one half (5 frames, 32 channels, 8×8)
    assert torch.equal(shared[0], shared[1])
    assert torch.allclose(shared, full, atol=1e-5, rtol=0)
