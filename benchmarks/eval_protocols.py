"""How far DisCo's pixel metrics are from the corrected ones, and how fast they run.

Uses scikit-image's sample photographs (shipped with the package) as ground truth and degraded
copies as "generated" frames: JPEG at several qualities, a 1-pixel shift, Gaussian noise and a
brightness offset. Prints PSNR / L1 / SSIM under both protocols, then frames per second of the
pixel metrics at 512x512 on this machine.

    python benchmarks/eval_protocols.py
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image
from skimage import data

from magicanimate_cli.evaluate import frames as F


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def square(image: np.ndarray, size: int = 512) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.BICUBIC))


def main() -> None:
    rng = np.random.default_rng(0)
    photos = {"astronaut": square(data.astronaut()), "chelsea": square(data.chelsea()), "coffee": square(data.coffee())}
    degradations = {
        "jpeg q90": lambda x: jpeg(x, 90),
        "jpeg q50": lambda x: jpeg(x, 50),
        "jpeg q10": lambda x: jpeg(x, 10),
        "shift 1px": lambda x: np.roll(x, 1, axis=1),
        "noise s=8": lambda x: np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8),
        "noise s=25": lambda x: np.clip(x + rng.normal(0, 25, x.shape), 0, 255).astype(np.uint8),
        "brighter +20": lambda x: np.clip(x.astype(int) + 20, 0, 255).astype(np.uint8),
    }
    header = f"{'case':<24}{'PSNR corr':>10}{'PSNR disco':>11}{'L1 corr':>9}{'L1 disco':>10}{'SSIM rgb':>9}{'SSIM gray':>10}{'SSIM disco':>11}"
    print(header)
    print("-" * len(header))
    for photo_name, photo in photos.items():
        for name, degrade in degradations.items():
            gen = degrade(photo)
            print(
                f"{photo_name + ' ' + name:<24}{F.psnr(gen, photo):>10.2f}{F.disco_psnr(gen, photo):>11.2f}"
                f"{F.l1(gen, photo):>9.4f}{F.disco_l1(gen, photo):>10.2e}{F.ssim_rgb(gen, photo):>9.4f}"
                f"{F.ssim_gray(gen, photo):>10.4f}{F.disco_ssim(gen, photo):>11.4f}"
            )
    gen, truth = jpeg(photos["astronaut"], 50), photos["astronaut"]
    print("\nframes/s of one metric on 512x512 RGB frames (this machine, one process):")
    for label, fn in (
        ("corrected l1", F.l1), ("corrected psnr", F.psnr), ("corrected ssim (rgb)", F.ssim_rgb), ("corrected ssim_gray", F.ssim_gray),
        ("disco l1", F.disco_l1), ("disco psnr", F.disco_psnr), ("disco ssim", F.disco_ssim),
    ):  # fmt: skip
        fn(gen, truth)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            fn(gen, truth)
            count += 1
        print(f"  {label:<22}{count / (time.perf_counter() - start):8.1f}")


if __name__ == "__main__":
    main()
