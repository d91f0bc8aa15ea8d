import pytest
import torch
from factories import unet_config

from magicanimate_cli.animate.unet import (
    FrameCount,
    FrameSharedLinear,
    FramewiseGroupNorm,
    WindowGroupNorm,
    build_unet,
)

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


def test_adapters_are_installed_on_a_motion_unet(tiny_pipeline):
    unet = tiny_pipeline.unet
    kinds = {type(m).__name__ for m in unet.modules()}
    assert {"WindowGroupNorm", "FramewiseGroupNorm", "FrameSharedLinear"} <= kinds
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
