"""Closed-loop context windows (``official-inference.md`` §6.1).

The official pipeline calls AnimateDiff's ``uniform`` context scheduler with step 0 and stride 1,
which reduces to: windows of ``size`` frames start every ``size - overlap`` frames while the start
is inside the clip, and the last windows wrap around from the end of the clip into its start.
"""

from __future__ import annotations


def context_windows(num_frames: int, size: int = 16, overlap: int = 4) -> list[list[int]]:
    """Frame indices of every window, in processing order."""
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size={size} overlap={overlap}")
    if num_frames <= size:
        return [list(range(num_frames))]
    stride = size - overlap
    return [[(start + k) % num_frames for k in range(size)] for start in range(0, num_frames, stride)]


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
