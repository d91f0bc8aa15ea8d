"""Where a fresh ``animate`` process spends its time before the first denoising step finishes.

Runs ``magicanimate_cli.animate.animate`` (the function the CLI calls) in fresh processes, one per
``--repeat``, on random weights in the official layout (``animate_gpu.build_weights``), and prints one
JSON line per process with the seconds of each phase, measured from the start of the interpreter:
``python`` (interpreter start-up), ``import_torch``, ``import_pipeline`` (diffusers, transformers and
the pipeline module), ``checks`` (settings, the weights folder against its checksum record, the
outputs, the device), ``read_motion``, ``load`` (``load_pipeline``: reading the tensors, building
the models, moving them to the device), ``denoise_start`` (the text embedding and the reference
latents done, the first step begins), then the first step's calls (appearance encoder,
ControlNet, first UNet window; synchronised), and ``first_step`` (the end of the first window).
The process stops there.

With ``--server`` the same animation goes to a ``magicanimate serve`` process instead (the
models stay loaded between calls; ``docs/serve.md``): the server is started and runs one whole
task first (``server_warm_up``: its imports and the loading), then every fresh client process
prints ``python``, ``import_cli`` (the CLI and the client), ``denoise_start`` (the denoising's
first report reaching the client: the inputs are read and the first step begins), ``first_step``
(the end of the first window, as above) and ``done`` (the task's result received; ``--steps``
steps and the decoding).

    python benchmarks/animate_first_step.py --weights /scratch/ma-weights          # GPU, fp16, 512²
    python benchmarks/animate_first_step.py --weights /tmp/ma-tiny --tiny          # CPU dry run
    python benchmarks/animate_first_step.py --weights /tmp/ma-tiny --tiny --server # warm re-runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, os, sys, time
clock = time.perf_counter
start = float(sys.argv[1])
marks = {"python": time.time() - start}
t0 = clock() - marks["python"]
def mark(name):
    marks[name] = round(clock() - t0, 3)
import torch
mark("import_torch")
import magicanimate_cli.animate as A
import magicanimate_cli.animate.pipeline as P
import magicanimate_cli.animate.stage as S
mark("import_pipeline")
sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
load = S.load_pipeline
def timed_load(*a, **k):
    mark("checks_and_read_motion")
    pipe = load(*a, **k)
    sync()
    mark("load")
    return pipe
S.load_pipeline = timed_load  # where animate() looks it up
for name in ("_appearance", "_controlnet", "_window"):
    original = getattr(P.MagicAnimatePipeline, name)
    def wrapped(self, *a, _o=original, _n=name, **k):
        sync()
        marks.setdefault(_n.strip("_") + "_start", round(clock() - t0, 3))
        out = _o(self, *a, **k)
        sync()
        marks.setdefault(_n.strip("_") + "_end", round(clock() - t0, 3))
        return out
    setattr(P.MagicAnimatePipeline, name, wrapped)
class FirstStep(Exception):
    pass
def progress(stage, done, total, *rest):
    if stage == "denoise" and "denoise_start" not in marks:  # the first report: the denoising begins
        mark("denoise_start")
    elif stage == "denoise":
        mark("first_step")
        raise FirstStep
ref, motion, out, models, size = sys.argv[2:7]
try:
    A.animate(ref, motion, out, models=models, size=int(size), overwrite=True, progress=progress)
except FirstStep:
    pass
marks["python"] = round(marks["python"], 3)
print(json.dumps(marks))
"""

CLIENT = r"""
import json, sys, time
clock = time.perf_counter
start = float(sys.argv[1])
marks = {"python": round(time.time() - start, 3)}
t0 = clock() - marks["python"]
def mark(name):
    marks.setdefault(name, round(clock() - t0, 3))
import magicanimate_cli.cli
from magicanimate_cli import server
mark("import_cli")
def progress(stage, done, total):
    if stage == "denoise":
        mark("denoise_start" if "denoise_start" not in marks else "first_step")
sock, ref, motion, out, models, size, steps = sys.argv[2:9]
server.submit("animate", [ref, motion, "-o", out, "--models", models, "--size", size, "--steps", steps, "--overwrite"],
              socket=sock, progress=progress)
mark("done")
print(json.dumps(marks))
"""


def server_runs(weights: Path, reference: Path, motion: Path, out: Path, size: int, steps: int, repeat: int, env: dict):
    """Start ``magicanimate serve``, send it one warm-up task and then ``repeat`` more, each from a
    fresh client process; yield each client's marks (``run``: ``"server_warm_up"``, 0, 1, ...)."""
    sock = out.parent / "serve.sock"
    sock.unlink(missing_ok=True)  # left by an interrupted run: wait for this server's own
    serve = subprocess.Popen([sys.executable, "-m", "magicanimate_cli", "serve", "--socket", str(sock), "--json"],
                             cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not sock.exists():
            if serve.poll() is not None:
                raise SystemExit(serve.communicate()[1][-3000:])
            time.sleep(0.05)
        task = [str(reference), str(motion), str(out), str(weights), str(size), str(steps)]
        for run in range(-1, repeat):
            proc = subprocess.run([sys.executable, "-c", CLIENT, repr(time.time()), str(sock), *task],
                                  capture_output=True, text=True, cwd=str(ROOT), env=env)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            yield {"run": "server_warm_up" if run < 0 else run, **json.loads(proc.stdout.strip().splitlines()[-1])}
    finally:
        serve.terminate()
        serve.communicate(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="Folder for the random weights (built once).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models at 64² (a CPU dry run).")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="Fresh processes (the first may find a cold disk cache).")
    parser.add_argument("--size", type=int, help="Frame size (default 512; 64 with --tiny).")
    parser.add_argument("--server", action="store_true", help="Through a `magicanimate serve` process, after one warm-up task.")
    parser.add_argument("--steps", type=int, default=2, help="Denoising steps of each --server task (it runs to its end).")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT)]
    from animate_gpu import ensure_weights, inputs, save_inputs

    ensure_weights(args.weights, args.tiny)
    size = args.size or (64 if args.tiny else 512)
    reference, motion = inputs(args.frames, size)
    scratch = Path(args.weights).parent / "animate_first_step"
    save_inputs(scratch, reference, motion)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if args.server:
        for marks in server_runs(args.weights, scratch / "ref.png", scratch / "motion", scratch / "out", size, args.steps, args.repeat, env):
            print(json.dumps({"server": True, "steps": args.steps, **marks}), flush=True)
        return
    for run in range(args.repeat):
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, repr(time.time()), str(scratch / "ref.png"), str(scratch / "motion"),
             str(scratch / "out"), str(args.weights), str(size)],
            capture_output=True, text=True, cwd=str(ROOT), env=env,
        )
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        print(json.dumps({"run": run, **json.loads(proc.stdout.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
