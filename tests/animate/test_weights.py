import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PARITY_ROOT

from magicanimate_cli.animate import load_pipeline
from magicanimate_cli.animate.weights import (
    convert_motion_key,
    split_temporal_checkpoint,
)
from magicanimate_cli.errors import UserError
from magicanimate_cli.models import check_models

from factories import make_official_weights

PARITY_WEIGHTS = PARITY_ROOT / "A" / "weights"
needs_parity = pytest.mark.skipif(not PARITY_WEIGHTS.is_dir(), reason="parity fixture A not available")


def test_motion_key_mapping_onto_diffusers_names():
    base = "down_blocks.0.motion_modules.1.temporal_transformer."
    assert convert_motion_key(base + "transformer_blocks.0.attention_blocks.0.to_q.weight") == (
        "down_blocks.0.motion_modules.1.transformer_blocks.0.attn1.to_q.weight"
    )
    assert convert_motion_key(base + "transformer_blocks.0.attention_blocks.1.pos_encoder.pe") == (
        "down_blocks.0.motion_modules.1.transformer_blocks.0.pos_embed.pe"
    )
    assert convert_motion_key(base + "transformer_blocks.0.norms.1.weight").endswith("transformer_blocks.0.norm2.weight")
    assert convert_motion_key(base + "transformer_blocks.0.ff_norm.bias").endswith("transformer_blocks.0.norm3.bias")
    assert convert_motion_key(base + "proj_out.weight") == "down_blocks.0.motion_modules.1.proj_out.weight"


def test_split_strips_wrappers_and_separates_spatial_keys():
    pe = torch.zeros(1, 24, 4)
    state = {
        "module.conv_in.weight": torch.zeros(1),
        "module.up_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": pe,
        "module.up_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe": pe,
    }
    spatial, motion, max_len = split_temporal_checkpoint(state)
    assert list(spatial) == ["conv_in.weight"]
    assert list(motion) == ["up_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe"]
    assert max_len == 24


def test_disagreeing_positional_tables_are_refused():
    key = "up_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.{}.pos_encoder.pe"
    with pytest.raises(UserError):
        split_temporal_checkpoint({key.format(0): torch.zeros(1, 24, 4), key.format(1): torch.ones(1, 24, 4)})


def test_checkpoint_without_motion_modules_is_refused():
    with pytest.raises(UserError, match="no motion-module keys"):
        split_temporal_checkpoint({"conv_in.weight": torch.zeros(1)})


def test_published_style_full_checkpoint_gives_identical_results(tmp_path, tiny_pipeline, rng):
    """The published temporal_attention.ckpt holds the whole UNet (with a `module.` prefix, say):
    no SD UNet weights are needed, and the result is the same as the split layout's."""
    full = make_official_weights(tmp_path / "full", full_unet_checkpoint=True, key_prefix="module.")
    assert not (full / "stable-diffusion-v1-5" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    a = tiny_pipeline(reference, motion, num_inference_steps=1, seed=5).frames
    b = load_pipeline(full, device="cpu")(reference, motion, num_inference_steps=1, seed=5).frames
    assert np.array_equal(a, b)


def test_pickled_sd_unet_weights_load(tmp_path):
    """A motion-only checkpoint with the SD UNet as a pickle: every spatial tensor of the loaded UNet
    is the tensor of that file (read here with torch.load, independently of the loader)."""
    root = make_official_weights(tmp_path / "bin", unet_weights_format="bin")
    file = root / "stable-diffusion-v1-5" / "unet" / "diffusion_pytorch_model.bin"
    expected = torch.load(file, map_location="cpu", weights_only=True)
    loaded = load_pipeline(root, device="cpu", dtype="float32").unet.state_dict()
    assert len(expected) > 100 and set(expected) <= set(loaded)
    assert all(torch.equal(loaded[key], tensor) for key, tensor in expected.items())


def test_missing_file_names_the_file_and_the_fix(tmp_path, tiny_weights):
    root = tmp_path / "m"
    shutil.copytree(tiny_weights, root)
    (root / "MagicAnimate" / "temporal_attention" / "temporal_attention.ckpt").unlink()
    with pytest.raises(UserError, match=r"temporal_attention.ckpt: missing \(1 file\(s\) .*run `magicanimate models download --only animate") as info:
        check_models(root)
    assert f"--only animate --models {root}`" in str(info.value)  # into this folder, not the default one


# ----------------------------------------------------------------------------- broken weights (issue 12)


@pytest.fixture()
def fixture_copy(tmp_path) -> Path:
    """A writable copy of parity fixture A's tiny weights (official layout, no checksum record)."""
    target = tmp_path / "weights"
    shutil.copytree(PARITY_WEIGHTS, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def load_error(root: Path) -> str:
    from magicanimate_cli.animate.weights import load_components

    with pytest.raises(UserError) as info:
        load_components(root, torch.float32)
    message = str(info.value)
    assert "\n" not in message
    return message


@needs_parity
def test_a_missing_vae_weights_file_is_named_before_loading(fixture_copy):
    (fixture_copy / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin").unlink()  # was a raw OSError from diffusers
    message = load_error(fixture_copy)
    assert message.startswith(str(fixture_copy / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors") + ": missing (1 file(s)")
    assert "magicanimate models download --only animate" in message



def test_a_text_encoder_folder_without_weights_names_the_download_into_its_weights_folder(tmp_path):
    from magicanimate_cli.animate.weights import _text_encoder

    folder = tmp_path / "models" / "stable-diffusion-v1-5" / "text_encoder"
    folder.mkdir(parents=True)
    with pytest.raises(UserError) as info:
        _text_encoder(folder, torch.float32, tmp_path / "models")
    assert str(info.value) == (
        f"{folder / 'model.safetensors'}: missing (no model.safetensors or pytorch_model.bin); "
        f"run `magicanimate models download --only animate --models {tmp_path / 'models'}`"
    )

def _more_blocks(text: str) -> str:
    import json

    config = json.loads(text)
    config["block_out_channels"] = [*config["block_out_channels"], config["block_out_channels"][-1]]
    return json.dumps(config)


@needs_parity
@pytest.mark.parametrize(
    "relpath, damage",
    [
        ("stable-diffusion-v1-5/unet/config.json", lambda text: "{bad json"),  # was a raw JSONDecodeError, no file named
        ("stable-diffusion-v1-5/unet/config.json", _more_blocks),  # was diffusers' ValueError, exit 1
        ("MagicAnimate/appearance_encoder/config.json", lambda text: "{bad json"),  # was OSError, exit 1
        ("sd-vae-ft-mse/config.json", lambda text: text[: len(text) // 2]),
        ("stable-diffusion-v1-5/tokenizer/vocab.json", lambda text: "{1: 2}"),  # was the tokenizers' bare Exception
        ("stable-diffusion-v1-5/tokenizer/merges.txt", lambda text: "#version: 0.2\nzz yy\n"),
    ],
)
def test_a_damaged_config_or_tokenizer_file_names_its_folder(fixture_copy, relpath, damage):
    path = fixture_copy / relpath
    path.write_text(damage(path.read_text()))
    message = load_error(fixture_copy)
    assert message.startswith(f"{path.parent}: cannot be loaded (")
    assert message.endswith(f"download them again (`magicanimate models download --only animate --models {fixture_copy}`)")


@needs_parity
@pytest.mark.parametrize(
    "relpath",
    [
        "MagicAnimate/appearance_encoder/diffusion_pytorch_model.safetensors",  # was a raw SafetensorError
        "MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors",  # was a raw OSError
        "sd-vae-ft-mse/diffusion_pytorch_model.bin",
        "stable-diffusion-v1-5/text_encoder/pytorch_model.bin",  # was a raw RuntimeError
    ],
)
def test_truncated_weights_without_a_record_name_the_file(fixture_copy, relpath):
    path = fixture_copy / relpath
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = load_error(fixture_copy)
    assert message.startswith(f"{path}: cannot be read")
    assert message.endswith(f"run `magicanimate models download --only animate --models {fixture_copy} --overwrite` to fetch it again")


def _reshape(path: Path, key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    from safetensors.torch import load_file, save_file

    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    old = tuple(state[key].shape)
    state[key] = torch.zeros(shape)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return old


@needs_parity
@pytest.mark.parametrize(
    "relpath, key",
    [
        ("MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors", "controlnet_cond_embedding.blocks.0.weight"),
        ("MagicAnimate/appearance_encoder/diffusion_pytorch_model.safetensors", "conv_in.weight"),
        ("MagicAnimate/temporal_attention/temporal_attention.ckpt", "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"),
        ("sd-vae-ft-mse/diffusion_pytorch_model.bin", "decoder.conv_in.weight"),
    ],
)
def test_weights_of_the_wrong_shape_name_the_file_the_tensor_and_both_shapes(fixture_copy, relpath, key):
    path = fixture_copy / relpath
    expected = _reshape(path, key, (3, 5))
    message = load_error(fixture_copy)
    shown = key.replace(".temporal_transformer.", ".") if "motion_modules" in key else key  # named as the model names it
    assert message.startswith(f"{path}: tensor {shown} has shape [3, 5]") and f"expects {list(expected)}" in message


@needs_parity
def test_a_tensor_missing_from_the_controlnet_is_named_not_a_meta_tensor_crash(fixture_copy):
    from safetensors.torch import load_file, save_file

    path = fixture_copy / "MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors"
    state = load_file(path)
    shape = tuple(state.pop("controlnet_cond_embedding.blocks.1.weight").shape)
    save_file(state, str(path))  # was "Cannot copy out of meta tensor" from torch
    message = load_error(fixture_copy)
    assert message.startswith(f"{path}: tensor controlnet_cond_embedding.blocks.1.weight missing (expected shape {list(shape)}")


def test_appearance_encoder_of_the_wrong_shape_is_refused(tmp_path, tiny_weights):
    from magicanimate_cli.animate.weights import load_appearance_encoder

    root = tmp_path / "m"
    shutil.copytree(tiny_weights, root)
    target = root / "MagicAnimate" / "appearance_encoder" / "diffusion_pytorch_model.safetensors"
    shutil.copy(root / "MagicAnimate" / "densepose_controlnet" / "diffusion_pytorch_model.safetensors", target)
    with pytest.raises(UserError, match="not an appearance encoder"):
        load_appearance_encoder(target.parent, torch.float32)


def test_diffusers_and_transformers_are_kept_quiet_unless_debug():
    import logging

    import diffusers
    import transformers

    from magicanimate_cli.animate.weights import _quiet_libraries

    ours = logging.getLogger("magicanimate_cli")
    before = (ours.level, diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity())
    try:
        diffusers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
        ours.setLevel(logging.DEBUG)  # --debug (errors.show_library_logs)
        _quiet_libraries()
        assert diffusers.utils.logging.get_verbosity() == transformers.utils.logging.get_verbosity() == logging.WARNING
        ours.setLevel(logging.NOTSET)
        _quiet_libraries()
        assert diffusers.utils.logging.get_verbosity() == transformers.utils.logging.get_verbosity() == logging.ERROR
    finally:
        ours.setLevel(before[0])
        diffusers.utils.logging.set_verbosity(before[1])
        transformers.utils.logging.set_verbosity(before[2])
