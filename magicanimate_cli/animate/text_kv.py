"""Text keys and values projected once per call (a fast-path lever, ``FastPath.text_kv_once``).

Every cross-attention (``attn2``) of the denoising UNet and the ControlNet attends to the embedding
of the empty prompt, the same for every row, window and step (the appearance encoder keeps stock
attention: its float16-rounded features amplify any last-bit change). Stock
diffusers projects it through ``to_k``/``to_v`` once per row and call: 77 tokens per row, which at
small working sizes rivals the image tokens of the deep blocks (at 128², 4 image tokens per frame in
the mid block against 77 text tokens). ``TextKeysValues`` projects each module's keys and values
once per pipeline call; ``SharedTextProcessor`` uses them when the rows of its
``encoder_hidden_states`` are one row broadcast (stride 0, as the pipeline passes them) and the
cache is filled, and otherwise computes exactly what diffusers' ``AttnProcessor2_0`` computes.
One projection instead of one per row: the same mathematics with another matrix shape, so the
result moves by rounding only (within the parity contract, ``tests/animate/test_fastpath.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0


class TextKeysValues:
    """Each cross-attention module's projected text keys and values (one row), for one call."""

    def __init__(self) -> None:
        self.by_module: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.modules: list[torch.nn.Module] = []

    def project(self, text: torch.Tensor) -> None:
        """Project ``text`` (``1×77×d``) through every registered module's ``to_k``/``to_v``."""
        for attn in self.modules:
            self.by_module[id(attn)] = (attn.to_k(text), attn.to_v(text))

    def clear(self) -> None:
        self.by_module.clear()


def _plain_cross_attention(attn) -> bool:
    """The attention features ``SharedTextProcessor`` implements (those of SD1.5's ``attn2``)."""
    return (
        attn.spatial_norm is None and attn.group_norm is None and not attn.norm_cross
        and attn.norm_q is None and attn.norm_k is None and not attn.residual_connection
    )


class SharedTextProcessor(AttnProcessor2_0):
    """``AttnProcessor2_0`` that reads the call's cached text keys and values when it may."""

    def __init__(self, cache: TextKeysValues) -> None:
        super().__init__()
        self.cache = cache

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        kv = self.cache.by_module.get(id(attn))
        if (
            kv is None or encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3
            or encoder_hidden_states.stride(0) != 0 or not _plain_cross_attention(attn)
        ):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch, heads = hidden_states.shape[0], attn.heads
        key, value = kv

        def split(x: torch.Tensor, rows: int) -> torch.Tensor:  # b n (h d) -> b h n d
            return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2).expand(rows, -1, -1, -1)

        query = split(attn.to_q(hidden_states), batch)
        out = F.scaled_dot_product_attention(query, split(key, batch), split(value, batch))
        out = out.transpose(1, 2).reshape(batch, -1, query.shape[1] * query.shape[3]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def install_shared_text(*models: torch.nn.Module) -> TextKeysValues:
    """Give every spatial cross-attention of ``models`` a ``SharedTextProcessor`` on one cache."""
    cache = TextKeysValues()
    for model in models:
        for name, module in model.named_modules():
            if name.endswith(".attn2") and ".motion_modules." not in name and getattr(module, "is_cross_attention", False):
                module.set_processor(SharedTextProcessor(cache))
                cache.modules.append(module)
    return cache
