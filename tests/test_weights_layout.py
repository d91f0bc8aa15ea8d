"""weights_layout: which folder holds the weights, its official layout, and reading a weights file safely."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from magicanimate_cli.errors import UserError
from magicanimate_cli.weights_layout import ENV_VAR, WeightLayout, load_tensors, models_root, resolve_models_dir


def test_a_file_as_the_weights_folder_is_reported_by_resolve_and_refused_by_models_root(tmp_path, monkeypatch):
    photo = tmp_path / "ref.png"
    photo.write_bytes(b"not a folder")
    monkeypatch.setenv(ENV_VAR, str(photo))
    assert resolve_models_dir() == photo  # doctor reports what it finds instead of stopping
    with pytest.raises(UserError, match=f"{re.escape(str(photo))}: is a file, but the weights folder \\(--models or {ENV_VAR}\\)"):
        models_root()
    assert models_root(tmp_path / "not-yet") == tmp_path / "not-yet"  # a folder to be made is fine


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_weights):
    ckpt = tiny_weights / "MagicAnimate" / "temporal_attention" / "temporal_attention.ckpt"
    broken = tmp_path / "temporal_attention.ckpt"
    broken.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot be read"):
        load_tensors(broken)


def test_pickles_are_loaded_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UserError):
        load_tensors(path)


def test_safetensors_checkpoint_is_preferred(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    root = tmp_path / "m"
    shutil.copytree(tiny_weights, root)
    folder = root / "MagicAnimate" / "temporal_attention"
    state = torch.load(folder / "temporal_attention.ckpt", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "temporal_attention.safetensors"))
    assert WeightLayout(root).temporal_attention.suffix == ".safetensors"
