"""The networks behind LPIPS, FID, FID-VID and FVD, wrapped to take uint8 RGB frames.

Each wrapper holds a torch module and the preprocessing its protocol prescribes, and carries a
``name`` that the results print beside every number. The real networks come from established
packages; only DisCo's 3D ResNet-50 (FID-VID), which no maintained package ships, is defined
here (``r3d.py``).

| metric | network | package | weights (``<models>/metrics/``) |
|---|---|---|---|
| lpips | LPIPS v0.1 on VGG16 | ``lpips`` | ``vgg16-397923af.pth`` (+ linear layers shipped in lpips) |
| fid | TF Inception 2015-12-05, pool3 2048-d | ``torch-fidelity`` | ``weights-inception-2015-12-05-6726825d.pth`` |
| fvd | Kinetics-400 I3D, 400 logits | ``cd-fvd`` (its ``InceptionI3d``) | ``i3d_pretrained_400.pt`` |
| fid-vid | 3D ResNet-50 (Hara et al.), 2048-d | (this package) | ``resnet-50-kinetics.pth`` |

Tests build the same wrappers around small random-weight networks (``FrameExtractor(net, ...)``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import weights as W

# sha256 of the LPIPS v0.1 linear layers shipped inside the lpips package (lpips 0.1.4)
LPIPS_LINEAR_SHA256 = {
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
}
I3D_MIN_FRAMES = 10  # its temporal pooling needs this many (cd-fvd and StyleGAN-V use 16)
R3D_PIXEL_MEAN = (114.7748, 107.7354, 99.4750)  # Kinetics mean of 3D-ResNets-PyTorch, as DisCo subtracts it

# package -> the pip line that provides it; these packages declare torchvision as a dependency but
# the parts used here do not need it, hence --no-deps (torchvision has no build for every torch).
INSTALL = {
    "lpips": "pip install --no-deps lpips==0.1.4",
    "torch_fidelity": "pip install --no-deps torch-fidelity==0.4.0",
    "cdfvd": "pip install --no-deps cd-fvd==0.1.1",
    "cv2": "pip install opencv-python-headless",
}
PACKAGES = {"lpips": ["lpips"], "fid": ["torch_fidelity"], "fvd": ["cdfvd"], "fid-vid": []}
WEIGHT_KEYS = {"lpips": ["vgg16"], "fid": ["inception"], "fvd": ["i3d"], "fid-vid": ["r3d50"]}


def missing_packages(metric: str) -> list[str]:
    """Packages ``metric`` needs that are not installed (import names)."""
    import importlib.util

    return [name for name in PACKAGES.get(metric, []) if importlib.util.find_spec(name) is None]


def version(distribution: str) -> str:
    from ..clip import installed_version

    return installed_version(distribution) or "?"


# ----------------------------------------------------------------------------- preprocessing


def clean_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's "clean" resize as DisCo uses it: Pillow bicubic on each channel in float32.

    Returns float32 ``size×size×3`` on the 0-255 scale (not clipped, not quantized).
    """
    from PIL import Image

    channels = [
        np.asarray(Image.fromarray(frame[:, :, c].astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
        for c in range(frame.shape[2])
    ]
    return np.stack(channels, axis=2).astype(np.float32)


def _to_device(array: np.ndarray, device):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


# ----------------------------------------------------------------------------- wrappers


class FrameExtractor:
    """uint8 frames ``N×H×W×3`` -> features ``N×D``: clean resize to ``size``, then ``net``.

    ``net`` takes float32 ``N×3×size×size`` on the 0-255 scale and returns ``N×D``.
    """

    kind = "frames"

    def __init__(self, net, name: str, size: int, device="cpu") -> None:
        self.net, self.name, self.size, self.device = net, name, size, device

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return clean_resize(frame, self.size)

    def __call__(self, prepared: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = _to_device(prepared, self.device).permute(0, 3, 1, 2).float()
            return self.net(batch).double().cpu().numpy()


class ClipExtractor:
    """Clips ``N×T×H×W×3`` -> features ``N×D``: clean resize to ``size``, rescale, then ``net``.

    ``scale`` maps the 0-255 float frames to the network's input range; ``net`` takes float32
    ``N×3×T×size×size`` and returns ``N×D``.
    """

    kind = "clips"

    def __init__(self, net, name: str, size: int, scale, min_frames: int = 1, device="cpu") -> None:
        self.net, self.name, self.size, self.scale, self.min_frames, self.device = net, name, size, scale, min_frames, device

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return self.scale(clean_resize(frame, self.size)).astype(np.float32)

    def __call__(self, prepared: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = _to_device(prepared, self.device).permute(0, 4, 1, 2, 3).float()
            return self.net(batch).double().cpu().numpy()


class LPIPSScorer:
    """LPIPS distances of frame pairs, fed as the protocol says.

    ``corrected``: frames scaled to [-1, 1], as the LPIPS README requires. ``disco``: DisCo feeds
    ``ToTensor()`` output, [0, 1], to ``lpips.LPIPS(net='vgg')`` without ``normalize=True``.
    """

    def __init__(self, model, name: str, protocol: str, device="cpu") -> None:
        self.model, self.name, self.protocol, self.device = model, name, protocol, device

    def __call__(self, generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
        import torch

        def tensor(frames):
            x = _to_device(frames, self.device).permute(0, 3, 1, 2).float() / 255.0
            return x * 2 - 1 if self.protocol == "corrected" else x

        with torch.inference_mode():
            return self.model(tensor(generated), tensor(truth)).reshape(-1).double().cpu().numpy()


# ----------------------------------------------------------------------------- real networks


@dataclass(frozen=True)
class Context:
    """What the builders need: where the weights are, whether they may be fetched, the device."""

    models_dir: Path
    device: object
    download: bool = True
    progress: object = None

    def weight(self, key: str) -> Path:
        return W.ensure(W.WEIGHTS[key], self.models_dir, download=self.download, progress=self.progress)


def _torch_load(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as a PyTorch state dict ({exc.__class__.__name__}); download it again") from exc


def load_lpips_model(vgg_path: Path, net: str = "vgg"):
    """``lpips.LPIPS`` with its v0.1 linear layers and the torchvision backbone from ``vgg_path``.

    The backbone weights are torchvision's (keys ``features.N.*``); lpips slices the same
    ``features`` stack and keeps the layer numbers, so ``features.5.weight`` lands in
    ``net.slice2.5.weight``.
    """
    from ._torchvision import import_module

    lpips = import_module("lpips")
    model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if LPIPS_LINEAR_SHA256.get(net) and W.sha256_file(linear) != LPIPS_LINEAR_SHA256[net]:
        raise UserError(f"{linear}: not the LPIPS v0.1 linear layers this tool was checked with; reinstall {INSTALL['lpips']}")
    state = model.state_dict()
    filled = set()
    for key, value in _torch_load(linear).items():
        state[key] = value
        filled.add(key)
    slot = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "net" and len(parts) == 4:  # net.sliceK.N.weight
            slot[f"features.{parts[2]}.{parts[3]}"] = key
    for key, value in _torch_load(vgg_path).items():
        if key in slot:
            state[slot[key]] = value
            filled.add(slot[key])
    for key in list(state):  # lpips also lists its linear layers as lins.K (the same modules as linK)
        if key.startswith("lins."):
            index, rest = key[len("lins.") :].split(".", 1)
            if f"lin{index}.{rest}" in filled:
                state[key] = state[f"lin{index}.{rest}"]
                filled.add(key)
    missing = [k for k in state if k not in filled and not k.startswith("scaling_layer.")]
    if missing:
        raise UserError(f"{vgg_path}: not torchvision {net} weights (missing {missing[0]}); download it again")
    model.load_state_dict(state)
    return model.requires_grad_(False).eval()


def build_lpips(ctx: Context, protocol: str) -> LPIPSScorer:
    model = load_lpips_model(ctx.weight("vgg16")).to(ctx.device)
    return LPIPSScorer(model, f"LPIPS v0.1 VGG16 (lpips {version('lpips')})", protocol, ctx.device)


INCEPTION_POOL3 = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)  # fmt: skip


class InceptionPool3:
    """torch-fidelity's Inception-v3 (the TF FID graph) on already resized float input.

    torch-fidelity's ``forward`` only takes uint8 and resizes with TF1 bilinear; FID here follows
    clean-fid (float bicubic resize, as DisCo), so this runs its layers up to pool3 on 299x299
    float input with the graph's own normalisation ``(x - 128) / 128``.
    """

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x):
        x = (x - 128) / 128
        for name in INCEPTION_POOL3:
            x = getattr(self.model, name)(x)
        return x.flatten(1)


def _weights_only_loads():
    """Within the block every ``torch.load`` reads weights only, even one that asks for
    ``weights_only=False`` (torch's own switch, ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``)."""
    from ..processes import environment

    return environment({"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None})  # torch refuses both at once


def load_inception(path: Path):
    from ._torchvision import import_module

    _torch_load(path)  # only tensors inside, said in one line when not
    module = import_module("torch_fidelity.feature_extractor_inceptionv3")
    # torch-fidelity reads the file again, with weights_only=False: a file swapped after the
    # checks above must not run code there
    with _weights_only_loads():
        try:
            return module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        except pickle.UnpicklingError as exc:
            raise UserError(f"{path}: cannot be read as a PyTorch state dict ({exc.__class__.__name__}); download it again") from exc


def build_fid(ctx: Context) -> FrameExtractor:
    model = load_inception(ctx.weight("inception")).to(ctx.device)
    name = f"Inception-v3 TF-2015-12-05 pool3 2048-d (torch-fidelity {version('torch-fidelity')}), clean bicubic 299"
    return FrameExtractor(InceptionPool3(model), name, 299, ctx.device)


def load_i3d(path: Path):
    from ._torchvision import import_module

    module = import_module("cdfvd.third_party.i3d.pytorch_i3d")
    model = module.InceptionI3d(400, in_channels=3)
    model.load_state_dict(_torch_load(path))
    return model.eval()


def build_fvd(ctx: Context) -> ClipExtractor:
    model = load_i3d(ctx.weight("i3d")).to(ctx.device)
    name = f"I3D Kinetics-400 logits 400-d (i3d_pretrained_400, cd-fvd {version('cd-fvd')}), clean bicubic 224, [-1,1]"
    return ClipExtractor(model, name, 224, lambda x: x / 127.5 - 1, min_frames=I3D_MIN_FRAMES, device=ctx.device)


def build_fid_vid(ctx: Context, clip_length: int) -> ClipExtractor:
    from .r3d import load_r3d50

    model = load_r3d50(ctx.weight("r3d50"), clip_length).to(ctx.device)
    mean = np.asarray(R3D_PIXEL_MEAN, dtype=np.float32)
    name = "3D-ResNet-50 Kinetics-400 2048-d (resnet-50-kinetics, Hara et al.), clean bicubic 112, mean-subtracted"
    return ClipExtractor(model, name, 112, lambda x: x - mean, min_frames=1, device=ctx.device)
