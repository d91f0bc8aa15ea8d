"""Time the two CPU levers of the UNet's up path on the real SD1.5 shapes, module by module.

``FastPath.shared_skips`` (``shared_halves.resnet_on_shared_skip``) against the resnet on the skip repeated
for both guidance halves, and ``FastPath.upsample_phases`` (``upsample_phases.py``) against
diffusers' ``Upsample2D``, for every up-block resnet and upsampler of the SD1.5 UNet at a working
size (random weights: only the shapes matter). Both sides have the fast path's other CPU lever,
the small convolutions laid side by side (``side_by_side.py``), where it applies, as ``--fast``
runs them. Prints one JSON line per module (best of ``--repeat`` seconds, the ratio, the largest
difference of the outputs; for an upsampler also the seconds to sum its kernels, once per call)
and a summary line.
``--all-shapes`` applies the levers below their size thresholds too, which is how the thresholds
were chosen.

    python benchmarks/up_path_levers.py --size 128 --frames 16 --threads 2 --repeat 5 [--all-shapes]
"""

from __future__ import annotations

import argparse
import json
import time


def _best(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="working size in pixels (latents: size / 8)")
    parser.add_argument("--frames", type=int, default=16, help="frames per window (two guidance halves of them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--all-shapes", action="store_true",
                        help="apply the levers below their size thresholds too (to check the thresholds)")
    parser.add_argument("--channel-divisor", type=int, default=1,
                        help="divide every width by this (a quick check of the script, not a measurement)")
    args = parser.parse_args(argv)

    from magicanimate_cli.animate import pin_cpu_kernels

    pin_cpu_kernels()  # the CLI's kernels, before torch is imported
    import torch
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    from magicanimate_cli.animate import shared_halves, upsample_phases
    from magicanimate_cli.animate.shared_halves import resnet_on_shared_skip
    from magicanimate_cli.animate.side_by_side import install_side_by_side
    from magicanimate_cli.animate.unet import FrameCount, WindowGroupNorm
    from magicanimate_cli.animate.upsample_phases import install_upsample_phases, phase_kernels

    if args.all_shapes:
        shared_halves.SHARED_SKIP_MIN_PIXELS, upsample_phases.MIN_SIDE = 1, 1

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames = FrameCount()
    frames.value = args.frames
    halves = 2
    channels = [c // args.channel_divisor for c in (1280, 1280, 640, 320)]  # the SD1.5 up path's block widths
    totals = {"shared_skips": [0.0, 0.0], "upsample_phases": [0.0, 0.0]}
    output = channels[0]
    with torch.no_grad():
        for block in range(4):
            side = args.size // 8 // 2 ** (3 - block)
            previous, output, below = output, channels[block], channels[min(block + 1, 3)]
            for j in range(3):
                skip_channels = below if j == 2 else output
                hidden_channels = previous if j == 0 else output
                resnet = ResnetBlock2D(in_channels=hidden_channels + skip_channels, out_channels=output, temb_channels=1280)
                resnet.eval().requires_grad_(False)  # as loaded for inference (a trained weight gets the stock forward)
                for norm in (resnet.norm1, resnet.norm2):
                    norm.__class__ = WindowGroupNorm
                    norm.frames = frames
                install_side_by_side(resnet).on = True
                hidden = torch.randn(halves * args.frames, hidden_channels, side, side)
                skip = torch.randn(args.frames, skip_channels, side, side)
                temb = torch.randn(halves * args.frames, 1280)
                stock = lambda: resnet(torch.cat([hidden, skip.repeat(halves, 1, 1, 1)], dim=1), temb)  # noqa: E731
                lever = lambda: resnet_on_shared_skip(resnet, hidden, skip, temb, halves)  # noqa: E731
                _report("shared_skips", f"up_blocks.{block}.resnets.{j}", (hidden_channels, skip_channels, output, side),
                        side * side >= shared_halves.SHARED_SKIP_MIN_PIXELS,
                        _best(stock, args.repeat), _best(lever, args.repeat), (lever() - stock()).abs().max().item(), totals)
            if block < 3:
                upsampler = Upsample2D(output, use_conv=True).eval().requires_grad_(False)
                install_side_by_side(upsampler).on = True
                switch = install_upsample_phases(upsampler)
                x = torch.randn(halves * args.frames, output, side, side)
                stock = lambda: Upsample2D.forward(upsampler, x)  # noqa: E731
                switch.on = True
                _report("upsample_phases", f"up_blocks.{block}.upsamplers.0", (output, side), side >= upsample_phases.MIN_SIDE,
                        _best(stock, args.repeat), _best(lambda: upsampler(x), args.repeat),
                        (upsampler(x) - stock()).abs().max().item(), totals,
                        fold_s=round(_best(lambda: phase_kernels(upsampler.conv.weight), args.repeat), 4))
    print(json.dumps({"size": args.size, "frames": args.frames, "threads": args.threads, "all_shapes": args.all_shapes,
                      **{f"{k}_s": {"stock": round(a, 4), "lever": round(b, 4), "ratio": round(a / b, 3)} for k, (a, b) in totals.items()}}))


def _report(lever: str, module: str, shape, taken: bool, stock_s: float, lever_s: float, diff: float, totals: dict, **extra) -> None:
    if taken:  # summed over the modules the lever takes (below its threshold it runs the stock module)
        totals[lever][0] += stock_s
        totals[lever][1] += lever_s
    print(json.dumps({"lever": lever, "module": module, "shape": shape, "stock_s": round(stock_s, 4),
                      "lever_s": round(lever_s, 4), "ratio": round(stock_s / lever_s, 3), "max_abs_diff": diff,
                      "taken": taken, **extra}), flush=True)


if __name__ == "__main__":
    main()
