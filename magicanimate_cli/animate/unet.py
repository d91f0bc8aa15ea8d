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
