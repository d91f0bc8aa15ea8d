"""The fast path's empty-prompt keys and values, projected once per call (``text_kv.py``)."""

from __future__ import annotations

import torch

from magicanimate_cli.animate.text_kv import SharedTextProcessor, TextKeysValues


def test_shared_text_processor_is_diffusers_attention_unless_it_may_share(tiny_pipeline):
    """Oracle: diffusers' AttnProcessor2_0. Bitwise without a cache or with rows that are not one
    broadcast row; the cached projection of one row moves the result by rounding only."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = tiny_pipeline.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn2")
    torch.manual_seed(2)
    hidden = torch.randn(6, 64, attn.to_q.in_features)
    text = torch.randn(1, 77, attn.to_k.in_features)
    cache = TextKeysValues()
    cache.modules.append(attn)
    processor = SharedTextProcessor(cache)
    with torch.no_grad():
        expected = AttnProcessor2_0()(attn, hidden, text.repeat(6, 1, 1))
        assert torch.equal(processor(attn, hidden, text.expand(6, -1, -1)), expected)  # nothing cached
        cache.project(text)
        assert torch.equal(processor(attn, hidden, text.repeat(6, 1, 1)), expected)  # rows not one broadcast row
        shared = processor(attn, hidden, text.expand(6, -1, -1))
        other = processor(attn, hidden, torch.randn(1, 77, text.shape[-1]).expand(6, -1, -1))
    assert torch.allclose(shared, expected, atol=1e-5, rtol=0)
    assert torch.equal(other, shared)  # it reads the call's cache, not the argument
    cache.clear()


def test_text_kv_cache_is_filled_only_during_a_fast_call(tiny_pipeline, inputs):
    seen = []
    original = SharedTextProcessor.__call__

    def spy(self, attn, *args, **kwargs):
        seen.append(id(attn) in self.cache.by_module)
        return original(self, attn, *args, **kwargs)

    SharedTextProcessor.__call__ = spy
    try:
        tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="latent")
        assert seen and not any(seen)  # the default path never reads it
        seen.clear()
        tiny_pipeline(*inputs, num_inference_steps=1, seed=0, output_type="latent", fast=True)
        assert seen and all(seen)  # every UNet and ControlNet cross-attention read it
    finally:
        SharedTextProcessor.__call__ = original
    assert not tiny_pipeline._text_kv.by_module  # emptied after the call
