"""The CLIP text encoder with the attention arithmetic of the official stack.

The animator only ever encodes the empty prompt, but that embedding feeds every model, and the
appearance features are rounded through float16 (§14.2): a last-bit difference in the text
embedding flips some of those roundings and moves the result far more than its size. Current
transformers computes CLIP attention as ``(q @ kᵀ) * scale``; the transformers release the official
code pinned (4.32) computed ``(q * scale) @ kᵀ`` with ``bmm`` and an additive causal mask.
``classic_clip_attention`` is that computation, registered through transformers'
``AttentionInterface`` under the name ``"magicanimate_classic"``.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_NAME = "magicanimate_classic"


def classic_clip_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention in the order of transformers 4.32: scale q, bmm, add mask, softmax, bmm."""
    batch, heads, length, dim = query.shape
    q = (query * scaling).reshape(batch * heads, length, dim)
    k = key.reshape(batch * heads, -1, dim)
    weights = torch.bmm(q, k.transpose(1, 2))
    if attention_mask is None and kwargs.get("is_causal", getattr(module, "is_causal", False)):
        attention_mask = torch.full((length, k.shape[1]), torch.finfo(weights.dtype).min, dtype=weights.dtype)
        attention_mask = attention_mask.to(weights.device).triu(1)
    if attention_mask is not None:
        weights = (weights.view(batch, heads, length, -1) + attention_mask).view(batch * heads, length, -1)
    probs = nn.functional.softmax(weights, dim=-1)
    out = torch.bmm(probs, value.reshape(batch * heads, -1, dim))
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, classic_clip_attention)
    return ATTENTION_NAME
