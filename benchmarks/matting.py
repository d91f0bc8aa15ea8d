"""Matting throughput: frames per second of ``matting.matte`` with random weights (speed only).

    python benchmarks/matting.py [--model pp-humansegv2-lite] [--size 512x512] [--frames 16]
                                 [--batch-sizes 1,8] [--device cpu]

Builds the PaddleSeg network with random weights in a temporary models folder (timing does not
depend on the weights), writes ``--frames`` copies of scikit-image's astronaut photo resized to
``--size`` into a frames folder, and times the whole stage (read, infer, upsample, write PNGs)
once per batch size after one warm-up run. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pp-humansegv2-lite")
    parser.add_argument("--size", default="512x512", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--smooth", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from PIL import Image
    from skimage import data

    from magicanimate_cli import matting

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        network = matting.build_network(args.model)
        import paddle

        path = matting.weights_path(args.model, root / "models")
        path.parent.mkdir(parents=True)
        paddle.save(network.state_dict(), str(path))
        segmenter = matting.load_segmenter(args.model, root / "models", device=args.device, download=False)
        print(f"paddle import + build + load: {time.perf_counter() - started:.2f} s")

        photo = np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.BILINEAR))
        (root / "frames").mkdir()
        for i in range(args.frames):
            Image.fromarray(photo).save(root / "frames" / f"{i:05d}.png")

        matting.matte(root / "frames", root / "warm", segmenter=segmenter, model=args.model, batch_size=1)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            out = root / f"out-{batch}"
            began = time.perf_counter()
            matting.matte(root / "frames", out, segmenter=segmenter, model=args.model, batch_size=batch, smooth=args.smooth)
            seconds = time.perf_counter() - began
            print(
                f"{args.model} {width}x{height} batch {batch} smooth {args.smooth} on {segmenter.device}: "
                f"{args.frames / seconds:.1f} frames/s ({1000 * seconds / args.frames:.0f} ms/frame)"
            )


if __name__ == "__main__":
    main()
