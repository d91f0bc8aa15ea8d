"""`--devices`: the windows of every step split across processes give the single-process result."""

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.animate import _parse_devices, animate
from magicanimate_cli.animate.pipeline import _share
from magicanimate_cli.errors import UserError


def test_windows_are_shared_in_contiguous_blocks():
    windows = [[i] for i in range(7)]
    shares = [_share(windows, r, 3) for r in range(3)]
    assert sum(shares, []) == windows and [len(s) for s in shares] == [2, 2, 3]
    assert _share(windows[:1], 0, 2) == [] and _share(windows[:1], 1, 2) == windows[:1]  # more processes than windows


def test_device_lists():
    assert _parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert _parse_devices("cpu,cpu") == ["cpu", "cpu"]
    with pytest.raises(UserError):
        _parse_devices("0,0")
    with pytest.raises(UserError):
        _parse_devices("gpu1")


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["loop", "open"])
def test_two_gloo_processes_reproduce_one_process_bitwise(tmp_path, tiny_weights, rng, schedule):
    reference = tmp_path / "ref.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reference)
    motion = tmp_path / "poses"
    media.write_frames(motion, rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8))  # 32 padded, 3 windows
    common = {"models": tiny_weights, "size": 64, "steps": 2, "seed": 3, "device": "cpu", "context_schedule": schedule}
    single = animate(reference, motion, tmp_path / "one", **common)
    split = animate(reference, motion, tmp_path / "two", devices="cpu,cpu", **common)
    assert split.device == "cpu,cpu" and single.frames == split.frames == 30
    a = media.read_frames(tmp_path / "one").array
    b = media.read_frames(tmp_path / "two").array
    assert np.array_equal(a, b)
