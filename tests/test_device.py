"""``--device``: its spellings (no torch), what it resolves to here, and ``--compile``'s compiler."""

import pytest
import torch

from magicanimate_cli.device import check_compile, check_device, resolve_device
from magicanimate_cli.errors import UserError


@pytest.mark.parametrize("device", ["auto", "cuda", "cpu", "cuda:0", "cuda:12"])
def test_the_spellings_taken(device):
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:٣", "CPU", "", "mps"])
def test_other_spellings_are_one_line_naming_the_option(device):
    with pytest.raises(UserError, match=rf"^--devices {device}: choose one of auto, cuda, cpu \(or cuda:N\)$"):
        check_device(device, "--devices")


def test_auto_is_cuda_where_torch_sees_a_gpu_else_the_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_said_with_the_fix(device):
    with pytest.raises(UserError, match=rf"--device {device}: no CUDA device is visible to PyTorch; use --device cpu"):
        resolve_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a machine with CUDA")
def test_a_gpu_index_past_the_last_is_said():
    with pytest.raises(UserError, match=f"PyTorch sees {torch.cuda.device_count()} CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_compile_on_cpu_needs_the_compiler_inductor_would_use(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(UserError, match="--compile on CPU needs a C\\+\\+ compiler and no-such-compiler-here was not found"):
        check_compile("cpu")
