"""The denoising UNet: diffusers' ``UNetMotionModel`` plus named adapters where the official
numerics differ (two GroupNorm scopes, below; the linear layers ``FrameSharedLinear``,
``PairedLinear`` and ``OfficialLayoutLinear``, each documented where it is defined).

The official MagicAnimate UNet is the AnimateDiff-v1 ``UNet3DConditionModel``. diffusers'
``UNetMotionModel`` has the same modules and parameter names, but two GroupNorm scopes differ
(``official-inference.md`` §3.2, §3.4, §14.8):

``WindowGroupNorm``
    The resnets (``norm1``/``norm2``, also in the mid block) and ``conv_norm_out`` normalise
    jointly over all frames of the window (the official applies ``nn.GroupNorm`` to the 5-D
    ``b c f h w`` tensor). ``UNetMotionModel`` runs them on ``(b f) c h w``, i.e. per frame.

``FramewiseGroupNorm``
    The motion modules' input GroupNorm normalises each frame separately with 32 groups in the
    official code (its ``norm_num_groups`` is hard-coded); diffusers' ``AnimateDiffTransformer3D``
    applies it to ``b c f h w``, i.e. across frames, with the UNet's group count.

``FrameSharedLinear``
    The resnets' ``time_emb_proj`` runs once per batch element and is broadcast over the frames in
    the official code; ``UNetMotionModel`` repeats the time embedding per frame first. A matrix
    product over 16 identical rows is not bitwise equal to one over a single row, so the adapter
    projects one row per batch element and repeats the result.

``OfficialLayoutLinear``
    The motion modules' ``proj_in``. The official applies it to ``(b f) (h w) c``, a permuted view
    of the GroupNorm output whose channel stride is ``h*w``; torch cannot fold that view into one
    matrix, so it runs one GEMM per frame on a column-major operand and adds the bias afterwards.
    ``AnimateDiffTransformer3D`` feeds a contiguous ``(b h w) f c`` tensor, which is one ``addmm``.
    At real channel counts (320-1280) the two kernels round differently (about 5e-7 at the first
    motion module, 2.6e-6 at the UNet output); the adapter computes on the official layout.

The adapters subclass the modules they replace and keep their parameters, so state-dict keys are
unchanged. With them the UNet reproduces the official forward bitwise on the same CPU kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameCount:
    """The number of frames of the current UNet call, shared by the window GroupNorms.

    ``rows`` is the number of batch rows the per-batch projections run on: 2 when the down path
    runs once for both guidance halves (``guided_forward``), so that the projection of the one
    real row is the same matrix product as in the two-row batch (a one-row product is a
    matrix-vector kernel that rounds differently).
    """

    value: int = 1
    rows: int = 1


class WindowGroupNorm(nn.GroupNorm):
    """GroupNorm over ``(b f) c h w`` whose statistics pool over the ``f`` frames of a window."""

    frames: FrameCount

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_group_norm(x, self.frames.value, self.num_groups, self.weight, self.bias, self.eps)


def window_group_norm(x: torch.Tensor, frames: int, groups: int, weight, bias, eps: float) -> torch.Tensor:
    """``WindowGroupNorm``'s computation on ``groups`` groups with the given affine parameters."""
    bf, c, h, w = x.shape
    y = x.reshape(bf // frames, frames, c, h * w).transpose(1, 2)
    y = F.group_norm(y, groups, weight, bias, eps)
    return y.transpose(1, 2).reshape(bf, c, h, w)


MOTION_NORM_GROUPS = 32


class FramewiseGroupNorm(nn.GroupNorm):
    """GroupNorm over ``b c f h w`` that normalises every frame on its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * f, c, h, w)
        y = F.group_norm(y, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(b, f, c, h, w).transpose(1, 2)


class FrameSharedLinear(nn.Linear):
    """Linear over ``(b f) c`` rows that repeat per frame: computed once per ``b`` and repeated."""

    frames: FrameCount

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames.value
        rows = x[::frames]
        if rows.shape[0] < self.frames.rows:
            padded = rows.repeat(self.frames.rows // rows.shape[0], 1)
            return super().forward(padded)[: rows.shape[0]].repeat_interleave(frames, dim=0)
        return super().forward(rows).repeat_interleave(frames, dim=0)


class PairedLinear(nn.Linear):
    """Linear that computes a single row as the first of two identical rows.

    The official code runs the appearance encoder on two identical rows; on one row, the time
    projections would become matrix-vector products, which round differently. With this adapter
    the time projections of one row are bitwise those of two; the convolutions still pick other
    kernels at batch 1, so the one-row encoder (``FastPath.appearance_one_row``) is within the parity
    contract, not bitwise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] == 1:
            return super().forward(x.repeat(2, 1))[:1]
        return super().forward(x)


def pair_time_projections(model: nn.Module) -> None:
    """Give a ``UNet2DConditionModel`` (the appearance encoder) ``PairedLinear`` time projections."""
    from diffusers.models.resnet import ResnetBlock2D

    linears = [model.time_embedding.linear_1, model.time_embedding.linear_2]
    linears += [m.time_emb_proj for m in model.modules() if isinstance(m, ResnetBlock2D) and m.time_emb_proj is not None]
    for linear in linears:
        if type(linear) is nn.Linear:
            _swap_class(linear, PairedLinear)


class OfficialLayoutLinear(nn.Linear):
    """Linear over ``(b h w) f c`` rows computed as the official computes it on ``(b f) (h w) c``.

    ``tokens`` (``h*w``) is set by a forward pre-hook of the motion module before each call.
    """

    tokens: int = 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # diffusers passes ``input=``
        bhw, frames, channels = input.shape
        hw = self.tokens
        batch = bhw // hw
        # the official operand: the (b f) c (h w) memory, seen as (b f) (h w) c
        official = input.reshape(batch, hw, frames, channels).permute(0, 2, 3, 1).contiguous()
        official = official.reshape(batch * frames, channels, hw).transpose(1, 2)
        out = super().forward(official)
        return out.reshape(batch, frames, hw, -1).permute(0, 2, 1, 3).reshape(bhw, frames, -1)


def _record_tokens(module, args, kwargs) -> None:
    hidden_states = args[0] if args else kwargs["hidden_states"]
    module.proj_in.tokens = hidden_states.shape[2] * hidden_states.shape[3]


def _swap_class(module: nn.Module, cls: type) -> nn.Module:
    module.__class__ = cls
    return module


def swap_classes(models, qualifies, cls: type, **attributes) -> None:
    """Make every module of ``models`` for which ``qualifies(module)`` holds a ``cls`` (a subclass of
    its class: parameters and state-dict keys are unchanged) and give it ``attributes``; how the
    switched levers install themselves (``side_by_side.py``, ``upsample_phases.py``,
    ``pose_embedding.py``)."""
    for model in models:
        for module in model.modules():
            if qualifies(module):
                _swap_class(module, cls)
                for name, value in attributes.items():
                    setattr(module, name, value)


def apply_official_groupnorms(unet: nn.Module) -> FrameCount:
    """Give a ``UNetMotionModel`` the official GroupNorm scopes and motion ``proj_in`` (in place).

    Returns the shared frame counter; a forward pre-hook on ``unet`` keeps it equal to the
    number of frames of each call.
    """
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    frames = FrameCount()
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            for norm in (module.norm1, module.norm2):
                _swap_class(norm, WindowGroupNorm).frames = frames
            if module.time_emb_proj is not None:
                _swap_class(module.time_emb_proj, FrameSharedLinear).frames = frames
        elif isinstance(module, AnimateDiffTransformer3D):
            _swap_class(module.norm, FramewiseGroupNorm).num_groups = MOTION_NORM_GROUPS
            _swap_class(module.proj_in, OfficialLayoutLinear)
            module.register_forward_pre_hook(_record_tokens, with_kwargs=True)
    if unet.conv_norm_out is not None:
        _swap_class(unet.conv_norm_out, WindowGroupNorm).frames = frames

    def _count_frames(_module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        frames.value = sample.shape[2]
        frames.rows = 1

    unet.register_forward_pre_hook(_count_frames, with_kwargs=True)
    unet.frame_count = frames
    return frames


def use_classic_temporal_attention(unet: nn.Module) -> None:
    """Temporal attention as the official computes it: ``baddbmm`` + softmax + ``bmm``.

    The official motion modules never use xformers/SDPA (§3.3, §14.8); diffusers' classic
    ``AttnProcessor`` is that computation. The sequences are only one window long, so it costs
    nothing measurable.
    """
    from diffusers.models.attention_processor import AttnProcessor

    from .reference import protect_attention

    for name, module in unet.named_modules():
        if ".motion_modules." in name and hasattr(module, "set_processor"):
            module.set_processor(AttnProcessor())
            protect_attention(module, AttnProcessor)


def make_official(unet: nn.Module) -> nn.Module:
    """Apply the official GroupNorm scopes and temporal attention to a stock ``UNetMotionModel``
    (one loaded with ``from_pretrained``); a UNet that has them already is left as it is."""
    if getattr(unet, "frame_count", None) is None:
        apply_official_groupnorms(unet)
        use_classic_temporal_attention(unet)
    return unet


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


def motion_adapter_config(unet_config: dict, max_seq_length: int) -> dict:
    """MotionAdapter settings of MagicAnimate's motion modules (``inference.yaml``)."""
    return {
        "block_out_channels": tuple(unet_config["block_out_channels"]),
        "motion_layers_per_block": unet_config["layers_per_block"],
        "motion_num_attention_heads": 8,
        "motion_norm_num_groups": MOTION_NORM_GROUPS,
        "motion_max_seq_length": max_seq_length,
        "use_motion_mid_block": False,
    }


def build_unet(unet_config: dict, state_dict: dict[str, torch.Tensor], max_seq_length: int) -> nn.Module:
    """Build the denoising UNet from an SD ``unet/config.json`` and a complete state dict.

    The model is created on the meta device and takes the tensors of ``state_dict`` as they are
    (strict: every key must be present and nothing may be left over).
    """
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    config = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet2d = UNet2DConditionModel.from_config(config)
        adapter = MotionAdapter(**motion_adapter_config(unet_config, max_seq_length))
        unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)
    unet.load_state_dict(state_dict, strict=True, assign=True)
    apply_official_groupnorms(unet)
    use_classic_temporal_attention(unet)
    return unet.eval().requires_grad_(False)
