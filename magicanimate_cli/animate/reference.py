"""Reference attention: the appearance encoder's features fed to the denoising UNet.

MagicAnimate conditions the denoising UNet on the reference image through its self-attention
(the paper's "appearance encoder", a reference-only style control):

* the appearance encoder (a UNet2D) runs on the clean reference latents; in each spatial
  ``BasicTransformerBlock`` of its mid and up blocks we record the input of ``attn1``, which is
  the block's ``norm1`` output (the *bank*);
* in the same blocks of the denoising UNet, ``attn1`` of the conditional guidance half attends
  over ``[own tokens ; reference tokens]``, keys and values both projected by the denoising UNet's
  own ``to_k``/``to_v``; the unconditional half keeps plain self-attention.

Both sides are diffusers attention processors, so the stock blocks run unchanged.

Numerics kept from the official implementation (``official-inference.md`` §4, §14.2): the banked
features are rounded through float16 even in a float32 run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

# Only the spatial transformer blocks of the mid and up blocks take part ("midup" fusion).
_FUSION_PREFIXES = ("mid_block.attentions.", "up_blocks.")


def fusion_attn1_names(model: torch.nn.Module) -> list[str]:
    """Names (``...attn1``) of the spatial self-attention modules that share reference features.

    Motion modules also contain ``attn1`` modules; they are temporal and never take part.
    """
    names = []
    for name, _ in model.named_modules():
        if not name.endswith(".attn1") or ".motion_modules." in name:
            continue
        if name.startswith(_FUSION_PREFIXES) and ".attentions." in name:
            names.append(name)
    return names


class ReferenceBank:
    """The reference features of one denoising step, keyed by block name (one row each)."""

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.features.clear()


def _attention(attn, query_states: torch.Tensor, kv_states: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of ``attn`` (a diffusers ``Attention``) without its output projection."""
    batch = query_states.shape[0]
    query = attn.to_q(query_states)
    key = attn.to_k(kv_states)
    value = attn.to_v(kv_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def _project_out(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    return hidden_states / attn.rescale_output_factor


class ReferenceWriterProcessor:
    """On the appearance encoder: store the ``attn1`` input, then run plain self-attention."""

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name
        self.plain = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        # The official bank is rounded through float16 whatever the run dtype (§14.2). The
        # encoder runs on two identical rows as the official does (its guidance batch); the
        # conditional half reads the second row, which is not always bitwise equal to the first.
        self.bank.features[self.name] = hidden_states[-1:].to(torch.float16).to(hidden_states.dtype)
        return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReaderProcessor:
    """On the denoising UNet: the guided rows attend over ``[own tokens ; reference tokens]``.

    ``cond_start`` is the first row of the batch that receives the reference (rows are
    ``(guidance half, frame)``; with classifier-free guidance the second half, otherwise 0).
    """

    def __init__(self, bank: ReferenceBank, name: str) -> None:
        self.bank = bank
        self.name = name
        self.cond_start = 0
        self.plain = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        reference = self.bank.features.get(self.name)
        if reference is None:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        start = self.cond_start
        cond = hidden_states[start:]
        reference = reference.to(cond.dtype).expand(cond.shape[0], -1, -1)
        guided = _attention(attn, cond, torch.cat([cond, reference], dim=1))
        if start == 0:
            return _project_out(attn, guided)
        plain = _attention(attn, hidden_states[:start], hidden_states[:start])
        return _project_out(attn, torch.cat([plain, guided], dim=0))


def install_reference_attention(
    appearance_encoder: torch.nn.Module, unet: torch.nn.Module
) -> tuple[ReferenceBank, list[ReferenceReaderProcessor]]:
    """Install writer processors on the appearance encoder and readers on the UNet.

    Returns the shared bank and the reader processors (their ``cond_start`` is set per call).
    """
    writer_names = fusion_attn1_names(appearance_encoder)
    reader_names = fusion_attn1_names(unet)
    if writer_names != reader_names:
        raise ValueError(
            "appearance encoder and UNet do not have the same mid/up attention blocks: "
            f"{len(writer_names)} vs {len(reader_names)}"
        )
    bank = ReferenceBank()
    readers = []
    for name in writer_names:
        appearance_encoder.get_submodule(name).set_processor(ReferenceWriterProcessor(bank, name))
        reader = ReferenceReaderProcessor(bank, name)
        unet.get_submodule(name).set_processor(reader)
        readers.append(reader)
    return bank, readers
