"""``magicanimate frames``: a video -> a folder of ``00000.png`` frames at a fixed frame rate.

``media.extract_frames`` does the work with ffmpeg:
its ``fps`` filter re-times the video to ``fps`` (25 by default, the rate MagicAnimate was trained
and is run at), dropping or repeating frames by timestamp the way ffmpeg always does, and the
frames are written as lossless RGB PNGs (zlib level 1: ffmpeg's default level is about six times
slower for files only ~10 % smaller). The folder appears atomically.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class FramesResult:
    output: str
    frames: int
    fps: float
    source_fps: float
    width: int
    height: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


MAX_FPS = 1000  # above any camera a clip of people comes from; far above it ffmpeg fails, late and misleadingly
MIN_FPS = 0.01  # a frame every 100 s (a slide show); ffmpeg fails to encode below 1e-4, after all the work


def check_fps(fps: float) -> float:
    if not fps or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise UserError(f"--fps {fps:g}: must be a number of frames per second from {MIN_FPS:g} to {MAX_FPS} (25 is MagicAnimate's)")
    return float(fps)


def expected_count(source_frames: int, source_fps: float, fps: float) -> int:
    """About how many frames the fps filter gives (progress bar total only)."""
    if source_fps <= 0:
        return source_frames
    return max(1, round(source_frames / source_fps * fps))


def frames(
    video: Path | str, output: Path | str, *, fps: float = DEFAULT_FPS, allow_truncated: bool = False, overwrite: bool = False, progress=None
) -> FramesResult:
    """Extract the frames of ``video`` at ``fps`` into the folder ``output`` (00000.png, ...).

    A video that does not decode to its end is refused unless ``allow_truncated``."""
    from . import media

    video, output = media.input_path(video), media.output_path(output)
    fps = check_fps(fps)
    if video.is_dir():
        raise UserError(f"{video}: is a folder; `magicanimate frames` takes a video file (a folder of frames needs no extraction)")
    if media.is_image(video):
        raise UserError(f"{video}: is an image; `magicanimate frames` takes a video file")
    if media.is_video(output) or media.is_image(output):
        kind = "a video" if media.is_video(output) else "an image"
        raise UserError(f"{output}: looks like {kind} file; -o takes the folder that receives the PNG frames")
    info = media.probe(video)
    media.check_output(output, overwrite, protect=(video,))
    started = time.perf_counter()
    count = extract_into(video, info, output, fps, replace=overwrite, progress=progress, allow_truncated=allow_truncated)
    return FramesResult(str(output), count, fps, info.fps, info.width, info.height, round(time.perf_counter() - started, 3))


def extract_into(video: Path, info, output: Path, fps: float, *, replace: bool, progress=None, allow_truncated: bool = False) -> int:
    """Extract ``video`` (``info``: its ``media.probe``) at ``fps`` into the folder ``output``,
    which appears whole or not at all (replacing one there only with ``replace``); the count."""
    from . import media
    from .files import commit, discard, temp_beside

    tmp = temp_beside(output)
    try:
        count = media.extract_frames(
            video, tmp, fps=fps, progress=progress, expected=expected_count(info.frames, info.fps, fps), allow_truncated=allow_truncated
        )
        if count == 0 and info.frames > 0:  # ffmpeg's fps filter keeps no frame of a clip shorter than one period
            raise UserError(f"{video}: the video ({info.frames} frames at {info.fps:g} fps) is shorter than one frame at --fps {fps:g}; raise --fps")
        if count == 0:
            raise UserError(f"{video}: ffmpeg produced no frames; is the video empty?")
        commit(tmp, output, replace=replace)
        tmp = None
    finally:
        discard(tmp)
    return count
