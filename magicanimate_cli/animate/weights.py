"""Load the published MagicAnimate weights from the official on-disk layout.

Layout of a models folder (the official ``pretrained_models/``)::

    stable-diffusion-v1-5/{tokenizer/, text_encoder/, unet/config.json[, unet weights]}
    sd-vae-ft-mse/{config.json, diffusion_pytorch_model.*}
    MagicAnimate/appearance_encoder/{config.json, diffusion_pytorch_model.safetensors}
    MagicAnimate/densepose_controlnet/{config.json, diffusion_pytorch_model.safetensors}
    MagicAnimate/temporal_attention/temporal_attention.ckpt   (or .safetensors after conversion)

The published ``temporal_attention.ckpt`` holds the whole UNet (spatial and motion keys), so the
Stable Diffusion UNet weights are only read when the checkpoint lacks spatial keys (as the parity
fixtures' does). Pickles are always read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

SCALING_FACTOR = 0.18215  # hard-coded in the official pipeline (not vae.config.scaling_factor)


@dataclass(frozen=True)
class WeightLayout:
    """Paths of every component inside a models folder."""

    root: Path

    @property
    def stable_diffusion(self) -> Path:
        return self.root / "stable-diffusion-v1-5"

    @property
    def vae(self) -> Path:
        return self.root / "sd-vae-ft-mse"

    @property
    def appearance_encoder(self) -> Path:
        return self.root / "MagicAnimate" / "appearance_encoder"

    @property
    def controlnet(self) -> Path:
        return self.root / "MagicAnimate" / "densepose_controlnet"

    @property
    def temporal_attention(self) -> Path:
        """The converted safetensors file when present, else the published pickle."""
        folder = self.root / "MagicAnimate" / "temporal_attention"
        converted = folder / "temporal_attention.safetensors"
        return converted if converted.is_file() else folder / "temporal_attention.ckpt"

    def required(self) -> list[Path]:
        return [
            self.stable_diffusion / "tokenizer",
            self.stable_diffusion / "text_encoder",
            self.stable_diffusion / "unet" / "config.json",
            self.vae / "config.json",
            self.appearance_encoder / "config.json",
            self.controlnet / "config.json",
            self.temporal_attention,
        ]

    def check(self) -> None:
        for path in self.required():
            if not path.exists():
                raise UserError(
                    f"{path}: missing model file; run `magicanimate models download` "
                    "or point --models / MAGICANIMATE_MODELS at a folder in the official layout"
                )


def _weights_file(folder: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no diffusion_pytorch_model.safetensors or .bin; download the weights again")


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a pickle with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise UserError(f"{path}: cannot be read as a PyTorch state dict ({exc.__class__.__name__}); download it again") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a state dict")
    return state


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "unet."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


_MOTION_RENAMES = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)


def convert_motion_key(key: str) -> str:
    """Official motion-module key -> diffusers ``UNetMotionModel`` key."""
    if key.endswith(".pos_encoder.pe"):
        block = key.split(".attention_blocks.")[0]
        return _convert_plain(block) + ".pos_embed.pe"
    return _convert_plain(key)


def _convert_plain(key: str) -> str:
    for old, new in _MOTION_RENAMES:
        key = key.replace(old, new)
    return key


def split_temporal_checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict, dict, int]:
    """Split an official temporal checkpoint into (spatial, motion) diffusers state dicts.

    Returns the spatial keys (empty for a motion-only checkpoint), the renamed motion keys and
    the positional-encoding length. Each official attention block carries its own copy of the
    sinusoidal table; diffusers keeps one per transformer block, so the copies must agree.
    """
    spatial: dict[str, torch.Tensor] = {}
    motion: dict[str, torch.Tensor] = {}
    max_len = 0
    for raw_key, tensor in state.items():
        key = _strip_prefixes(raw_key)
        if ".motion_modules." not in key:
            spatial[key] = tensor
            continue
        new_key = convert_motion_key(key)
        if new_key.endswith(".pos_embed.pe"):
            max_len = tensor.shape[1]
            if new_key in motion and not torch.equal(motion[new_key], tensor):
                raise UserError(f"{raw_key}: positional encodings of one motion block differ; unsupported checkpoint")
        motion[new_key] = tensor
    if not motion:
        raise UserError("temporal_attention checkpoint holds no motion-module keys; is it the right file?")
    return spatial, motion, max_len


# Modules the official appearance encoder removes (official-inference.md §4.1): nothing computed
# from them is used, so their weights are absent from the published file.
def _is_appearance_tail(key: str, last_up: int, last_attn: int) -> bool:
    if key.startswith(("conv_norm_out.", "conv_out.")):
        return True
    block = f"up_blocks.{last_up}.attentions.{last_attn}."
    if not key.startswith(block):
        return False
    rest = key[len(block) :]
    if rest.startswith("proj_out."):
        return True
    inner = rest.split(".", 2)
    return len(inner) == 3 and inner[0] == "transformer_blocks" and not inner[2].startswith("norm1.")


def _to(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def load_appearance_encoder(folder: Path, dtype: torch.dtype):
    """The appearance encoder as a stock ``UNet2DConditionModel`` (its tail left unused)."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in UNet2DConditionModel.load_config(folder).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(config)
    state = _to(load_tensors(_weights_file(folder)), dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    last_up = len(model.up_blocks) - 1
    last_attn = len(model.up_blocks[last_up].attentions) - 1
    bad = [k for k in missing if not _is_appearance_tail(k, last_up, last_attn)]
    if unexpected or bad:
        raise UserError(f"{folder}: not an appearance encoder (missing {bad[:3]}, unexpected {unexpected[:3]})")
    for key in missing:  # unused tail: give it real (zero) storage
        module_name, _, name = key.rpartition(".")
        module = model.get_submodule(module_name)
        old = getattr(module, name)
        setattr(module, name, torch.nn.Parameter(torch.zeros(old.shape, dtype=dtype), requires_grad=False))
    return model.eval().requires_grad_(False)


def load_unet(layout: WeightLayout, dtype: torch.dtype):
    from .unet import build_unet

    config = json.loads((layout.stable_diffusion / "unet" / "config.json").read_text())
    spatial, motion, max_len = split_temporal_checkpoint(load_tensors(layout.temporal_attention))
    if not spatial:  # a motion-only checkpoint: spatial weights from Stable Diffusion
        spatial = {_strip_prefixes(k): v for k, v in load_tensors(_weights_file(layout.stable_diffusion / "unet")).items()}
    try:
        return build_unet(config, _to({**spatial, **motion}, dtype), max_len)
    except RuntimeError as exc:
        raise UserError(f"{layout.temporal_attention}: does not match unet/config.json ({str(exc).splitlines()[0]})") from exc


def _has_safetensors(folder: Path) -> bool:
    return (folder / "diffusion_pytorch_model.safetensors").is_file()


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars, format notices) out of our output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_components(root: Path, dtype: torch.dtype) -> dict:
    """Every pipeline component, loaded on the CPU in ``dtype``."""
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from . import text

    _quiet_libraries()
    from ..models import verify_models

    layout = WeightLayout(Path(root))
    layout.check()
    verify_models(root, only="animate")  # sizes and sha256 recorded at download (no-op otherwise)
    sd = layout.stable_diffusion
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(sd / "tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(
            sd / "text_encoder", dtype=dtype, attn_implementation=text.register()
        ).eval(),
        "vae": AutoencoderKL.from_pretrained(layout.vae, torch_dtype=dtype, use_safetensors=_has_safetensors(layout.vae)).eval(),
        "controlnet": ControlNetModel.from_pretrained(
            layout.controlnet, torch_dtype=dtype, use_safetensors=_has_safetensors(layout.controlnet)
        ).eval(),
        "appearance_encoder": load_appearance_encoder(layout.appearance_encoder, dtype),
        "unet": load_unet(layout, dtype),
    }
