"""Preprocessing throughput without the models: frames, field of view, crop and flip (speed only).

    python benchmarks/preprocess.py [--size 1280x720] [--seconds 4] [--fps 30] [--fov 1024x512]

Writes a synthetic video (a moving bright figure on a smooth, slightly noisy background, h264) of the given
size, length and rate, runs ``magicanimate preprocess --skip densepose,matte --flip`` on it in a
temporary folder, and prints the seconds and frames per second of each stage from meta.json,
then the same for a re-run (which should find the clip up to date).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_video(path: Path, width: int, height: int, seconds: float, fps: float) -> Path:
    from magicanimate_cli import media

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.dstack([xx * 100 / width + 40, yy * 100 / height + 30, (xx + yy) * 50 / (width + height) + 60])
    background = np.clip(smooth + rng.integers(-6, 7, (height, width, 3)), 0, 255).astype(np.uint8)  # like a real scene
    count = int(seconds * fps)
    with media.FrameWriter(path, fps) as writer:
        for i in range(count):
            frame = background.copy()
            x = int(width * 0.3 + width * 0.3 * (i / max(1, count - 1)))
            frame[height // 6 : height - height // 10, x : x + width // 10] = (230, 200, 180)
            writer.write(frame)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the video")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--fov", default="1024x512")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from magicanimate_cli.preprocess import preprocess

    with tempfile.TemporaryDirectory() as tmp:
        video = synthetic_video(Path(tmp) / "clip.mp4", width, height, args.seconds, args.fps)
        started = time.perf_counter()
        result = preprocess([video], Path(tmp) / "out", skip="densepose,matte", flip=True, fov=args.fov)
        total = time.perf_counter() - started
        meta = json.loads((Path(tmp) / "out" / "clip" / "meta.json").read_text())
        frames = meta["frames"]
        print(f"video {width}x{height}, {args.seconds:g} s at {args.fps:g} fps -> {frames} frames at 25 fps, fov {args.fov}, 512x512")
        for stage, record in meta["stages"].items():
            if record.get("seconds") is not None:
                print(f"  {stage:<9} {record['seconds']:7.2f} s  {frames / max(record['seconds'], 1e-9):7.1f} frames/s")
        print(f"  {'total':<9} {total:7.2f} s  {frames / total:7.1f} frames/s  (status {result.clips[0]['status']})")
        started = time.perf_counter()
        again = preprocess([video], Path(tmp) / "out", skip="densepose,matte", flip=True, fov=args.fov)
        print(f"  re-run    {time.perf_counter() - started:7.2f} s  (status {again.clips[0]['status']})")


if __name__ == "__main__":
    main()
