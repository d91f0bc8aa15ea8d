import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from magicanimate_cli.animate.reference import (
    ReferenceBank,
    ReferenceReaderProcessor,
    ReferenceWriterProcessor,
    fusion_attn1_names,
)

from factories import tiny_attention


def test_writer_stores_the_attn1_input_rounded_through_float16_and_attends_normally():
    attn, bank = tiny_attention(), ReferenceBank()
    x = torch.randn(2, 5, 16)
    out = ReferenceWriterProcessor(bank, "b")(attn, x)
    assert torch.equal(out, AttnProcessor2_0()(attn, x))
    assert torch.equal(bank.features["b"], x[1:].half().float())
    assert not torch.equal(bank.features["b"], x[1:])


def test_reader_guided_rows_attend_over_own_and_reference_tokens():
    attn, bank = tiny_attention(), ReferenceBank()
    reader = ReferenceReaderProcessor(bank, "b")
    x = torch.randn(6, 5, 16)  # 3 unconditional frames, 3 conditional frames
    reference = torch.randn(1, 5, 16)
    bank.features["b"] = reference
    reader.cond_start = 3
    out = reader(attn, x)
    plain = AttnProcessor2_0()(attn, x)
    assert torch.allclose(out[:3], plain[:3], atol=1e-6)  # unconditional half: no reference
    expected = AttnProcessor2_0()(attn, x[3:], encoder_hidden_states=torch.cat([x[3:], reference.expand(3, -1, -1)], 1))
    assert torch.allclose(out[3:], expected, atol=1e-6)
    assert not torch.allclose(out[3:], plain[3:], atol=1e-3)


def test_reader_without_guidance_gives_every_row_the_reference():
    attn, bank = tiny_attention(), ReferenceBank()
    reader = ReferenceReaderProcessor(bank, "b")
    bank.features["b"] = torch.randn(1, 5, 16)
    x = torch.randn(2, 5, 16)
    reader.cond_start = 0
    out = reader(attn, x)
    assert not torch.allclose(out, AttnProcessor2_0()(attn, x), atol=1e-3)


def test_empty_bank_is_plain_self_attention():
    attn = tiny_attention()
    x = torch.randn(4, 5, 16)
    assert torch.equal(ReferenceReaderProcessor(ReferenceBank(), "b")(attn, x), AttnProcessor2_0()(attn, x))


def test_fusion_blocks_are_mid_and_up_spatial_attentions_only(tiny_pipeline):
    names = fusion_attn1_names(tiny_pipeline.unet)
    assert names and all(n.startswith(("mid_block.", "up_blocks.")) for n in names)
    assert not any("motion_modules" in n for n in names)
    assert names == fusion_attn1_names(tiny_pipeline.appearance_encoder)
    # tiny UNet: mid (1) + the cross-attention up block (3 layers)
    assert len(names) == 1 + 3
