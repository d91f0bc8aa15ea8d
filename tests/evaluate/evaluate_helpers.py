"""What the metric tests share: a generated/ground-truth pair of frames and of clip folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magicanimate_cli import media


def pair(rng, shape=(24, 20, 3), noise=30):
    truth = rng.integers(0, 256, shape, dtype=np.uint8)
    generated = np.clip(truth.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return generated, truth


def write_clip(path: Path, frames: np.ndarray) -> Path:
    media.write_frames(path, frames, overwrite=True)
    return path


def clip_set(root: Path, rng, names=("a", "b"), frames=6, size=(24, 20)) -> tuple[Path, Path]:
    for name in names:
        truth = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
        generated = np.clip(truth.astype(int) + rng.integers(-25, 26, truth.shape), 0, 255).astype(np.uint8)
        write_clip(root / "gt" / name, truth)
        write_clip(root / "gen" / name, generated)
    return root / "gen", root / "gt"
