"""Pages of memory-mapped weights handed back after use (``animate/mapped.py``): resident memory goes,
values stay, and a page written in place is never dropped.

Oracle: the kernel's own count of resident bytes of the weight file's mapping (``/proc/self/smaps``).
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from magicanimate_cli.animate.mapped import drop_mapped_pages
from magicanimate_cli.weights_layout import load_tensors

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux page mappings")

MiB = 2**20


def resident(path) -> int:
    """Bytes of ``path`` resident in this process's mappings."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) > 5 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.fixture()
def mapped(tmp_path):
    """A model whose two 8 MiB weights are mapped from a safetensors file, as ``load_pipeline`` loads them."""
    path = tmp_path / "model.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({"a.weight": torch.randn(1024, 2048, generator=generator), "b.weight": torch.randn(1024, 2048, generator=generator)}, path)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(2048, 1024, bias=False, device="meta"),
                                 "b": torch.nn.Linear(2048, 1024, bias=False, device="meta")})
    model.load_state_dict(load_tensors(path), assign=True)
    return path, model


def test_clean_pages_are_handed_back_and_read_again_unchanged(mapped):
    path, model = mapped
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    assert resident(path) >= 16 * MiB  # read by the clone
    dropped = drop_mapped_pages(model)
    assert dropped >= 16 * MiB
    assert resident(path) < MiB
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())  # mapped again from the file
    assert resident(path) >= 16 * MiB


def test_only_the_given_models_pages_go(mapped):
    path, model = mapped
    model.a.weight.sum(), model.b.weight.sum()
    dropped = drop_mapped_pages(model.a)
    assert 8 * MiB <= dropped <= 8 * MiB + 2 * 4096  # a page shared with a neighbour may go too
    assert 8 * MiB - 8192 <= resident(path) <= 8 * MiB + 8192  # b's pages stay


def test_a_page_written_in_place_is_kept(mapped):
    path, model = mapped
    weight = model.a.weight
    weight.sum()
    with torch.no_grad():
        weight[0, 0] = 1234.5  # copy-on-write: this page is now the process's own memory
        weight[-1, -1] = -6.25
    drop_mapped_pages(model)
    assert weight[0, 0].item() == 1234.5 and weight[-1, -1].item() == -6.25  # kept, not read back from the file
    assert weight[0, 1].item() == load_tensors(path)["a.weight"][0, 1].item()


def test_weights_outside_a_file_mapping_are_left_alone(mapped):
    _, model = mapped
    converted = torch.nn.Linear(8, 8).requires_grad_(False)  # anonymous memory, as after a dtype conversion
    before = converted.weight.clone()
    assert drop_mapped_pages(converted) == 0
    assert torch.equal(converted.weight, before)


def test_the_pipeline_hands_back_its_once_per_call_models(tiny_weights, tmp_path, rng):
    """After a call, nothing of the text encoder's file is resident (the UNet's is), and a second call
    gives the same frames."""
    from magicanimate_cli.animate import load_pipeline

    tiny_weights = Path(shutil.copytree(tiny_weights, tmp_path / "models"))  # files no other test has mapped
    pipe = load_pipeline(tiny_weights, device="cpu", dtype="float32")
    reference, motion = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    first = pipe(reference, motion, num_inference_steps=1).frames
    text_file = next((tiny_weights / "stable-diffusion-v1-5" / "text_encoder").glob("*.safetensors"))
    unet_file = next((tiny_weights / "stable-diffusion-v1-5" / "unet").glob("*.safetensors"))
    assert resident(text_file) == 0
    assert resident(unet_file) > 0
    assert np.array_equal(pipe(reference, motion, num_inference_steps=1).frames, first)


def test_mapped_files_with_names_that_are_not_utf8_are_read(tmp_path):
    # /proc/self/maps lists every mapped file by its bytes: the motion scratch beside an output
    # named in Latin-1 made its text reading fail (UnicodeDecodeError) before the first step
    import ctypes
    import mmap
    import os

    from magicanimate_cli.animate.mapped import _file_mappings

    path = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.u8")
    with open(path, "wb") as file:
        file.write(b"\0" * mmap.PAGESIZE)
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as view:
        first = ctypes.c_char.from_buffer(view)
        address = ctypes.addressof(first)
        del first  # (an exported buffer keeps the mapping from closing)
        assert any(start <= address < end for start, end in _file_mappings())
