"""Batched DensePose inference against a one-frame-at-a-time loop (what vid2densepose does).

Both runs use the same detectron2 model (R_50_FPN from the project's config), the same frames and
the same preprocessing; the loop calls the estimator with one frame, the batched run with
``--batch-size`` frames. Random weights detect nobody, so by default both runs get one person box
per frame (``model.inference(..., detected_instances=...)``) and the DensePose head runs as it
would on a real video; ``--detect`` runs the full detector instead (no DensePose head then,
unless ``--weights`` are real). Also prints how many label pixels differ between the two runs.

Needs detectron2 + DensePose (see docs/densepose.md). Example:

    python benchmarks/densepose_batching.py --frames 8 --batch-size 4 --size 640x480 --device cpu
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", default="640x480", help="WxH of the frames")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", default=None, help="zoo model name or YAML (default R_50_FPN_s1x)")
    parser.add_argument("--weights", default=None, help="real weights (.pkl/.pth); default random")
    parser.add_argument("--detect", action="store_true", help="run the detector instead of given boxes")
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions (best is kept)")
    args = parser.parse_args()

    import torch

    from magicanimate_cli.densepose import estimator as est
    from magicanimate_cli.densepose.charts import frame_labels

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = est.resolve_device(args.device)
    torch.manual_seed(0)
    cfg = est.build_config(args.config, device=device, min_score=0.8, max_people=1)
    model = est.Detectron2Estimator(cfg, weights=args.weights, name="benchmark")

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(args.frames)]
    boxes = None
    if not args.detect:  # one person-sized box per frame, drifting a little
        boxes = []
        for i in range(args.frames):
            x0, y0 = width * 0.3 + i, height * 0.1 + i
            boxes.append(np.array([[x0, y0, x0 + width * 0.35, y0 + height * 0.8]], np.float32))

    def run(batch_size: int):
        labels = []
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        started = time.perf_counter()
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            found = model(chunk, boxes=None if boxes is None else boxes[start : start + batch_size])
            labels += [frame_labels(d, height, width, 0.8, 1)[0] for d in found]
        sync()
        return time.perf_counter() - started, labels

    run(1)  # warm-up (allocator, kernels)
    single = min(run(1)[0] for _ in range(args.repeat))
    single_labels = run(1)[1] if args.repeat > 1 else None
    batched, batched_labels = float("inf"), None
    for _ in range(args.repeat):
        seconds, batched_labels = run(args.batch_size)
        batched = min(batched, seconds)
    if single_labels is None:
        _, single_labels = run(1)

    differ = sum(int((a != b).sum()) for a, b in zip(single_labels, batched_labels))
    person = sum(int((a > 0).sum()) for a in single_labels)
    print(f"device {device} ({torch.get_num_threads()} threads)" if device == "cpu" else f"device {torch.cuda.get_device_name()}")
    print(f"torch {torch.__version__}, frames {args.frames} of {width}x{height}, mode {'detect' if args.detect else 'given boxes'}, cpus {os.cpu_count()}")
    print(f"one frame at a time: {single:.2f} s ({args.frames / single:.2f} frames/s)")
    print(f"batch of {args.batch_size}:        {batched:.2f} s ({args.frames / batched:.2f} frames/s)")
    print(f"speed-up (loop / batched): {single / batched:.2f}x")
    print(f"label pixels that differ between the two runs: {differ} of {person} person pixels")


if __name__ == "__main__":
    main()
