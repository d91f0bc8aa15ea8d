"""Load the published MagicAnimate weights from the official on-disk layout (``weights_layout``).

The published ``temporal_attention.ckpt`` holds the whole UNet (spatial and motion keys), so the
Stable Diffusion UNet weights are only read when the checkpoint lacks spatial keys (as the parity
fixtures' does). Pickles are always read with ``weights_only=True``. A weights file that cannot be
read, or whose tensors do not fit its ``config.json``, is a one-line ``UserError`` naming the
file (and the tensor, with both shapes), never a crash inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError, debugging, first_line
from ..weights_layout import WeightLayout, load_tensors, shape_problem, tensor_shapes, unreadable, weights_file
from ..weights_manifest import verify_models

__all__ = ["SCALING_FACTOR", "load_components", "motion_positions"]

SCALING_FACTOR = 0.18215  # hard-coded in the official pipeline (not vae.config.scaling_factor)


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


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_appearance_encoder(folder: Path, dtype: torch.dtype):
    """The appearance encoder as a stock ``UNet2DConditionModel`` (its tail left unused)."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in UNet2DConditionModel.load_config(folder).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(config)
    file = weights_file(folder)
    state = _to(load_tensors(file), dtype)
    problem = shape_problem(file, _shapes(model.state_dict()), _shapes(state), missing=False)
    if problem is not None:
        raise problem
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


def motion_positions(layout: WeightLayout) -> int | None:
    """The length of the motion modules' positional table (the most frames a window may hold),
    read from the temporal checkpoint's shapes alone; None when it holds no such table or its
    copies disagree (loading says why)."""
    lengths = {shape[1] for key, shape in tensor_shapes(layout.temporal_attention).items()
               if key.endswith(".pos_encoder.pe") and len(shape) >= 2}
    return lengths.pop() if len(lengths) == 1 else None


def _unet_shapes(config: dict, max_len: int) -> dict[str, tuple[int, ...]]:
    """The tensor shapes the UNet of ``config`` expects (built on the meta device, no memory)."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    from .unet import motion_adapter_config

    with torch.device("meta"):
        unet2d = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        adapter = MotionAdapter(**motion_adapter_config(config, max_len))
        unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)
    return _shapes(unet.state_dict())


def load_unet(layout: WeightLayout, dtype: torch.dtype):
    from .unet import build_unet

    config = json.loads((layout.stable_diffusion / "unet" / "config.json").read_text())
    spatial, motion, max_len = split_temporal_checkpoint(load_tensors(layout.temporal_attention))
    origin = layout.temporal_attention
    if not spatial:  # a motion-only checkpoint: spatial weights from Stable Diffusion
        origin = weights_file(layout.stable_diffusion / "unet")
        spatial = {_strip_prefixes(k): v for k, v in load_tensors(origin).items()}
    try:
        return build_unet(config, _to({**spatial, **motion}, dtype), max_len)
    except RuntimeError as exc:  # name the file and the tensor, not torch's list of every mismatch
        expected = _unet_shapes(config, max_len)
        problem = shape_problem(layout.temporal_attention, expected, _shapes(motion), config="unet/config.json", missing=False)
        problem = problem or shape_problem(origin, expected, _shapes(spatial), config="unet/config.json", missing=False)
        problem = problem or shape_problem(origin, expected, _shapes({**spatial, **motion}), config="unet/config.json")
        if problem is not None:
            raise problem from exc
        raise UserError(f"{layout.temporal_attention}: does not match unet/config.json ({str(exc).splitlines()[0]})") from exc


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars, format notices) out of our output, unless ``--debug``."""
    import diffusers
    import transformers

    if debugging():
        return
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _diffusers_component(cls, folder: Path, dtype: torch.dtype):
    """``cls.from_pretrained(folder)`` for inference (eval mode, gradients off), with every failure
    of its weights file said in one line:
    a missing or unreadable file, a tensor of the wrong shape (which, and both shapes), a tensor
    missing (diffusers would leave it on the meta device and fail later with "Cannot copy out of
    meta tensor")."""
    file = weights_file(folder)
    try:
        model, info = cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=file.suffix == ".safetensors", output_loading_info=True)
    except Exception as exc:  # OSError, SafetensorError, ValueError("Cannot load ... expected shape")
        raise _explain(cls, folder, file, exc) from exc
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    missing = list(info.get("missing_keys") or []) + left
    if missing:
        with torch.device("meta"):
            expected = _shapes(cls.from_config(cls.load_config(folder)).state_dict())
        raise shape_problem(file, {k: expected.get(k, ()) for k in missing}, {}) or UserError(f"{file}: tensor {missing[0]} missing")
    return model.eval().requires_grad_(False)  # inference only, as the UNet and the appearance encoder


def _explain(cls, folder: Path, file: Path, exc: BaseException) -> UserError:
    found = tensor_shapes(file)  # raises the one-line "cannot be read" error for a cut-short file
    with torch.device("meta"):
        expected = _shapes(cls.from_config(cls.load_config(folder)).state_dict())
    return shape_problem(file, expected, found) or unreadable(file, exc)


def _text_encoder(folder: Path, dtype: torch.dtype, root: Path):
    """The CLIP text encoder; transformers would fill missing tensors with random values silently.
    ``root``: the weights folder, which the suggested download command names."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import text

    names = ("model.safetensors", "pytorch_model.bin")
    file = next((folder / n for n in names if (folder / n).is_file()), None)
    if file is None:
        from ..weights_manifest import download_command

        raise UserError(f"{folder / names[0]}: missing (no model.safetensors or pytorch_model.bin); run `{download_command('animate', root)}`")

    def expected() -> dict:
        with torch.device("meta"):
            return _shapes(CLIPTextModel(CLIPTextConfig.from_pretrained(folder)).state_dict())

    try:
        model, info = CLIPTextModel.from_pretrained(folder, dtype=dtype, attn_implementation=text.register(), output_loading_info=True)
    except Exception as exc:  # a cut-short file, a tensor of the wrong shape
        raise (shape_problem(file, expected(), tensor_shapes(file)) or unreadable(file, exc)) from exc
    missing = [k for k in info.get("missing_keys") or [] if not k.endswith("position_ids")]
    if missing:
        want = expected()
        raise shape_problem(file, {k: want.get(k, ()) for k in missing}, {}) or UserError(f"{file}: tensor {missing[0]} missing")
    return model.eval()


def load_components(root: Path, dtype: torch.dtype) -> dict:
    """Every pipeline component, loaded on the CPU in ``dtype``."""
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPTokenizer

    _quiet_libraries()
    layout = WeightLayout(Path(root))
    verify_models(root, only="animate", missing_ok=False)  # every file present; sizes and sha256 recorded at download
    sd = layout.stable_diffusion
    return {
        # the tokenizers library raises plain Exception for a damaged vocab.json or merges.txt
        "tokenizer": _damaged_config(root, sd / "tokenizer", lambda: CLIPTokenizer.from_pretrained(sd / "tokenizer"), Exception),
        "text_encoder": _damaged_config(root, sd / "text_encoder", lambda: _text_encoder(sd / "text_encoder", dtype, root)),
        "vae": _damaged_config(root, layout.vae, lambda: _diffusers_component(AutoencoderKL, layout.vae, dtype)),
        "controlnet": _damaged_config(root, layout.controlnet, lambda: _diffusers_component(ControlNetModel, layout.controlnet, dtype)),
        "appearance_encoder": _damaged_config(root, layout.appearance_encoder, lambda: load_appearance_encoder(layout.appearance_encoder, dtype)),
        "unet": _damaged_config(root, sd / "unet", lambda: load_unet(layout, dtype)),
    }


def _damaged_config(root: Path, folder: Path, load, errors: type[BaseException] | tuple = (OSError, ValueError)):
    """``load()``, with a config or tokenizer file that cannot be parsed (bad JSON, settings the
    model class refuses) said in one line naming the folder; the weights' own problems are
    ``UserError`` already."""
    try:
        return load()
    except (UserError, ImportError, AttributeError, TypeError, NameError):
        raise  # said already, or a library problem (no file of the user's is at fault)
    except PermissionError as exc:
        raise UserError(f"{folder}: cannot be read ({first_line(exc)}); check the permissions of its files") from exc
    except errors as exc:
        from ..weights_manifest import download_command

        raise UserError(
            f"{folder}: cannot be loaded ({first_line(exc)}); its files are damaged or belong to another model: "
            f"download them again (`{download_command('animate', root)}`)"
        ) from exc
