"""Parity with the official MagicAnimate implementation on the golden fixtures.

Each fixture under ../shared/parity/<name>/ holds tiny random weights in the official layout, the
inputs, and what the official code produced (run.json lists the parameters). The contract
(../shared/parity/README.md): final latents within 1e-3, float video within 2e-3, and at least
99.9 % of output bytes identical with none off by more than 1. Runs go through subprocesses so the
CLI starts as a user's would (CPU kernel pinning happens before torch is imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import parity_fixtures

from magicanimate_cli import media

FIXTURES = parity_fixtures()
if not FIXTURES:
    if os.environ.get("CI"):
        raise RuntimeError("parity fixtures not found beside the repository (../shared/parity); CI must have them")
    pytest.skip("parity fixtures not found (set MAGICANIMATE_PARITY_DIR)", allow_module_level=True)

ENV = {**os.environ, "OMP_NUM_THREADS": "2"}  # the fixtures were made with 2 torch threads


def params(fixture):
    run = json.loads((fixture / "expected" / "run.json").read_text())["params"]
    return {
        "seed": run["seed"],
        "steps": run["steps"],
        "guidance_scale": run["guidance_scale"],
        "size": run["size"],
        "context_frames": run["context_frames"],
        "context_overlap": run["context_overlap"],
    }


def cli_args(fixture, motion, output):
    p = params(fixture)
    return [
        sys.executable, "-m", "magicanimate_cli", "animate", str(fixture / "inputs" / "reference.png"), str(motion),
        "-o", str(output), "--models", str(fixture / "weights"), "--device", "cpu", "--dtype", "float32",
        "--fit", "stretch", "--json",
        *[arg for key, value in p.items() for arg in (f"--{key.replace('_', '-')}", str(value))],
    ]


def assert_uint8_contract(frames, expected):
    assert frames.shape == expected.shape
    diff = np.abs(frames.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"a byte is off by {diff.max()}"
    assert (diff == 0).mean() >= 0.999, f"only {(diff == 0).mean():.5f} of bytes identical"


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
@pytest.mark.parametrize("motion", ["motion.mp4", "motion_frames"])
def test_cli_reproduces_the_official_frames(fixture, motion, tmp_path):
    out = tmp_path / "frames"
    proc = subprocess.run(cli_args(fixture, fixture / "inputs" / motion, out), capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["frames"] == len(media.list_frame_files(out))
    frames = np.stack(list(media.iter_frames(out)))
    assert_uint8_contract(frames, np.load(fixture / "expected" / "video_uint8.npy"))


SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from magicanimate_cli.animate import pin_cpu_kernels, load_pipeline, fit_square
    pin_cpu_kernels()
    from magicanimate_cli import media
    fixture, out, seed, steps, guidance, size, frames, overlap = sys.argv[1:]
    pipe = load_pipeline(fixture + "/weights", device="cpu", dtype="float32")
    ref = fit_square(media.read_image(fixture + "/inputs/reference.png"), int(size), "stretch", (0, 0, 0))
    motion = np.stack([fit_square(f, int(size), "stretch", (0, 0, 0)) for f in media.iter_frames(fixture + "/inputs/motion.mp4")])
    result = pipe(ref, motion, num_inference_steps=int(steps), guidance_scale=float(guidance), seed=int(seed),
                  context_frames=int(frames), context_overlap=int(overlap), output_type="float")
    np.savez(out, latents=result.latents.numpy(), video=result.frames)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_latents_and_float_video_match(fixture, tmp_path):
    p = params(fixture)
    out = tmp_path / "result.npz"
    args = [str(fixture), str(out), *(str(p[k]) for k in ("seed", "steps", "guidance_scale", "size", "context_frames", "context_overlap"))]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    result = np.load(out)
    expected_latents = np.load(fixture / "expected" / "final_latents.npy")
    assert np.abs(result["latents"] - expected_latents).max() <= 1e-3
    expected_video = np.load(fixture / "expected" / "video_float.npy")[0].transpose(1, 2, 3, 0)  # b c f h w -> f h w c
    video = result["video"]
    assert np.abs(video - expected_video[: len(video)]).max() <= 2e-3
