"""Animator speed at the real SD1.5 architecture size, with random weights (a GPU benchmark).

Builds random weights in the official on-disk layout (tests/factories.py at the real sizes,
``factories.SD15``: UNet 320/640/1280/1280, ViT-L text encoder, sd-vae-ft-mse VAE, full ControlNet
and appearance encoder; about 5.4 GB in float16) into WEIGHTS unless already there, then prints, for each path —
``default`` (the official computation, bitwise on CPU: the "before"), ``fast`` (``--fast``) and
``compile`` (``--compile``), the last two also as ``*_no_graph`` (phase ``no_graph``: the appearance
encoder run eagerly on every step instead of replayed from a CUDA graph, ``FastPath(cuda_graph=False)``)
and as ``*_cudnn_benchmark`` (phase ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` on, so
cuDNN times its convolution algorithms for each shape once and keeps the fastest) —: load time,
seconds per frame at 16 and 64 frames (512², 25 steps, fp16), denoise and decode seconds, peak
``torch.cuda.max_memory_allocated``, and, in a separate 16-frame run with a synchronisation around
each call, seconds per stage (UNet windows, ControlNet, appearance encoder, VAE decode); the compile
time; the uint8 differences against the default path and between each path and its ``*_no_graph``
twin (zero: a replay runs the eager kernels); bf16; the CLI end to end (a cold and a warm
process: seconds to the first denoising step, and in all); and (``serve``) commands sent to a
``magicanimate serve`` after a warm-up command: seconds from the client's start to the denoising's
first report and to the end of the first window (``animate_first_step.server_runs``).

    python benchmarks/animate_gpu.py --weights /scratch/ma-weights            # on a GPU machine
    python benchmarks/animate_gpu.py --weights /tmp/ma-tiny --tiny --quick    # a dry run on CPU

``--tiny`` uses tiny models at 64² (runs on a CPU); ``--quick`` shrinks every run; ``--budget S``
skips the phases that would not fit in S seconds; ``--phases`` picks the phases. One JSON record per
measurement is printed (and appended to ``--log``); a table of the runs comes last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def build_weights(root: Path, *, tiny: bool = False, dtype: str = "float16") -> Path:
    """Random weights in the official layout at the real SD1.5 sizes (``tiny``: the test sizes, on four
    UNet levels as the real model has), built by ``tests/factories.py``."""
    import dataclasses

    import torch

    import factories

    size = dataclasses.replace(factories.TINY, block_out_channels=(32, 32, 64, 64), sample_size=64) if tiny else factories.SD15
    factories.make_official_weights(root, size=size, dtype=getattr(torch, dtype))
    (Path(root) / ".complete").write_text("ok")
    return Path(root)


def ensure_weights(root: Path, tiny: bool, dtype: str = "float16") -> Path:
    if not (Path(root) / ".complete").is_file():
        build_weights(root, tiny=tiny, dtype=dtype)
    return Path(root)


def inputs(frames: int, size: int):
    """A smooth reference and DensePose-like motion (coloured ellipses on viridis(0))."""
    import numpy as np

    rng = np.random.default_rng(3)
    reference = np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size] / size
    colours = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37], [180, 222, 44]], np.uint8)
    motion = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        motion[i] = colours[0]
        for p in range(1, 6):
            cx, cy = 0.5 + 0.25 * np.sin(i / 9 + p), 0.3 + 0.1 * p + 0.05 * np.cos(i / 7)
            motion[i][((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.05) ** 2 < 1] = colours[p]
    return reference, motion


class StageTimer:
    """Seconds spent in each stage of a pipeline call, synchronised around every call.

    The stages are the pipeline's own model calls (``_window``, ``_controlnet``, ``_appearance``)
    and ``vae.decode``; wrapping them (not the modules) keeps the timers outside compiled code.
    """

    STAGES = {"_window": "unet_windows", "_controlnet": "controlnet", "_appearance": "appearance_encoder"}

    def __init__(self, pipe, sync) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo = []
        for method, name in self.STAGES.items():
            self._wrap(pipe, method, name, sync)
        self._wrap(pipe.vae, "decode", "vae_decode", sync)

    def _wrap(self, owner, attribute, name, sync):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            sync()
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.calls[name] = self.calls.get(name, 0) + 1
            return out

        setattr(owner, attribute, timed)  # an instance attribute shadows the method
        self._undo.append(lambda: vars(owner).pop(attribute, None))

    def close(self):
        for undo in self._undo:
            undo()


def timed_run(pipe, reference, motion, steps, sync, cuda: bool, stages: bool = True, **kwargs) -> dict:
    """One pipeline call: total, denoise and decode seconds, peak memory; per-stage seconds with ``stages``."""
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks = {}

    def progress(stage, done, total):
        if stage == "denoise":  # the last window of the last step ends the denoising
            marks["decode"] = time.perf_counter()

    timer = StageTimer(pipe, sync) if stages else None
    sync()
    t0 = time.perf_counter()
    try:
        out = pipe(reference, motion, num_inference_steps=steps, guidance_scale=7.5, seed=1, progress=progress, **kwargs)
        sync()
    finally:
        if timer:
            timer.close()
    end = time.perf_counter()
    decode_start = marks.get("decode", end)
    return {
        "frames": len(motion), "steps": steps, "s": round(end - t0, 3), "s_per_frame": round((end - t0) / len(motion), 4),
        "denoise_s": round(decode_start - t0, 3), "decode_s": round(end - decode_start, 3),
        **({"stages_s": {k: round(v, 3) for k, v in timer.seconds.items()}, "calls": timer.calls} if timer else {}),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "_frames": out.frames,
    }


FIRST_STEP = r"""
import json, sys, time
t0 = time.perf_counter()
from magicanimate_cli.animate import animate
marks = {}
def progress(stage, done, total, *rest):
    if stage == "denoise" and "started" not in marks:  # the first report: the denoising begins
        marks["started"] = True
    elif stage == "denoise" and "first_step" not in marks:
        marks["first_step"] = round(time.perf_counter() - t0, 2)
ref, motion, out, models, compile_ = sys.argv[1:6]
kwargs = dict(models=models, overwrite=True, progress=progress, compile=compile_ == "1")
if len(sys.argv) > 6:
    kwargs.update(size=int(sys.argv[6]), steps=int(sys.argv[7]))
animate(ref, motion, out, **kwargs)
print(json.dumps({"first_step_s": marks.get("first_step"), "total_s": round(time.perf_counter() - t0, 2)}))
"""


def save_inputs(scratch: Path, reference, motion) -> None:
    """``scratch/ref.png`` and ``scratch/motion/00000.png, ...``: the inputs as the CLI reads them."""
    from PIL import Image

    (scratch / "motion").mkdir(parents=True, exist_ok=True)
    Image.fromarray(reference).save(scratch / "ref.png")
    for i, frame in enumerate(motion):
        Image.fromarray(frame).save(scratch / "motion" / f"{i:05d}.png")


def cli_runs(args, reference, motion, record, scratch: Path, compiled: bool) -> None:
    """The library call the CLI makes, in fresh processes: seconds to the first step, and in all."""
    import subprocess

    save_inputs(scratch, reference, motion)
    extra = ["64", "2"] if args.tiny else ["512", "25"]
    for label in ("compile_cold", "compile_warm") if compiled else ("cold", "warm"):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", FIRST_STEP, str(scratch / "ref.png"), str(scratch / "motion"), str(scratch / f"out_{label}"),
             str(args.weights), "1" if compiled else "0", *extra], capture_output=True, text=True, cwd=str(ROOT),
        )
        fields = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"stderr": proc.stderr[-800:]}
        record(event="library_process", run=label, rc=proc.returncode, frames=len(motion), wall_s=round(time.perf_counter() - t0, 2), **fields)


def serve_runs(args, reference, motion, record, scratch: Path) -> None:
    """Commands sent to a warm ``magicanimate serve``: seconds to the denoising and the first step."""
    import os

    from animate_first_step import server_runs

    save_inputs(scratch, reference, motion)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    size, steps = (64, 2) if args.tiny else (512, 25)
    for marks in server_runs(args.weights, scratch / "ref.png", scratch / "motion", scratch / "out", size, steps, 2, env):
        record(event="serve", frames=len(motion), steps=steps, **marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="Folder for the random weights (built once).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models at 64² (runs on a CPU).")
    parser.add_argument("--quick", action="store_true", help="Shrink every run (a dry run of the script).")
    parser.add_argument("--device", default=None, help="Default: cuda when available, else cpu.")
    parser.add_argument("--log", type=Path, default=None, help="Append every record to this JSONL file.")
    parser.add_argument("--budget", type=float, default=None, help="Skip the phases that would not fit in this many seconds.")
    parser.add_argument("--phases", default="default,no_graph,fast,bf16,cli,serve,compile,cudnn_benchmark,cli_compile",
                        help="Comma-separated phases; they run in this order: default, fast, bf16, cli (fresh "
                             "processes), serve (commands sent to a warm `magicanimate serve`), compile, "
                             "cudnn_benchmark (fast, and compile when compiled, with cuDNN's algorithm search on), "
                             "cli_compile; no_graph adds the fast and compile paths without the appearance encoder's "
                             "CUDA graph.")
    args = parser.parse_args()

    from magicanimate_cli.animate import pin_cpu_kernels

    pin_cpu_kernels()
    import numpy as np
    import torch

    from magicanimate_cli.animate import load_pipeline
    from magicanimate_cli.animate.pipeline import FastPath

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    started = time.perf_counter()
    rows = []

    def record(**fields):
        fields = {k: v for k, v in fields.items() if not k.startswith("_")}
        fields["t"] = round(time.perf_counter() - started, 1)
        line = json.dumps(fields)
        print(line, flush=True)
        if args.log:
            with open(args.log, "a") as handle:
                handle.write(line + "\n")
        if fields.get("event") == "run":
            rows.append(fields)

    def fits(seconds: float) -> bool:
        ok = args.budget is None or time.perf_counter() - started + seconds < args.budget
        if not ok:
            record(event="skipped", needs_s=seconds)
        return ok

    record(event="start", torch=torch.__version__, device=torch.cuda.get_device_name(0) if cuda else "cpu")
    t0 = time.perf_counter()
    ensure_weights(args.weights, args.tiny)
    record(event="weights", s=round(time.perf_counter() - t0, 1))
    size = 64 if args.tiny else 512
    short, long_, steps = (4, 8, 2) if args.quick else (16, 64, 25)
    reference, motion = inputs(long_, size)
    dtype = "float16" if cuda else "float32"

    t0 = time.perf_counter()
    pipe = load_pipeline(args.weights, device, dtype)
    sync()
    resident = (lambda: round(torch.cuda.memory_allocated() / 2**30, 3)) if cuda else (lambda: None)
    record(event="load", dtype=dtype, s=round(time.perf_counter() - t0, 2), resident_gib=resident())
    timed_run(pipe, reference, motion[:short], 2, sync, cuda, stages=False)  # warm-up: kernel selection, allocator
    frames = {}

    def measure(pipe, path: str, dtype: str, fast, lengths) -> None:
        for n in lengths:
            if not fits(60 if n == long_ else 15):
                return
            result = timed_run(pipe, reference, motion[:n], steps, sync, cuda, stages=False, fast=fast)
            video = result.pop("_frames")
            if dtype in ("float16", "float32"):
                frames[(path, n)] = video
            record(event="run", path=path, dtype=dtype, **result)
        if fits(15):
            result = timed_run(pipe, reference, motion[:short], steps, sync, cuda, fast=fast)
            result.pop("_frames")
            record(event="stages", path=path, dtype=dtype, **result)

    # the riskiest phases last: a run cut short by its time limit keeps what came before
    phases = set(args.phases.split(","))
    if "default" in phases:
        measure(pipe, "default", dtype, False, (short, long_))
    if "fast" in phases:  # the appearance encoder eagerly on every step, then replayed from a CUDA graph
        if "no_graph" in phases:
            measure(pipe, "fast_no_graph", dtype, FastPath(cuda_graph=False), (short, long_))
        measure(pipe, "fast", dtype, True, (short, long_))
    if "bf16" in phases and cuda and fits(60):
        t0 = time.perf_counter()
        other = load_pipeline(args.weights, device, "bfloat16")
        sync()  # resident_gib: both pipelines' weights (the bf16 runs' peaks include the fp16 pipeline's)
        record(event="load", dtype="bfloat16", s=round(time.perf_counter() - t0, 2), resident_gib=resident())
        timed_run(other, reference, motion[:short], 2, sync, cuda, stages=False)
        measure(other, "fast", "bfloat16", True, (short,))
        measure(other, "default", "bfloat16", False, (short,))
        del other
        torch.cuda.empty_cache()
    if "cli" in phases and fits(60):
        cli_runs(args, reference, motion[:short], record, Path(args.weights).parent / "animate_gpu_cli", compiled=False)
    if "serve" in phases and fits(90):
        serve_runs(args, reference, motion[:short], record, Path(args.weights).parent / "animate_gpu_serve")
    if "compile" in phases and fits(240):
        t0 = time.perf_counter()
        timed_run(pipe, reference, motion[:short], 2, sync, cuda, stages=False, fast=FastPath(compile=True))
        record(event="compile", dtype=dtype, s=round(time.perf_counter() - t0, 1))
        measure(pipe, "compile", dtype, FastPath(compile=True), (short, long_))
        if "no_graph" in phases:
            measure(pipe, "compile_no_graph", dtype, FastPath(compile=True, cuda_graph=False), (short, long_))
    if "cudnn_benchmark" in phases and fits(90):
        torch.backends.cudnn.benchmark = True  # the first call of each convolution shape times cuDNN's algorithms
        for path, fast in (("fast", True), ("compile", FastPath(compile=True))):
            if (path, short) in frames:  # measured above (compile: already compiled)
                timed_run(pipe, reference, motion[:short], 2, sync, cuda, stages=False, fast=fast)
                measure(pipe, f"{path}_cudnn_benchmark", dtype, fast, (short, long_))
        torch.backends.cudnn.benchmark = False
    pairs = [("default", "fast_no_graph"), ("default", "fast"), ("default", "compile"),
             ("fast_no_graph", "fast"), ("compile_no_graph", "compile"),
             ("fast", "fast_cudnn_benchmark"), ("compile", "compile_cudnn_benchmark")]
    for a, b in pairs:
        for n in (short, long_):
            if (a, n) in frames and (b, n) in frames:
                diff = np.abs(frames[(b, n)].astype(int) - frames[(a, n)].astype(int))
                record(event="diff", a=a, b=b, frames=n, max=int(diff.max()),
                       identical_pct=round(float((diff == 0).mean() * 100), 3))
    del pipe
    if "cli_compile" in phases and fits(90):
        cli_runs(args, reference, motion[:short], record, Path(args.weights).parent / "animate_gpu_cli", compiled=True)
    print("\n| path | dtype | frames | s | s/frame | denoise s | decode s | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['path']} | {r['dtype']} | {r['frames']} | {r['s']} | {r['s_per_frame']} | {r['denoise_s']} | {r['decode_s']} | {r['peak_gib']} |")


if __name__ == "__main__":
    main()
