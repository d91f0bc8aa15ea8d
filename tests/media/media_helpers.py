"""What the media tests share: ffmpeg run on made-up inputs, and a short video written through ``FrameWriter``."""

import subprocess
from pathlib import Path

import numpy as np

from magicanimate_cli import media


def run_ffmpeg(*args) -> None:
    subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def write_video(path, count: int = 10, **sound) -> Path:
    with media.FrameWriter(path, 25.0, **sound) as writer:
        for _ in range(count):
            writer.write(np.full((16, 16, 3), 90, np.uint8))
    return path
