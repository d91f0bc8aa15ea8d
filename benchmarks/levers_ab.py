"""Fast-path levers against each other in one process, alternating calls (the spread between
processes on a shared machine is larger than one lever's gain).

Each ``--variant NAME:FIELD=VALUE,...`` is a ``FastPath`` with those fields changed (``NAME:`` alone
is ``FastPath()``). The variants run in turn, ``--rounds`` times, rotating which goes first, on the
same reference and motion; prints one JSON line per call and a summary: each variant's seconds,
its fastest call and round-by-round ratio against the first variant, and whether its latents are
bitwise the first variant's. With ``--decode`` every call also decodes its frames, and the
denoising and the decoding are timed apart (the decoding's levers: ``decode_chunk``, and
``upsample_phases`` in the VAE's decoder).

    python benchmarks/levers_ab.py --weights /tmp/ma-real-fp32 --size 128 --frames 16 --steps 1 \\
        --rounds 3 --variant new: --variant before:shared_skips=0,upsample_phases=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def parse_variant(text: str, fast_path: type) -> tuple[str, object]:
    """``NAME:FIELD=VALUE,...`` → (name, ``FastPath``); values are integers (0/1 for switches)."""
    name, _, fields = text.partition(":")
    known = {f.name: f for f in dataclasses.fields(fast_path)}
    changes = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"error: --variant {text!r}: FastPath has no field {key!r} (fields: {', '.join(known)})")
        changes[key] = bool(int(value)) if known[key].type in (bool, "bool") else int(value)
    return name, fast_path(**changes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="models folder in the official layout")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", required=True, help="NAME:FIELD=VALUE,... (at least two)")
    parser.add_argument("--decode", action="store_true", help="decode the frames too, timed apart from the denoising")
    args = parser.parse_args(argv)

    from magicanimate_cli.animate import pin_cpu_kernels

    pin_cpu_kernels()  # the CLI's kernels, before torch is imported
    import numpy as np
    import torch

    from magicanimate_cli.animate import load_pipeline
    from magicanimate_cli.animate.pipeline import FastPath

    variants = dict(parse_variant(v, FastPath) for v in args.variant)
    if len(variants) < 2:
        raise SystemExit("error: give at least two --variant with different names")
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.weights, device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    motion = rng.integers(0, 256, (args.frames, args.size, args.size, 3), dtype=np.uint8)
    marks = {}

    def progress(stage, done, total):
        if stage == "denoise":  # the last report of the denoising: the decoding starts
            marks["decode"] = time.perf_counter()

    call = {"num_inference_steps": args.steps, "output_type": "np" if args.decode else "latent", "seed": 0,
            "progress": progress}
    pipe(reference, motion, fast=next(iter(variants.values())), **call)  # warm-up: first-call set-up and page cache

    names = list(variants)
    parts = ("s", "denoise_s", "decode_s") if args.decode else ("s",)
    seconds = {part: {name: [] for name in names} for part in parts}
    outputs = {}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            result = pipe(reference, motion, fast=variants[name], **call)
            end = time.perf_counter()
            outputs[name] = (result.latents, result.frames if args.decode else None)
            timed = {"s": end - start, "denoise_s": marks["decode"] - start, "decode_s": end - marks["decode"]}
            for part in parts:
                seconds[part][name].append(round(timed[part], 3))
            print(json.dumps({"variant": name, "round": round_, **{part: seconds[part][name][-1] for part in parts}}), flush=True)
    first = names[0]
    summary = {
        "size": args.size, "frames": args.frames, "steps": args.steps, "threads": args.threads, "decode": args.decode,
        "variants": {name: dataclasses.asdict(fast) for name, fast in variants.items()},
    }
    for part in parts:
        times, suffix = seconds[part], "" if part == "s" else "_" + part.removesuffix("_s")
        summary.update({
            f"seconds{suffix}": times,
            f"fastest{suffix}": {name: min(s) for name, s in times.items()},
            f"over_{first}_fastest{suffix}": {n: round(min(times[n]) / min(times[first]), 3) for n in names[1:]},
            f"over_{first}_by_round{suffix}": {n: [round(b / a, 3) for a, b in zip(times[first], times[n])] for n in names[1:]},
        })
    summary[f"bitwise_{first}"] = {n: torch.equal(outputs[n][0], outputs[first][0]) for n in names[1:]}
    if args.decode:
        summary[f"frames_max_diff_{first}"] = {n: float(np.abs(outputs[n][1] - outputs[first][1]).max()) for n in names[1:]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
