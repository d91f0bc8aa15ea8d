"""Context windows: which frames each UNet call of a denoising step sees.

``loop`` (the official, ``official-inference.md`` §6.1): the official pipeline calls AnimateDiff's
``uniform`` context scheduler with step 0 and stride 1, which reduces to: windows of ``size`` frames
start every ``size - overlap`` frames while the start is inside the clip, and the last windows wrap
around from the end of the clip into its start, so the motion module sees the clip's last frames
followed by its first ones, as one loop.

``open``: no window wraps. The first starts at the first frame, the last ends at the last frame,
and the starts in between are spread evenly, as few windows as keep neighbours sharing at least
``overlap`` frames. Nothing at the clip's end reaches its start.

Where windows overlap, a frame's noise prediction is the mean of theirs: ``flat`` (the official)
weighs every window alike; ``pyramid`` weighs each by the frame's place in it, most in the middle
and least at its edges (1, 2, …, 8, 8, …, 2, 1 for 16 frames), so a frame near a window's edge takes
more from the neighbour whose middle it is in, and the hand-over from one window to the next is
gradual instead of a jump where a window starts or ends.
"""

from __future__ import annotations

SCHEDULES = ("loop", "open")  # --context-schedule
FUSIONS = ("flat", "pyramid")  # --context-fusion


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


def window_weights(length: int, fusion: str = "flat") -> list[int]:
    """The weight of each of a window's ``length`` frames in the mean of overlapping windows."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if fusion == "flat":
        return [1] * length
    return [min(k + 1, length - k) for k in range(length)]


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
