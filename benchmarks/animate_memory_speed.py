"""Animator speed and memory against clip length.

Runs the animator in a fresh process per clip length (so peak RSS is per run) and prints wall time,
peak resident memory and the peak number of frames whose ControlNet residuals are held, next to
what the official pipeline would hold (every frame). Also prints the official residual cache size
for the real SD1.5-sized ControlNet at 512².

    python benchmarks/animate_memory_speed.py --models ../shared/parity/A/weights --size 64 --steps 4 \\
        --frames 16 64 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time
import numpy as np
from magicanimate_cli.animate import pin_cpu_kernels, load_pipeline
from magicanimate_cli.animate import pipeline as module
pin_cpu_kernels()
models, size, steps, frames, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pipe = load_pipeline(models, device=device)
held = [0]
original = module.MagicAnimatePipeline._controlnet_for
def spy(self, window, residuals, *args):
    original(self, window, residuals, *args)
    held[0] = max(held[0], len(residuals))
module.MagicAnimatePipeline._controlnet_for = spy
rng = np.random.default_rng(0)
ref = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
motion = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
count = [0]
start = time.perf_counter()
pipe(ref, motion, num_inference_steps=steps, on_frame=lambda i, f: count.__setitem__(0, count[0] + 1))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "held_frames": held[0], "frames": count[0]}))
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
    args = parser.parse_args()

    print(f"{'frames':>7} {'seconds':>9} {'s/frame':>8} {'peak RSS MB':>12} {'residual frames held':>21} {'official holds':>15}")
    for frames in args.frames:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, args.models, str(args.size), str(args.steps), str(frames), args.device],
            capture_output=True, text=True, check=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{frames:>7} {result['seconds']:>9.2f} {result['seconds'] / frames:>8.3f} {result['peak_rss_mb']:>12.0f}"
            f" {result['held_frames']:>21} {-(-frames // 16) * 16:>15}   (process {time.perf_counter() - started:.1f} s)"
        )
    per_frame = SD15_RESIDUAL_ELEMENTS * 2 / 2**20
    print(f"\nOfficial ControlNet cache at 512², float16: {per_frame:.1f} MiB per frame "
          f"({per_frame * 1000 / 1024:.1f} GiB for 1000 frames); ours holds at most 3 chunks of 16 frames: "
          f"{per_frame * 48:.0f} MiB whatever the length.")


if __name__ == "__main__":
    main()
