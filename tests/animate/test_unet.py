import pytest
import torch

from magicanimate_cli.animate.unet import (
    FrameCount,
    FrameSharedLinear,
    FramewiseGroupNorm,
    OfficialLayoutLinear,
    WindowGroupNorm,
    build_unet,
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
