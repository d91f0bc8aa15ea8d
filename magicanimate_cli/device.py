"""The one way a command turns ``--device`` into a torch device string.

``check_device(device)`` validates the spelling without importing torch (call it with the other
option checks, before any work); ``resolve_device(device)`` imports torch and returns ``"cpu"``,
``"cuda"`` or ``"cuda:N"`` — ``auto`` is CUDA when PyTorch sees a GPU, else the CPU — or raises
``UserError`` when CUDA is asked for and PyTorch sees none (or not that many).
"""

from __future__ import annotations

from .errors import UserError

DEVICES = ("auto", "cuda", "cpu")


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if it is ``auto``, ``cuda``, ``cuda:N`` or ``cpu``; else ``UserError``. No torch import."""
    if device in DEVICES or (isinstance(device, str) and device.startswith("cuda:") and device[5:].isascii() and device[5:].isdigit()):
        return device
    raise UserError(f"{option} {device}: choose one of {', '.join(DEVICES)} (or cuda:N)")


def resolve_device(device: str, option: str = "--device") -> str:
    """The torch device string for ``device`` on this machine (see the module docstring)."""
    check_device(device, option)
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{option} {device}: no CUDA device is visible to PyTorch; use --device cpu or check `magicanimate doctor`")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise UserError(f"{option} {device}: PyTorch sees {torch.cuda.device_count()} CUDA device(s); check `magicanimate doctor`")
    return device


def check_compile(device: str) -> None:
    """``--compile`` needs inductor's compiler for ``device`` (a resolved torch device string): a C++
    compiler on CPU (``$CXX``, else ``g++``, as inductor picks it), Triton on CUDA."""
    import importlib.util
    import os
    import shutil

    if device.startswith("cuda"):
        if importlib.util.find_spec("triton") is None:
            raise UserError("--compile on CUDA needs Triton (the CUDA builds of torch bring it): pip install triton, or drop --compile")
        return
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise UserError(f"--compile on CPU needs a C++ compiler and {compiler} was not found: install one (apt-get install g++) or drop --compile")
