import torch
from transformers import CLIPTextModel

from magicanimate_cli.animate import text

from factories import clip_text_config


def test_classic_attention_matches_stock_clip_and_is_causal():
    config = clip_text_config()
    torch.manual_seed(0)
    stock = CLIPTextModel(config).eval()
    classic = CLIPTextModel(config).eval()
    classic.load_state_dict(stock.state_dict())
    classic.set_attn_implementation(text.register())
    ids = torch.randint(0, 98, (2, 16))
    with torch.no_grad():
        a, b = stock(ids)[0], classic(ids)[0]
        assert torch.allclose(a, b, atol=1e-5)
        changed = ids.clone()
        changed[:, -1] = 99
        c = classic(changed)[0]
    assert torch.equal(c[:, :-1], b[:, :-1])  # a later token never reaches earlier ones
    assert not torch.allclose(c[:, -1], b[:, -1])
