"""Where each animator component lives in a models folder, and reading a weights file safely.

Layout of a models folder (the official ``pretrained_models/``)::

    stable-diffusion-v1-5/{tokenizer/, text_encoder/, unet/config.json[, unet weights]}
    sd-vae-ft-mse/{config.json, diffusion_pytorch_model.*}
    MagicAnimate/appearance_encoder/{config.json, diffusion_pytorch_model.safetensors}
    MagicAnimate/densepose_controlnet/{config.json, diffusion_pytorch_model.safetensors}
    MagicAnimate/temporal_attention/temporal_attention.ckpt   (or .safetensors after conversion)

Which folder is the weights folder (``resolve_models_dir``: ``--models``, ``$MAGICANIMATE_MODELS``,
a checkout's ``models/``, ``~/.cache/magicanimate/models``) is decided here too, for every stage.
This module sits below both ``models`` (download, convert, list) and ``animate.weights`` (the
loader): neither of those imports the other. torch and safetensors are imported inside the
functions that read tensors, so the paths are available without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, first_line

ENV_VAR = "MAGICANIMATE_MODELS"
"""The weights folder when ``--models`` is not given."""
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def redownload(path: Path | str) -> str:
    """The fix for a damaged or foreign weights file: the download command that fetches it again
    into the weights folder that holds it (the ancestor with the layout's ``MagicAnimate/``
    folder; ``--models`` named when that is not the default folder)."""
    from .weights_manifest import download_command

    root = next((folder for folder in Path(path).parents if (folder / "MagicAnimate").is_dir()), None)
    return f"run `{download_command('animate', root, overwrite=True)}` to fetch it again"


def checkout_models_dir() -> Path | None:
    """``models/`` beside the package when running from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    candidate = root / "models"
    if (root / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None


def resolve_models_dir(models: Path | str | None = None) -> Path:
    """The weights folder: ``models``, else ``$MAGICANIMATE_MODELS``, else ``models/`` of a source
    checkout, else ``~/.cache/magicanimate/models`` (``models_root`` also refuses a file there). An
    empty ``models`` (``--models "$MODELS"`` with the variable unset) is refused, not read as the
    current folder."""
    if models is not None and not os.fspath(models):
        raise UserError('--models "": an empty weights folder (an unset shell variable?); name the folder, or leave --models out for the default')
    if models:
        return Path(models).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return checkout_models_dir() or Path.home() / ".cache" / "magicanimate" / "models"


def models_root(models: Path | str | None = None) -> Path:
    """``resolve_models_dir``, refusing a file where the weights folder should be (the commands that
    read or write weights; ``doctor`` reports instead)."""
    folder = resolve_models_dir(models)
    try:
        is_file = folder.exists() and not folder.is_dir()
    except OSError:  # unsearchable: said where the folder is read
        is_file = False
    if is_file:
        raise UserError(f"{folder}: is a file, but the weights folder (--models or {ENV_VAR}) must be a folder (official layout); give that folder")
    return folder


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

    def identity(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` of every file the loader may read (hidden ones aside): weights
        replaced or converted under the same folder make another identity (``animate``'s resume key)."""
        sd = self.stable_diffusion
        files = [self.temporal_attention]
        for folder in (sd / "tokenizer", sd / "text_encoder", sd / "unet", self.vae, self.appearance_encoder, self.controlnet):
            if folder.is_dir():
                files += [p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        out = []
        for path in sorted(files):
            try:
                info = path.stat()
            except OSError:
                continue
            if not path.is_dir():
                out.append((str(path.relative_to(self.root)), info.st_size, info.st_mtime_ns))
        return out

    def required(self) -> list[Path]:
        """The folders and files the loader opens (the manifest's ``animate`` group names each file)."""
        return [
            self.stable_diffusion / "tokenizer",
            self.stable_diffusion / "text_encoder",
            self.stable_diffusion / "unet" / "config.json",
            self.vae / "config.json",
            self.appearance_encoder / "config.json",
            self.controlnet / "config.json",
            self.temporal_attention,
        ]


def weights_file(folder: Path) -> Path:
    """The diffusers weights file of a component folder (safetensors preferred, else the pickle)."""
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder / WEIGHT_NAMES[0]}: missing (no .safetensors or .bin weights in that folder); {redownload(folder)}")


def unreadable(path: Path, exc: BaseException) -> UserError:
    """The one-line error for a weights file that cannot be parsed (cut short, or another format)."""
    return UserError(f"{path}: cannot be read ({exc.__class__.__name__}: {first_line(exc)}; truncated or damaged?); {redownload(path)}")


def load_tensors(path: Path):
    """A state dict from safetensors, or from a pickle with ``weights_only=True``."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError (cut short), OSError
            raise unreadable(path, exc) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise UserError(f"{path}: cannot be read as a PyTorch state dict ({exc.__class__.__name__}); {redownload(path)}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a state dict")
    return state


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a weights file (a safetensors header, or a mapped pickle)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:
            raise unreadable(path, exc) from exc
    return {key: tuple(value.shape) for key, value in load_tensors(path).items() if hasattr(value, "shape")}


def shape_problem(
    path: Path,
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    *,
    config: str = "config.json",
    missing: bool = True,
) -> UserError | None:
    """The first tensor of ``found`` whose shape differs from ``expected``, else (with ``missing``)
    the first tensor of ``expected`` that ``found`` lacks, as a one-line error naming the file, the
    tensor and both shapes; ``None`` when everything fits."""
    for key, shape in found.items():
        want = expected.get(key)
        if want is not None and tuple(want) != tuple(shape):
            return UserError(
                f"{path}: tensor {key} has shape {list(shape)}, {config} expects {list(want)}; "
                f"these weights belong to another model or configuration ({redownload(path)})"
            )
    absent = [key for key in expected if key not in found] if missing else []
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        return UserError(
            f"{path}: tensor {absent[0]}{more} missing (expected shape {list(expected[absent[0]])} from {config}); "
            f"not the weights of this model ({redownload(path)})"
        )
    return None
