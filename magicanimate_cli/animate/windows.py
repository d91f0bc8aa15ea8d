"""Context windows: which frames each UNet call of a denoising step sees.

``loop`` (the official, ``official-inference.md`` §6.1): the official pipeline calls AnimateDiff's
``uniform`` context scheduler with step 0 and stride 1, which reduces to: windows of ``size`` frames
start every ``size - overlap`` frames while the start is inside the clip, and the last windows wrap
around from the end of the clip into its start, so the motion module sees the clip's last frames
followed by its first ones, as one loop.

``open``: no window wraps. The first starts at the first frame, the last ends at the last frame,
and the starts in between are spread evenly, as few windows as keep neighbours sharing at least
``overlap`` frames. Nothing at the clip's end reaches its start.
"""

from __future__ import annotations

SCHEDULES = ("loop", "open")  # --context-schedule


def context_windows(num_frames: int, size: int = 16, overlap: int = 4, schedule: str = "loop") -> list[list[int]]:
    """Frame indices of every window, in processing order."""
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size={size} overlap={overlap}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if num_frames <= size:
        return [list(range(num_frames))]
    stride = size - overlap
    if schedule == "loop":
        return [[(start + k) % num_frames for k in range(size)] for start in range(0, num_frames, stride)]
    span = num_frames - size  # the last window's start
    gaps = -(-span // stride)  # the fewest steps of at most ``stride`` from 0 to ``span``
    return [list(range(start, start + size)) for start in (round(i * span / gaps) for i in range(gaps + 1))]


def last_use(windows: list[list[int]]) -> dict[int, int]:
    """For every frame, the index of the last window that reads it."""
    last: dict[int, int] = {}
    for index, window in enumerate(windows):
        for frame in window:
            last[frame] = index
    return last


def padded_length(num_frames: int, multiple: int) -> int:
    """The clip length after edge padding to a multiple of the noise clip length."""
    return -(-num_frames // multiple) * multiple
