"""benchmarks/official_worker.py runs the official MagicAnimate code faithfully: it reproduces fixture A.

The worker drives a checkout of the official code (not part of this repository) in that code's own
Python environment; ``benchmarks/animate_cpu.py --official`` uses it to time the official code next
to ours. The oracle is fixture A itself, written by the official entry point (../shared/parity/A).
The test skips where the checkout or its environment is absent (CI has neither); point at them with
MAGICANIMATE_OFFICIAL_CHECKOUT and MAGICANIMATE_OFFICIAL_PYTHON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PARITY_ROOT

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "benchmarks" / "official_worker.py"
CHECKOUT = Path(os.environ.get("MAGICANIMATE_OFFICIAL_CHECKOUT", "/work/scratch/magic-animate"))
PYTHON = Path(os.environ.get("MAGICANIMATE_OFFICIAL_PYTHON", "/work/scratch/official-venv/bin/python"))
FIXTURE = PARITY_ROOT / "A"

if not (CHECKOUT / "magicanimate" / "pipelines" / "pipeline_animation.py").is_file() or not PYTHON.is_file():
    pytest.skip("no checkout of the official code with its environment (MAGICANIMATE_OFFICIAL_*)", allow_module_level=True)
if not (FIXTURE / "expected" / "video_uint8.npy").is_file():
    pytest.skip("parity fixture A not found (MAGICANIMATE_PARITY_DIR)", allow_module_level=True)

# the kernels the fixtures were made with (what animate.pin_cpu_kernels sets), two threads as in run.json
ENV = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
       "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def run_worker(tmp_path: Path, *extra: str) -> tuple[dict, np.ndarray, np.ndarray]:
    params = json.loads((FIXTURE / "run.json").read_text())["params"]
    frames, latents = tmp_path / "frames.npy", tmp_path / "latents.npy"
    command = [
        str(PYTHON), str(WORKER), "--checkout", str(CHECKOUT), "--weights", str(FIXTURE / "weights"),
        "--inference-config", str(FIXTURE / "config" / "inference.yaml"),
        "--reference", str(FIXTURE / "inputs" / "reference.npy"), "--motion", str(FIXTURE / "inputs" / "motion_frames.npy"),
        "--size", str(params["size"]), "--steps", str(params["steps"]), "--seed", str(params["seed"]),
        "--guidance-scale", str(params["guidance_scale"]), "--context-frames", str(params["context_frames"]),
        "--context-overlap", str(params["context_overlap"]), "--fusion-blocks", params["fusion_blocks_config"],
        "--threads", str(params["torch_num_threads"]), "--out", str(frames), "--latents-out", str(latents), *extra,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(frames), np.load(latents)


@pytest.mark.slow
def test_official_worker_reproduces_fixture_a_bit_for_bit(tmp_path):
    report, frames, latents = run_worker(tmp_path, "--contiguous-vae-input")
    wanted = np.load(FIXTURE / "expected" / "video_uint8.npy")
    assert frames.shape == wanted.shape
    assert np.array_equal(frames, wanted), f"{(frames != wanted).sum()} bytes differ"
    assert np.array_equal(latents, np.load(FIXTURE / "expected" / "final_latents.npy"))
    assert report["frames"] == len(wanted) and report["threads"] == 2
    assert 0 < report["decode_s"] and 0 < report["denoise_s"] <= report["s"] and report["peak_rss_gb"] > 0
    assert 0 < report["peak_anon_gb"] <= report["peak_rss_gb"] and 0 < report["peak_file_gb"] <= report["peak_rss_gb"]


@pytest.mark.slow
def test_official_worker_as_is_meets_the_fixture_contract(tmp_path):
    """Without the layout option, the official reference tensor may select another convolution kernel."""
    _, frames, latents = run_worker(tmp_path)
    wanted = np.load(FIXTURE / "expected" / "video_uint8.npy")
    diff = np.abs(frames.astype(int) - wanted.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    assert np.abs(latents - np.load(FIXTURE / "expected" / "final_latents.npy")).max() <= 1e-3
