"""Fast path: the UNet forward with work shared by the two guidance halves (``FastPath.shared_down``,
``FastPath.shared_skips``).

Both halves of classifier-free guidance see the same latents, the same empty-prompt embedding and
the same ControlNet residuals until the reference features enter at the mid block's attention.
``guided_forward`` runs the down path and the mid block's first resnet once and repeats the
activations there (bitwise the full batch's rows); with ``shared_skips`` the up blocks' resnets
also compute the skip connection's share once for both halves (``resnet_on_shared_skip``; the same
sums in another order, within the parity contract). The official adapters themselves are in
``unet.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import WindowGroupNorm, window_group_norm


def guided_forward(
    unet: nn.Module, sample, timestep, encoder_hidden_states, down_residuals, mid_residual, halves: int, shared_skips: bool = False
):
    """``UNetMotionModel.forward`` with the down path run once for both guidance halves (fast path).

    Both halves of classifier-free guidance enter the UNet with the same latents, the same
    text embedding and the same ControlNet residuals, and the reference features only enter at
    the mid block's attention: so ``sample`` (``1×c×f×h×w``), ``encoder_hidden_states`` (``f``
    rows) and the residuals (``f`` rows) are the single half, the down path and the mid block's
    first resnet run on it, and the activations are repeated ``halves`` times just before the mid
    block's attention. Every operation there is row-wise, and the per-batch projections (time
    embedding, resnet ``time_emb_proj``) run on ``halves`` rows as in the full batch
    (``FrameCount.rows``). ``down_residuals``, a list the caller hands over, is emptied once added
    to the skips.

    ``shared_skips``: the up path's skip connections stay single too, and where they are at least
    ``SHARED_SKIP_MIN_PIXELS`` large the resnets that take them compute the skip's share of their
    first convolution and shortcut once for all halves (``resnet_on_shared_skip``).
    """
    frames = unet.frame_count
    num_frames = sample.shape[2]
    frames.value, frames.rows = num_frames, halves
    up_factor = 2**unet.num_upsamplers
    forward_upsample_size = any(s % up_factor != 0 for s in sample.shape[-2:])
    upsample_size = None

    timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
    # the time embedding of every half (as the full batch computes it), then the single half's
    timesteps = timesteps.reshape(-1)[:1].to(sample.device).expand(sample.shape[0] * halves)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))[: sample.shape[0]]
    emb = emb.repeat_interleave(num_frames, dim=0)

    hidden = sample.permute(0, 2, 1, 3, 4).reshape((sample.shape[0] * num_frames, -1) + sample.shape[3:])
    hidden = unet.conv_in(hidden)
    res_samples = (hidden,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, res = block(hidden_states=hidden, temb=emb, encoder_hidden_states=encoder_hidden_states, num_frames=num_frames)
        else:
            hidden, res = block(hidden_states=hidden, temb=emb, num_frames=num_frames)
        res_samples += res
    if down_residuals is not None:
        res_samples = tuple(r + d for r, d in zip(res_samples, down_residuals))
        down_residuals.clear()  # handed over by the caller: free for the mid and up blocks
    mid = unet.mid_block
    if mid is not None:
        hidden = mid.resnets[0](input_tensor=hidden, temb=emb)  # before the first reference attention

    def both(x: torch.Tensor) -> torch.Tensor:  # one half -> every half, in guidance-half order
        return _both(x, halves)

    if encoder_hidden_states.stride(0) == 0:  # one row broadcast: keep it so (text_kv.SharedTextProcessor)
        encoder_hidden_states = encoder_hidden_states[:1].expand(halves * encoder_hidden_states.shape[0], -1, -1)
    else:
        encoder_hidden_states = both(encoder_hidden_states)
    hidden, emb = both(hidden), both(emb)
    shared_skips = shared_skips and halves > 1
    if not shared_skips:
        res_samples = tuple(both(r) for r in res_samples)
    if mid is not None:
        hidden = _mid_block_after_first_resnet(mid, hidden, emb, encoder_hidden_states, num_frames)
    if mid_residual is not None:
        hidden = hidden + both(mid_residual)

    for i, block in enumerate(unet.up_blocks):
        res = res_samples[-len(block.resnets) :]
        res_samples = res_samples[: -len(block.resnets)]
        if i < len(unet.up_blocks) - 1 and forward_upsample_size:
            upsample_size = res_samples[-1].shape[2:]
        if shared_skips:
            hidden = _up_block_on_shared_skips(block, hidden, res, emb, encoder_hidden_states, upsample_size, num_frames, halves)
            continue
        kwargs = {"hidden_states": hidden, "temb": emb, "res_hidden_states_tuple": res, "upsample_size": upsample_size, "num_frames": num_frames}
        if getattr(block, "has_cross_attention", False):
            kwargs["encoder_hidden_states"] = encoder_hidden_states
        hidden = block(**kwargs)

    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    hidden = unet.conv_out(hidden)
    return hidden[None, :].reshape((-1, num_frames) + hidden.shape[1:]).permute(0, 2, 1, 3, 4)


def _both(x: torch.Tensor, halves: int) -> torch.Tensor:
    return x.repeat(halves, *([1] * (x.dim() - 1))) if halves > 1 else x


def _mid_block_after_first_resnet(mid: nn.Module, hidden, emb, encoder_hidden_states, num_frames: int):
    """The rest of diffusers' ``UNetMidBlock2DCrossAttn`` / ``UNetMidBlockCrossAttnMotion`` forward:
    attention, motion module (if any), resnet."""
    motions = getattr(mid, "motion_modules", None) or [None] * len(mid.attentions)
    for attn, motion, resnet in zip(mid.attentions, motions, mid.resnets[1:]):
        hidden = attn(hidden_states=hidden, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        if motion is not None:
            hidden = motion(hidden, None, None, None, num_frames, None)
        hidden = resnet(input_tensor=hidden, temb=emb)
    return hidden


SHARED_SKIP_MIN_PIXELS = 64
"""The smallest skip image (height × width) whose share of a resnet is computed once for all guidance
halves. On the real model's up-block resnets (``benchmarks/up_path_levers.py --all-shapes``, 128²,
32 rows, 2 CPU threads) it made them 1.08-1.27× faster on 8×8 and 16×16 skips; on 4×4 1.05-1.22×
in the recorded run but 0.89-1.04× in an earlier one (no clear gain), on 2×2 0.80-0.88× in both (two
convolutions on slices of the weight instead of one)."""


def _up_block_on_shared_skips(block: nn.Module, hidden, skips, emb, encoder_hidden_states, upsample_size, num_frames: int, halves: int):
    """diffusers' ``UpBlockMotion`` / ``CrossAttnUpBlockMotion`` forward with single-half ``skips``."""
    if any(getattr(block, name, None) for name in ("s1", "s2", "b1", "b2")):  # FreeU rescales the skips
        kwargs = {"encoder_hidden_states": encoder_hidden_states} if getattr(block, "has_cross_attention", False) else {}
        return block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=tuple(_both(s, halves) for s in skips),
                     upsample_size=upsample_size, num_frames=num_frames, **kwargs)
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for resnet, attn, motion, skip in zip(block.resnets, attentions, block.motion_modules, reversed(skips)):
        hidden = resnet_on_shared_skip(resnet, hidden, skip, emb, halves)
        if attn is not None:
            hidden = attn(hidden_states=hidden, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        hidden = motion(hidden, num_frames=num_frames)
    for upsampler in block.upsamplers or ():
        hidden = upsampler(hidden_states=hidden, output_size=upsample_size)
    return hidden


def _conv_part(conv: nn.Conv2d, x: torch.Tensor, start: int, stop: int | None, bias: bool) -> torch.Tensor:
    return F.conv2d(x, conv.weight[:, start:stop], conv.bias if bias else None, conv.stride, conv.padding, conv.dilation)


def _splits(resnet: nn.Module) -> bool:
    plain = lambda conv: conv.groups == 1 and conv.padding_mode == "zeros"  # noqa: E731
    return (
        isinstance(resnet.norm1, WindowGroupNorm) and resnet.norm1.affine and resnet.time_emb_proj is not None
        and resnet.upsample is None and resnet.downsample is None
        and resnet.time_embedding_norm == "default" and plain(resnet.conv1)
        and (resnet.conv_shortcut is None or plain(resnet.conv_shortcut))
    )


def resnet_on_shared_skip(resnet: nn.Module, hidden: torch.Tensor, skip: torch.Tensor, temb, halves: int) -> torch.Tensor:
    """``resnet(cat([hidden, skip repeated for every half]), temb)`` with the skip's share done once.

    ``hidden`` has every half's rows, ``skip`` one half's. The resnet's first GroupNorm normalises
    each group of channels on its own, so the groups that lie wholly in the skip are the same in
    every half; so are the products of their channels in ``conv1`` and of the skip's channels in
    the 1×1 ``conv_shortcut``. Those run on one half and are added to every half's products of the
    other channels. The same sums in another order: within the parity contract, not bitwise.
    """
    norm = resnet.norm1
    size = norm.num_channels // norm.num_groups
    channels = hidden.shape[1]
    first = -(-channels // size) * size  # the first channel of the first group wholly in the skip
    if skip.shape[2] * skip.shape[3] < SHARED_SKIP_MIN_PIXELS or first >= norm.num_channels or not _splits(resnet):
        return resnet(input_tensor=torch.cat([hidden, _both(skip, halves)], dim=1), temb=temb)
    frames, groups = norm.frames.value, first // size
    mixed = torch.cat([hidden, _both(skip[:, : first - channels], halves)], dim=1) if first > channels else hidden
    mixed = window_group_norm(mixed, frames, groups, norm.weight[:first], norm.bias[:first], norm.eps)
    own = window_group_norm(skip[:, first - channels :], frames, norm.num_groups - groups, norm.weight[first:], norm.bias[first:], norm.eps)
    out = _conv_part(resnet.conv1, resnet.nonlinearity(mixed), 0, first, bias=True)
    out.view(halves, -1, *out.shape[1:]).add_(_conv_part(resnet.conv1, resnet.nonlinearity(own), first, None, bias=False))

    t = temb if resnet.skip_time_act else resnet.nonlinearity(temb)
    out = out + resnet.time_emb_proj(t)[:, :, None, None]
    out = resnet.conv2(resnet.dropout(resnet.nonlinearity(resnet.norm2(out))))

    if resnet.conv_shortcut is None:
        shortcut = torch.cat([hidden, _both(skip, halves)], dim=1)
    else:
        shortcut = _conv_part(resnet.conv_shortcut, hidden, 0, channels, bias=True)
        shortcut.view(halves, -1, *shortcut.shape[1:]).add_(_conv_part(resnet.conv_shortcut, skip, channels, None, bias=False))
    return (shortcut + out) / resnet.output_scale_factor
