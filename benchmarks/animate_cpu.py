"""Animator on CPU at the real SD1.5 architecture size: default (official computation) vs fast path.

Random weights in the official layout at the real sizes (built once with ``animate_gpu.build_weights``,
float32, about 6.5 GB), 128², 2 steps, fp32, 2 threads, 16 frames by default. Each path runs in a
fresh process (so peak RSS is per path) and prints load, denoise and decode seconds, per-module
seconds, peak RSS and the uint8 differences between the paths; then the ratios.

    python benchmarks/animate_cpu.py --weights /tmp/ma-real-fp32
    python benchmarks/animate_cpu.py --weights /tmp/ma-tiny --tiny          # a dry run (tiny models, 64²)

A real-size run needs about 11 GB of memory per process; run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORKER = r"""
import json, resource, sys, time
sys.path[:0] = [sys.argv[1]]
from magicanimate_cli.animate import pin_cpu_kernels
pin_cpu_kernels()
import numpy as np, torch
from animate_gpu import inputs, timed_run
from magicanimate_cli.animate import load_pipeline
weights, size, steps, frames, fast, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1", sys.argv[7]
t0 = time.perf_counter()
pipe = load_pipeline(weights, device="cpu", dtype="float32")
load_s = time.perf_counter() - t0
reference, motion = inputs(frames, size)
result = timed_run(pipe, reference, motion, steps, lambda: None, False, fast=fast)
np.save(out, result.pop("_frames"))
result.update(load_s=round(load_s, 2), peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              threads=torch.get_num_threads())
print(json.dumps(result))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="Folder for the random weights (built once).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models at 64² (a dry run).")
    parser.add_argument("--size", type=int, default=None, help="Default 128 (64 with --tiny).")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    size = args.size or (64 if args.tiny else 128)

    sys.path.insert(0, str(ROOT))
    from animate_gpu import ensure_weights

    ensure_weights(args.weights, args.tiny, dtype="float32")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for path in ("default", "fast"):
            out = Path(scratch) / f"{path}.npy"
            proc = subprocess.run(
                [sys.executable, "-c", WORKER, str(ROOT), str(args.weights), str(size), str(args.steps), str(args.frames),
                 "1" if path == "fast" else "0", str(out)],
                capture_output=True, text=True, env=env, cwd=str(ROOT.parent),
            )
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[path]["frames_array"] = str(out)
            print(json.dumps({"path": path, **{k: v for k, v in results[path].items() if k != "frames_array"}}), flush=True)
        import numpy as np

        a, b = np.load(results["default"]["frames_array"]), np.load(results["fast"]["frames_array"])
        diff = np.abs(a.astype(int) - b.astype(int))
    d, f = results["default"], results["fast"]
    print(json.dumps({
        "fast_vs_default_uint8": {"max": int(diff.max()), "identical_pct": round(float((diff == 0).mean() * 100), 3)},
        "denoise_speedup": round(d["denoise_s"] / f["denoise_s"], 3),
        "decode_speedup": round(d["decode_s"] / f["decode_s"], 3),
        "peak_rss_gb": {"default": d["peak_rss_gb"], "fast": f["peak_rss_gb"]},
    }))


if __name__ == "__main__":
    main()
