"""What ``magicanimate batch`` saves over running ``magicanimate animate`` once per task.

Writes N animate tasks (one reference, one short motion, N seeds) and runs them twice: one
``magicanimate animate`` process per task (each imports torch and loads the weights), then one
``magicanimate batch`` with ``--jobs J`` (each worker loads the weights once). Prints the wall time
of both and the per-task seconds the batch records (first task of a worker = load + warm-up).
Also times the up-front check of a large manifest (``--check-tasks``: every task parsed against
the registry and every output compared with the others, before anything runs).

    python benchmarks/batch.py --models ../shared/parity/A/weights --size 64 --steps 2 --tasks 6 --jobs 1
    python benchmarks/batch.py --check-tasks 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models")
    parser.add_argument("--check-tasks", type=int, default=0, help="only time checking a manifest of this many animate tasks")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.check_tasks:
        check_only(args.check_tasks)
        return
    if not args.models:
        parser.error("--models is required (or --check-tasks N)")

    from magicanimate_cli import media

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    rng = np.random.default_rng(0)
    media.write_png(work / "ref.png", rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), replace=True)
    media.write_frames(work / "pose", rng.integers(0, 256, (args.frames, args.size, args.size, 3), dtype=np.uint8))
    common = ["--models", str(Path(args.models).resolve()), "--size", str(args.size), "--steps", str(args.steps),
              "--context-frames", str(min(16, args.frames)), "--context-overlap", "1", "--device", args.device]
    tasks = [["ref.png", "pose", "-o", f"{{}}/out{seed}", "--seed", str(seed), *common] for seed in range(args.tasks)]

    start = time.perf_counter()
    for task in tasks:
        argv = [a.format("single") for a in task]
        subprocess.run([sys.executable, "-m", "magicanimate_cli", "animate", *argv, "--json"], cwd=work, check=True, capture_output=True)
    single = time.perf_counter() - start

    with open(work / "tasks.jsonl", "w") as handle:
        for task in tasks:
            handle.write(json.dumps({"command": "animate", "args": [a.format("batch") for a in task]}) + "\n")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "magicanimate_cli", "batch", "tasks.jsonl", "--jobs", str(args.jobs), "--json"],
                         cwd=work, capture_output=True, text=True)
    batch = time.perf_counter() - start
    summary = json.loads(run.stdout)
    per_task = [r["seconds"] for r in summary["results"]]
    print(f"{args.tasks} animate tasks ({args.frames} frames, {args.size}², {args.steps} steps, {args.device}), weights {args.models}")
    print(f"  one process per task : {single:7.1f} s  ({single / args.tasks:.1f} s/task)")
    print(f"  batch --jobs {args.jobs:<2}       : {batch:7.1f} s  ({batch / args.tasks:.1f} s/task), done {summary['done']}, failed {summary['failed']}")
    print(f"  batch per-task seconds: {', '.join(f'{s:.1f}' for s in per_task)}")
    print(f"  models loaded per worker: {sorted({r['worker']: r['models_loaded'] for r in summary['results']}.values())}")


def check_only(count: int) -> None:
    """Seconds to read and check a manifest of ``count`` animate tasks (nothing runs)."""
    from magicanimate_cli.batch import _check_tasks
    from magicanimate_cli.batch.manifest import read_manifest
    from magicanimate_cli.batch.tasks import TaskRunner

    work = Path(tempfile.mkdtemp(prefix="batch-check-"))
    with open(work / "tasks.jsonl", "w") as handle:
        for index in range(count):
            task = ["ref.png", f"poses/{index}.mp4", "-o", f"out/{index // 1000}/{index}.mp4", "--seed", str(index), "--steps", "25"]
            handle.write(json.dumps({"command": "animate", "args": task}) + "\n")
    start = time.perf_counter()
    tasks = read_manifest(work / "tasks.jsonl")
    read = time.perf_counter() - start
    _check_tasks(work / "tasks.jsonl", tasks, TaskRunner(workdir=work))
    checked = time.perf_counter() - start - read
    print(f"manifest of {count} animate tasks: read {read:.2f} s, checked (arguments + output clashes) {checked:.2f} s "
          f"({checked / count * 1e6:.0f} µs/task)")


if __name__ == "__main__":
    main()
