"""Repairs over a sequence of label maps: fill frames without a person, smooth flicker.

The paper's supplement names DensePose flicker and failures as the first limitation of the
animation; these two repairs act on the label maps (never on colours), before rendering:

* ``fill_sources``: a frame where nobody was found takes the labels of the nearest frame where
  somebody was (the earlier one on a tie);
* ``majority``: each pixel takes the most frequent label over a centred window of K frames
  (shortened at the ends of the clip); ties go to the centre frame's label, then to the frame
  nearest the centre (earlier first), so a pixel only changes when a label really wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fill_sources(missing: Sequence[bool]) -> list[int]:
    """For each frame, the frame whose labels it shows: itself, or the nearest good frame if missing.

    When no frame is good every frame keeps its own (empty) labels.
    """
    count = len(missing)
    good = [i for i in range(count) if not missing[i]]
    if not good:
        return list(range(count))
    sources = []
    cursor = 0  # index into good of the first good frame >= i
    for i in range(count):
        if not missing[i]:
            sources.append(i)
            continue
        while cursor < len(good) and good[cursor] < i:
            cursor += 1
        before = good[cursor - 1] if cursor > 0 else None
        after = good[cursor] if cursor < len(good) else None
        if after is None or (before is not None and i - before <= after - i):
            sources.append(before)
        else:
            sources.append(after)
    return sources


def window(index: int, count: int, k: int) -> range:
    """The frames of the centred K-frame window around ``index``, clipped to the clip."""
    radius = k // 2
    return range(max(0, index - radius), min(count, index + radius + 1))


def majority(frames: Sequence[np.ndarray], center: int) -> np.ndarray:
    """Per-pixel majority label over ``frames`` (``H×W`` uint8 each); ties favour ``frames[center]``.

    Only pixels where the frames disagree are counted, which keeps this cheap on the mostly
    unchanging maps DensePose gives.
    """
    base = frames[center]
    if len(frames) == 1:
        return base.copy()
    stack = np.stack(frames).reshape(len(frames), -1)
    differ = np.flatnonzero((stack != stack[center]).any(axis=0))
    result = base.copy().reshape(-1)
    if differ.size == 0:
        return result.reshape(base.shape)
    values = stack[:, differ]
    # priority order: centre, then by distance to the centre, earlier first
    order = sorted(range(len(frames)), key=lambda j: (abs(j - center), j))
    best_label = values[center].copy()
    best_count = np.zeros(differ.size, dtype=np.int32)
    for j in order:
        count = (values == values[j]).sum(axis=0, dtype=np.int32)
        better = count > best_count
        best_label[better] = values[j][better]
        best_count[better] = count[better]
    result[differ] = best_label
    return result.reshape(base.shape)
