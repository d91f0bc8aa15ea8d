"""Animator speed and memory against clip length.

Runs the animator in a fresh process per clip length and prints wall time, peak resident memory,
the peak of the tensor memory the call allocates on top of the weights (on a CPU from
``torch.profiler``'s allocator events, on a GPU ``torch.cuda.max_memory_allocated``; on a CPU the
peak RSS includes the profiler's own records), and the most frames whose ControlNet residuals are
held while a window's UNet runs, next to what the official pipeline would hold (every frame). Also
prints the official residual cache size for the real SD1.5-sized ControlNet at 512².

    python benchmarks/animate_memory_speed.py --models ../shared/parity/A/weights --size 64 --steps 4 \\
        --frames 16 64 256

``--path fast`` runs ``fast=True``; ``--code DIR`` imports ``magicanimate_cli`` from another checkout
(a git worktree of an earlier commit) to compare two versions on the same machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time
code, models, size, steps, frames, device, path = sys.argv[1:8]
if code:
    sys.path.insert(0, code)
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from magicanimate_cli.animate import pin_cpu_kernels, load_pipeline
pin_cpu_kernels()
size, steps, frames = int(size), int(steps), int(frames)
pipe = load_pipeline(models, device=device)
held = [0]
try:
    from magicanimate_cli.animate import pipeline as module
    from magicanimate_cli.animate.residuals import StepResiduals
    class Spy(StepResiduals):
        def take(self, index):
            out = super().take(index)
            held[0] = max(held[0], self.held_frames)
            return out
    module.StepResiduals = Spy
except ImportError:  # an older checkout: no residual store to spy on
    held[0] = None
rng = np.random.default_rng(0)
ref = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
motion = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
count = [0]
cuda = device.startswith("cuda")
if cuda:  # the allocator's own peak; on a CPU, the profiler's allocator events
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
start = time.perf_counter()
with profile(activities=[ProfilerActivity.CPU], profile_memory=not cuda) as prof:
    pipe(ref, motion, num_inference_steps=steps, fast=path == "fast",
         on_frame=lambda i, f: count.__setitem__(0, count[0] + 1))
seconds = time.perf_counter() - start
if cuda:
    peak = torch.cuda.max_memory_allocated() - before
else:
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_tensor_mib": peak / 2**20, "held_frames": held[0], "frames": count[0]}))
"""

# ControlNet residuals per frame of the SD1.5 ControlNet at 512² (latents 64²):
# 3×320@64², 320@32², 2×640@32², 640@16², 2×1280@16², 1280@8², 2×1280@8², mid 1280@8².
SD15_RESIDUAL_ELEMENTS = 3 * 320 * 4096 + 320 * 1024 + 2 * 640 * 1024 + 640 * 256 + 2 * 1280 * 256 + 1280 * 64 * 3 + 1280 * 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="../shared/parity/A/weights")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--path", choices=("default", "fast"), default="default")
    parser.add_argument("--code", default="", help="a checkout whose magicanimate_cli to import (default: this one)")
    args = parser.parse_args()

    print(f"{'frames':>7} {'seconds':>9} {'s/frame':>8} {'peak RSS MB':>12} {'peak tensor MiB':>16}"
          f" {'residual frames held':>21} {'official holds':>15}")
    for frames in args.frames:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, args.code, args.models, str(args.size), str(args.steps), str(frames), args.device, args.path],
            capture_output=True, text=True, check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{frames:>7} {result['seconds']:>9.2f} {result['seconds'] / frames:>8.3f} {result['peak_rss_mb']:>12.0f}"
            f" {result['peak_tensor_mib']:>16.1f} {str(result['held_frames']):>21} {-(-frames // 16) * 16:>15}"
            f"   (process {time.perf_counter() - started:.1f} s)"
        )
    per_frame = SD15_RESIDUAL_ELEMENTS * 2 / 2**20
    print(f"\nOfficial ControlNet cache at 512², float16: {per_frame:.1f} MiB per frame "
          f"({per_frame * 1000 / 1024:.1f} GiB for 1000 frames); ours holds at most 28 frames' rows "
          f"(16-frame windows overlapping by 4) while a window's UNet runs: {per_frame * 28:.0f} MiB whatever the length.")


if __name__ == "__main__":
    main()
