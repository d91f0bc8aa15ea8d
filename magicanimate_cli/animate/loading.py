"""Loading the animator: CPU kernels pinned before torch, ``--device``/``--dtype`` resolved, the
pipeline built from the weights (``load_pipeline``). Torch is imported inside the functions only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import check_dtype
from .malloc import reuse_freed_memory


def pin_cpu_kernels() -> None:
    """Make CPU results identical on every x86-64 machine (call before torch is imported).

    PyTorch, oneDNN and MKL pick kernels by instruction set, and AVX-512 and AVX2 kernels round
    differently. The animator rounds its reference features through float16, so such last-bit
    differences flip roundings and move the result by up to 3e-3 in the latents (measured with the
    official code itself on an AVX-512 machine against the fixtures made on an AVX2 one). Pinning
    the AVX2 kernels, the common baseline, makes runs reproduce bit for bit. inductor's on-disk
    cache (``--compile``) goes to a folder of its own for these kernels (``_inductor_cache_dir``).
    Variables the user has set are respected; once torch is imported this has no effect.
    """
    if "torch" in sys.modules:
        return
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = _inductor_cache_dir(os.environ["ATEN_CPU_CAPABILITY"])


def _inductor_cache_dir(capability: str) -> str:
    """inductor's default cache folder (``$TMPDIR/torchinductor_$USER``) with the pinned kernels'
    capability appended, so that no process with other kernels reuses what these compile.
    Measured on an AVX-512 EPYC with torch 2.13: a process without the pin that reused the
    compiled ControlNet a pinned process had cached in the shared default folder crashed
    (segmentation fault); with a folder of its own it compiled and ran."""
    import getpass
    import re
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    user = re.sub(r'[\\/:*?"<>|]', "_", user)
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}_{capability.lower()}")


def resolve_device_dtype(device: str, dtype: str):
    """``(torch.device, torch.dtype)`` for ``--device`` and ``--dtype`` on this machine (``auto``:
    CUDA when PyTorch sees a GPU; float16 on CUDA, float32 elsewhere)."""
    import torch

    from ..device import resolve_device

    check_dtype(dtype)
    device = resolve_device(device)
    return torch.device(device), getattr(torch, auto_dtype(device) if dtype == "auto" else dtype)


def auto_dtype(device: str) -> str:
    """``--dtype auto`` on ``device`` (a resolved one: ``cuda:0``, ``cpu``): float16 on CUDA, float32 elsewhere."""
    return "float16" if device.startswith("cuda") else "float32"


def load_pipeline(models: Path | str | None = None, device: str = "auto", dtype: str = "auto"):
    """The animator pipeline with the weights of ``models`` (official layout) on ``device``.

    It pins the CPU kernels first (``pin_cpu_kernels``), as the CLI does, so that frames made with
    it are those of the CLI; in a process that imported torch before, the kernels are torch's
    choice (AVX-512 ones round differently). On a CPU device it makes malloc reuse freed memory
    (``malloc.reuse_freed_memory``).
    """
    pin_cpu_kernels()  # first: what follows imports torch
    from ..weights_layout import resolve_models_dir
    from .pipeline import MagicAnimatePipeline, official_scheduler
    from .weights import load_components

    torch_device, torch_dtype = resolve_device_dtype(device, dtype)
    if torch_device.type == "cpu":
        reuse_freed_memory()
    components = load_components(resolve_models_dir(models), torch_dtype)
    pipe = MagicAnimatePipeline(**components, scheduler=official_scheduler())
    return pipe.to(torch_device)
