"""The ControlNet residuals of one denoising step, held only as long as a window still reads them.

The official code runs the ControlNet on consecutive chunks of ``clip_length`` frames (a frame's
residuals depend in the last bits on the other frames of its batch, so the chunks stay) and keeps
every frame's residuals on the device for the whole step, so its memory grows with the clip. Here a
chunk is computed when a window first reads one of its frames; ``take`` gives the window its rows
before its UNet call and keeps, of each chunk, only the rows of frames a later window reads. The
UNet consumes the list it is given (``shared_halves.guided_forward``), so on the up path, where the
activations peak, a 16-frame clip holds no residuals at all and a longer clip at most 28 frames'
rows with 16-frame windows overlapping by 4 (the next window's first frames and the first frames
of the clip, which the closing window wraps into), whatever its length. The values are exactly the
official's (rows are copied, never recomputed); only their lifetime changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .windows import last_use

Residuals = tuple[list[torch.Tensor], torch.Tensor]  # down (one tensor per skip), mid; rows are frames


class StepResiduals:
    """ControlNet residuals for ``windows`` (taken in order), computed by ``compute(frames)``."""

    def __init__(self, windows: list[list[int]], chunk: int, compute: Callable[[list[int]], Residuals]):
        self._windows = windows
        self._last = last_use(windows)
        self._chunk = chunk
        self._compute = compute
        # first frame of a chunk -> (the frames of the rows still held, down, mid)
        self._chunks: dict[int, tuple[list[int], list[torch.Tensor], torch.Tensor]] = {}
        self._taken = 0

    @property
    def held_frames(self) -> int:
        """Frames whose residuals are held now."""
        return sum(len(frames) for frames, _, _ in self._chunks.values())

    def take(self, index: int) -> Residuals:
        """The residuals of window ``index``, rows in the window's frame order; call for 0, 1, 2, …

        The caller owns the returned list. Of the chunks computed so far only the rows of frames
        a later window reads stay here (copied out of the chunk when the others are done with).
        """
        if index != self._taken:
            raise ValueError(f"windows are taken in order: expected {self._taken}, got {index}")
        self._taken += 1
        window, size = self._windows[index], self._chunk
        for start in sorted({f // size * size for f in window} - self._chunks.keys()):
            frames = list(range(start, start + size))
            down, mid = self._compute(frames)
            self._chunks[start] = (frames, list(down), mid)

        whole = self._chunks[window[0] // size * size]
        if whole[0] == window:  # the window is one whole chunk: its tensors, no copy
            down, mid = list(whole[1]), whole[2]
        else:
            rows = []
            for frame in window:
                frames, chunk_down, chunk_mid = self._chunks[frame // size * size]
                rows.append((chunk_down, chunk_mid, frames.index(frame)))
            down = [torch.stack([d[k][j] for d, _, j in rows]) for k in range(len(rows[0][0]))]
            mid = torch.stack([m[j] for _, m, j in rows])

        for start, (frames, chunk_down, chunk_mid) in list(self._chunks.items()):
            keep = [j for j, frame in enumerate(frames) if self._last.get(frame, -1) > index]
            if not keep:
                del self._chunks[start]
            elif len(keep) < len(frames):
                rows = torch.tensor(keep, device=chunk_mid.device)
                kept = [d.index_select(0, rows) for d in chunk_down]
                self._chunks[start] = ([frames[j] for j in keep], kept, chunk_mid.index_select(0, rows))
        return down, mid
