"""Tiny random-weight models saved in the official MagicAnimate on-disk layout.

The one place where tests (and the benchmarks) build models. ``make_official_weights`` writes a
folder that the real loader reads exactly as it reads the published weights, at the tests' tiny
sizes or (``size=SD15``) at the published ones::

    stable-diffusion-v1-5/{tokenizer, text_encoder, unet/config.json[, unet weights]}
    sd-vae-ft-mse/, MagicAnimate/{appearance_encoder, densepose_controlnet,
    temporal_attention/temporal_attention.ckpt}

Layers that diffusers zero-initialises (ControlNet zero convs, motion ``proj_out``) are
re-randomised and norms perturbed, so a dropped or mis-mapped tensor changes the output.

The other stages' models are here too: a PaddleSeg matting checkpoint (``paddleseg_checkpoint``),
detectron2 DensePose weights that find a person (``detectron2_person_weights``), the metric
networks' stand-ins (``tiny_frame_net``, ``tiny_clip_net``), a small CLIP text configuration
(``clip_text_config``) and one small diffusers attention layer (``tiny_attention``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch

SD = "stable-diffusion-v1-5"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-to-unicode table, as CLIP's BPE vocabulary uses it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, [chr(c) for c in chars]))


def write_tokenizer(folder: Path) -> int:
    """A byte-level CLIP tokenizer (no merges). Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"})
    )
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))  # CLIPTokenizer's defaults, as SD1.5 ships them
    return len(vocab)


def _perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Re-randomise zero-initialised weights and move norms away from identity."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.abs().sum() == 0:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
            elif "norm" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)


def unet_config(block_out_channels=(32, 64), cross_attention_dim=32, norm_num_groups=8, layers_per_block=2, sample_size=8) -> dict:
    n = len(block_out_channels)
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": list(block_out_channels),
        "layers_per_block": layers_per_block,
        "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 8,
        "norm_num_groups": norm_num_groups,
    }


_OFFICIAL_MOTION_RENAMES = (
    (".attn1.", ".attention_blocks.0."),
    (".attn2.", ".attention_blocks.1."),
    (".norm1.", ".norms.0."),
    (".norm2.", ".norms.1."),
    (".norm3.", ".ff_norm."),
)


def official_motion_state_dict(adapter) -> OrderedDict:
    """A diffusers ``MotionAdapter`` state dict under the official AnimateDiff-v1 key names."""
    out = OrderedDict()
    for key, tensor in adapter.state_dict().items():
        block, _, rest = key.partition(".motion_modules.")
        index, _, rest = rest.partition(".")
        prefix = f"{block}.motion_modules.{index}.temporal_transformer."
        if rest.endswith("pos_embed.pe"):
            base = rest[: -len("pos_embed.pe")]
            for attention in (0, 1):
                out[f"{prefix}{base}attention_blocks.{attention}.pos_encoder.pe"] = tensor.clone()
            continue
        for new, old in _OFFICIAL_MOTION_RENAMES:
            rest = rest.replace(new, old)
        out[prefix + rest] = tensor
    return out


@dataclass(frozen=True)
class Size:
    """The sizes of the models ``make_official_weights`` writes."""

    block_out_channels: tuple[int, ...]  # the UNet's, appearance encoder's, ControlNet's and motion modules'
    cross_attention_dim: int  # also the text encoder's hidden size
    norm_num_groups: int  # the UNets' and the VAE's
    text_intermediate_size: int
    text_layers: int
    text_heads: int
    controlnet_conditioning_channels: tuple[int, ...]
    vae_block_out_channels: tuple[int, ...]
    vae_layers_per_block: int
    sample_size: int | None = None  # the UNet's latent side (the VAE's is 8 times it); None: 8, diffusers' VAE default


TINY = Size((32, 64), 32, 8, 37, 2, 4, (8, 8, 16, 16), (8, 16, 16, 16), 1)
SD15 = Size((320, 640, 1280, 1280), 768, 32, 3072, 12, 12, (16, 32, 96, 256), (128, 256, 512, 512), 2, sample_size=64)
"""The published models' sizes: SD1.5's UNet, its ViT-L/14 text encoder, sd-vae-ft-mse, a full ControlNet."""


def make_official_weights(
    root: Path,
    *,
    size: Size = TINY,
    block_out_channels=None,
    seed: int = 0,
    full_unet_checkpoint: bool = False,
    key_prefix: str = "",
    unet_weights_format: str = "safetensors",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write random weights in the official layout under ``root``; returns ``root``.

    ``size``: the models' sizes (``TINY``, the tests'; ``SD15``, the published ones, about 5.4 GB in
    float16); ``block_out_channels`` replaces its UNet channels. ``dtype``: the tensors are saved in
    it (default: float32, as built).
    ``full_unet_checkpoint`` puts the spatial UNet into ``temporal_attention.ckpt`` as the
    published file does (then no SD UNet weights are written); otherwise the checkpoint holds the
    motion modules only and the spatial weights sit in ``stable-diffusion-v1-5/unet``.
    ``key_prefix`` (e.g. ``"module."``) prefixes every checkpoint key.
    """
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    def cast(tensor_or_model):
        return tensor_or_model if dtype is None else tensor_or_model.to(dtype)

    if block_out_channels is not None:
        size = replace(size, block_out_channels=tuple(block_out_channels))
    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sd = root / SD

    vocab_size = write_tokenizer(sd / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=size.cross_attention_dim,
        intermediate_size=size.text_intermediate_size,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    cast(CLIPTextModel(text_config)).save_pretrained(sd / "text_encoder")

    config = unet_config(size.block_out_channels, size.cross_attention_dim, size.norm_num_groups, sample_size=size.sample_size or 8)
    unet = UNet2DConditionModel(**config)
    _perturb(unet, generator)
    (sd / "unet").mkdir(parents=True, exist_ok=True)
    (sd / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}))

    adapter = MotionAdapter(
        block_out_channels=size.block_out_channels,
        motion_layers_per_block=config["layers_per_block"],
        motion_num_attention_heads=8,
        motion_max_seq_length=24,
        use_motion_mid_block=False,
    )
    _perturb(adapter, generator)
    checkpoint = official_motion_state_dict(adapter)
    del adapter
    if full_unet_checkpoint:
        checkpoint.update(unet.state_dict())
    else:
        spatial = {k: cast(v).contiguous() for k, v in unet.state_dict().items()}
        if unet_weights_format == "safetensors":
            save_file(spatial, str(sd / "unet" / "diffusion_pytorch_model.safetensors"))
        else:
            torch.save(spatial, sd / "unet" / "diffusion_pytorch_model.bin")
        del spatial
    checkpoint = OrderedDict((key_prefix + k, cast(v)) for k, v in checkpoint.items())
    temporal = root / "MagicAnimate" / "temporal_attention"
    temporal.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, temporal / "temporal_attention.ckpt")
    del checkpoint

    encoder = UNet2DConditionModel(**config)
    _perturb(encoder, generator)
    encoder_dir = root / "MagicAnimate" / "appearance_encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    last_up, last_attn = len(encoder.up_blocks) - 1, len(encoder.up_blocks[-1].attentions) - 1
    tail = f"up_blocks.{last_up}.attentions.{last_attn}."
    kept = {
        k: cast(v).contiguous()
        for k, v in encoder.state_dict().items()
        if not k.startswith(("conv_norm_out.", "conv_out.", tail + "proj_out."))
        and not (k.startswith(tail + "transformer_blocks.0.") and ".norm1." not in k)
    }
    save_file(kept, str(encoder_dir / "diffusion_pytorch_model.safetensors"))
    (encoder_dir / "config.json").write_text(json.dumps({"_class_name": "AppearanceEncoderModel", **config}))
    del encoder, kept

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=size.controlnet_conditioning_channels)
    _perturb(controlnet, generator)
    cast(controlnet).save_pretrained(root / "MagicAnimate" / "densepose_controlnet")
    del controlnet, unet

    vae = AutoencoderKL(
        block_out_channels=size.vae_block_out_channels,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=size.vae_layers_per_block,
        norm_num_groups=size.norm_num_groups,
        **({"sample_size": 8 * size.sample_size} if size.sample_size else {}),
    )
    _perturb(vae, generator)
    cast(vae).save_pretrained(root / "sd-vae-ft-mse")
    return root


# ----------------------------------------------------------------------------- the other stages' models


def paddleseg_checkpoint(model: str, path: Path, seed: int = 0, varied: bool = True) -> Path:
    """A random-weight PP-HumanSeg checkpoint exactly as PaddleSeg writes one (``paddle.save(state_dict)``).

    A fresh initialisation gives logits of about 1e-5, so every probability is 0.5; ``varied``
    scales the class head (the 2-channel convolutions) up so that the masks vary over the frame.
    """
    import paddle

    from magicanimate_cli import matting

    paddle.seed(seed)
    state = matting.build_network(model).state_dict()
    if varied:
        for key, value in state.items():
            if key.endswith("weight") and value.ndim == 4 and value.shape[0] == 2:
                value.set_value(value * 3e4)
    path.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(state, str(path))
    return path


def detectron2_person_weights(path: Path) -> str:
    """R_50_FPN_s1x weights, random but for the heads that decide who is found: the anchors are the
    boxes, grown to most of the frame, every box is a person (score ~1) and every pixel in it is
    body (coarse segmentation), while the part labels stay random; written in the model-zoo .pkl
    format. Returns the sha256."""
    import hashlib
    import pickle

    from detectron2.modeling import build_model

    from magicanimate_cli.densepose.estimator import build_config

    torch.manual_seed(0)
    state = {k: v.detach().numpy().copy() for k, v in build_model(build_config(None, device="cpu")).state_dict().items()}
    for key in ("proposal_generator.rpn_head.anchor_deltas", "roi_heads.box_predictor.bbox_pred"):
        state[f"{key}.weight"][:] = 0.0
        state[f"{key}.bias"][:] = 0.0  # proposals are the anchors
    state["roi_heads.box_predictor.bbox_pred.bias"][2:] = 20.0  # boxes: as much larger as detectron2 allows, clipped to the frame
    state["roi_heads.box_predictor.cls_score.weight"][:] = 0.0
    state["roi_heads.box_predictor.cls_score.bias"][:] = (10.0, -10.0)  # person, background
    state["roi_heads.densepose_predictor.ann_index_lowres.weight"][:] = 0.0
    state["roi_heads.densepose_predictor.ann_index_lowres.bias"][:] = (-10.0, 10.0)  # background, body
    with open(path, "wb") as handle:
        pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_frame_net(dim: int = 5, seed: int = 0) -> torch.nn.Module:
    """A stand-in for an image feature network (FID's Inception): frames in, ``dim`` features out."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, dim),
    ).eval()


def tiny_clip_net(dim: int = 4, seed: int = 0) -> torch.nn.Module:
    """A stand-in for a video feature network (FVD's I3D): clips in, ``dim`` features out."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(3, 3, 3, stride=(1, 2, 2)), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(3, dim)
    ).eval()


def clip_text_config():
    """A two-layer CLIP text encoder's configuration (transformers)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16)


def tiny_attention(seed: int = 0) -> torch.nn.Module:
    """One diffusers ``Attention`` layer (16 channels, 2 heads of 8), as the UNet's self-attentions are built."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(seed)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()
