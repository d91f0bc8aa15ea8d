"""Animator on CPU at the real SD1.5 architecture size: default (official computation) vs fast path vs official code.

Random weights in the official layout at the real sizes (built once with ``animate_gpu.build_weights``,
float32, about 6.5 GB), 128², 2 steps, fp32, 2 threads, 16 frames by default, guidance 7.5, context
16, overlap 4, seed 1. Each path (``--paths``: ``default``, ``fast``, ``compile``) runs in a fresh
process (so peak RSS is per path) on the same reference and motion arrays, and prints load, denoise
and decode seconds, per-module seconds, peak RSS, peak anonymous and file-backed resident memory
(``memory_sampler.py``), minor page faults (``compile`` also its compile time, spent in a
one-step call before the timed one); then the uint8 differences between the paths and the ratios
(the default path's and the official's seconds over each of our paths'). With ``--repeat N`` every path runs N
times, interleaved (each round starts with another path, so no path always pays the page-in of the
weights), and the summary takes each path's fastest run (and its highest peak RSS); it also gives the
ratios within each round (``*_over_ours_by_round``) and their median (``*_over_ours_median``).

    python benchmarks/animate_cpu.py --weights /tmp/ma-real-fp32
    python benchmarks/animate_cpu.py --weights /tmp/ma-tiny --tiny          # a dry run (tiny models, 64²)

With ``--official CHECKOUT --official-python PYTHON`` the official MagicAnimate code (a checkout of
github.com/magic-research/magic-animate, d2bc3bc3, which is not part of this repository) runs too, in
a fresh process of PYTHON (an environment with the official code's dependencies: torch, diffusers
0.21, transformers 4.32, omegaconf, accelerate, einops, numpy<2), through ``official_worker.py``
beside this file, on the same weights and arrays; the summary then gives official/ours for load, denoise
and decode seconds (above 1: ours is faster), every peak RSS, and the uint8 differences against
the official frames (the official worker runs with ``--contiguous-vae-input``, a memory-layout
choice that only selects the same convolution kernel our pipeline gets; see official_worker.py):

    python benchmarks/animate_cpu.py --weights /tmp/ma-real-fp32 \
        --official ../magic-animate --official-python ../official-venv/bin/python

``--paths fast:glibc`` (any path with ``:glibc``) runs that path with glibc's default malloc, and
``--official-heap`` also runs the official code with the malloc settings our pipeline applies on CPU
(``magicanimate_cli/animate/malloc.py``), so the gain of those settings and the rest can be told
apart.

``tests/test_benchmarks_official.py`` checks that ``official_worker.py`` reproduces parity fixture A.
A real-size run needs about 11 GB of memory per process; run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SEED, GUIDANCE = 1, 7.5  # what animate_gpu.timed_run passes to our pipeline
WORKER = r"""
import json, resource, sys, time
sys.path[:0] = [sys.argv[1]]
from magicanimate_cli.animate import pin_cpu_kernels
pin_cpu_kernels()
import numpy as np, torch
from animate_gpu import timed_run
from memory_sampler import MemorySampler
from magicanimate_cli.animate import load_pipeline
from magicanimate_cli.animate.pipeline import FastPath
weights, reference, motion, steps, path, out = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7]
base = path.split(":")[0]
fast = {"default": False, "fast": True, "compile": FastPath(compile=True)}[base]
sampler = MemorySampler()
t0 = time.perf_counter()
pipe = load_pipeline(weights, device="cpu", dtype="float32")
load_s = time.perf_counter() - t0
reference, motion = np.load(reference), np.load(motion)
extra = {}
if base == "compile":  # compile first (a one-step call: the same graphs), then time
    t0 = time.perf_counter()
    pipe(reference, motion, num_inference_steps=1, output_type="latent", fast=fast)
    extra["compile_s"] = round(time.perf_counter() - t0, 1)
result = timed_run(pipe, reference, motion, steps, lambda: None, False, fast=fast)
np.save(out, result.pop("_frames"))
usage = resource.getrusage(resource.RUSAGE_SELF)
result.update(load_s=round(load_s, 2), peak_rss_gb=round(usage.ru_maxrss / 2**20, 2), minor_faults=usage.ru_minflt,
              threads=torch.get_num_threads(), **sampler.peaks(), **extra)
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
    parser.add_argument("--paths", default="default,fast",
                        help="Our paths to run: default, fast, compile (compiled in a one-step call first, "
                             "reported as compile_s; minutes on 2 CPU threads); a path with ':glibc' "
                             "(fast:glibc) runs with glibc's default malloc (MALLOC_MMAP_MAX_=65536, so "
                             "load_pipeline leaves malloc alone: animate/malloc.py).")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Runs per path, interleaved and rotated; the summary uses each path's fastest run.")
    parser.add_argument("--official", type=Path, default=None, help="A checkout of the official magic-animate code.")
    parser.add_argument("--official-python", type=Path, default=None,
                        help="The Python of an environment the official code runs in (with --official).")
    parser.add_argument("--official-heap", action="store_true",
                        help="Also run the official code with the malloc settings of animate/malloc.py "
                             "(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2147483647; without our malloc_trim calls), reported as official:heap.")
    args = parser.parse_args()
    our_paths = args.paths.split(",")
    unknown = [p for p in our_paths if p.removesuffix(":glibc") not in ("default", "fast", "compile")]
    if unknown:
        parser.error(f"--paths: unknown {', '.join(unknown)}")
    if args.official_heap and not args.official:
        parser.error("--official-heap needs --official")
    if bool(args.official) != bool(args.official_python):
        parser.error("--official and --official-python go together")
    size = args.size or (64 if args.tiny else 128)

    sys.path.insert(0, str(ROOT))
    import numpy as np
    from animate_gpu import ensure_weights, inputs

    from magicanimate_cli.animate import pin_cpu_kernels

    pin_cpu_kernels()  # the same pinned kernels in every worker, the official one included (through the environment)
    ensure_weights(args.weights, args.tiny, dtype="float32")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results, frames = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        reference, motion = Path(scratch) / "reference.npy", Path(scratch) / "motion.npy"
        for file, array in zip((reference, motion), inputs(args.frames, size)):
            np.save(file, array)
        def out_file(path: str) -> Path:
            return Path(scratch) / f"{path.replace(':', '-')}.npy"

        commands = {
            path: [sys.executable, "-c", WORKER, str(ROOT), str(args.weights), str(reference), str(motion), str(args.steps),
                   path, str(out_file(path))]
            for path in our_paths
        }
        glibc = {**env, "MALLOC_MMAP_MAX_": "65536"}  # glibc's default: reuse_freed_memory leaves malloc alone
        if args.official:  # the official code last in the first round
            official = [
                str(args.official_python), str(ROOT / "official_worker.py"), "--checkout", str(args.official.resolve()),
                "--weights", str(args.weights.resolve()), "--reference", str(reference), "--motion", str(motion),
                "--size", str(size), "--steps", str(args.steps), "--seed", str(SEED), "--guidance-scale", str(GUIDANCE),
                "--threads", str(args.threads), "--contiguous-vae-input",
            ]
            for path in ("official", "official:heap") if args.official_heap else ("official",):
                commands[path] = official + ["--out", str(out_file(path))]
        heap = {**env, "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}  # reuse_freed_memory's settings
        paths = list(commands)
        for round_ in range(args.repeat):  # rotated each round: no path always runs first (page-in of the weights)
            for path in paths[round_ % len(paths):] + paths[: round_ % len(paths)]:
                out = out_file(path)
                path_env = {"glibc": glibc, "heap": heap}.get(path.partition(":")[2], env)
                proc = subprocess.run(commands[path], capture_output=True, text=True, env=path_env, cwd=str(ROOT.parent))
                if proc.returncode:
                    raise SystemExit(f"{path}: " + proc.stderr[-3000:])
                results.setdefault(path, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
                frames[path] = np.load(out).astype(int)
                print(json.dumps({"path": path, "round": round_, **results[path][-1]}), flush=True)

    def uint8_diff(a: str, b: str) -> dict:
        if frames[a].shape != frames[b].shape:
            return {"shapes": [list(frames[a].shape), list(frames[b].shape)]}
        diff = np.abs(frames[a] - frames[b])
        return {"max": int(diff.max()), "identical_pct": round(float((diff == 0).mean() * 100), 3)}

    def best(path: str, field: str) -> float:  # the least disturbed of the runs
        return min(r[field] for r in results[path])

    ours = [p for p in paths if not p.startswith("official")]
    summary = {
        "runs_per_path": args.repeat,
        "best_s": {path: {stage: best(path, f"{stage}_s") for stage in ("load", "denoise", "decode")} for path in paths},
        "peak_rss_gb": {path: max(r["peak_rss_gb"] for r in results[path]) for path in paths},
        "peak_anon_gb": {path: max(r["peak_anon_gb"] for r in results[path]) for path in paths},
    }
    for other in ("default", "official", "official:heap"):  # other's best seconds over ours: above 1, ours is faster
        if other in results:
            summary[f"{other}_over_ours"] = {
                stage: {p: round(best(other, f"{stage}_s") / best(p, f"{stage}_s"), 3) for p in ours if p != other}
                for stage in ("denoise", "decode", "load")
            }
            summary[f"uint8_vs_{other}"] = {p: uint8_diff(p, other) for p in ours if p != other}
            # the same ratio within each round (the paths of a round ran back to back), and its median:
            # less moved by one disturbed run than the fastest-against-fastest ratio
            by_round = {
                stage: {p: [round(o[f"{stage}_s"] / r[f"{stage}_s"], 3) for o, r in zip(results[other], results[p])]
                        for p in ours if p != other}
                for stage in ("denoise", "decode")
            }
            summary[f"{other}_over_ours_by_round"] = by_round
            summary[f"{other}_over_ours_median"] = {
                stage: {p: round(statistics.median(ratios), 3) for p, ratios in by_stage.items()}
                for stage, by_stage in by_round.items()
            }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
