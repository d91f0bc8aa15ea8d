"""What the DensePose tests share: an independent oracle of detectron2's label extraction and of
the repair's majority vote, the detections detectron2 returns, ``FakeEstimator`` and frame folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from magicanimate_cli.densepose.charts import Detections

# ../shared/reference/official-inference.md §10.3: label -> (VIRIDIS LUT index, RGB)
TABLE_10_3 = {
    0: (0, (68, 1, 84)), 1: (10, (71, 16, 99)), 2: (21, (72, 31, 112)), 3: (31, (71, 44, 122)),
    4: (42, (68, 57, 131)), 5: (53, (64, 70, 136)), 6: (63, (59, 81, 139)), 7: (74, (54, 93, 141)),
    8: (85, (49, 104, 142)), 9: (95, (44, 113, 142)), 10: (106, (40, 124, 142)), 11: (116, (37, 133, 142)),
    12: (127, (33, 144, 141)), 13: (138, (31, 154, 138)), 14: (148, (32, 163, 134)), 15: (159, (39, 173, 129)),
    16: (170, (53, 183, 121)), 17: (180, (70, 192, 111)), 18: (191, (92, 200, 99)), 19: (201, (115, 208, 86)),
    20: (212, (142, 214, 69)), 21: (223, (170, 220, 50)), 22: (233, (197, 224, 33)), 23: (244, (226, 228, 24)),
    24: (255, (253, 231, 37)),
}  # fmt: skip

S = 8  # logits resolution of the fake estimator (detectron2's is 112)
H, W = 48, 64


def oracle_resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize, align_corners=False (PyTorch's rule), in float64: an independent oracle."""

    def coords(out: int, size: int):
        src = np.maximum((np.arange(out) + 0.5) * (size / out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), size - 1)
        return i0, np.minimum(i0 + 1, size - 1), src - i0

    y0, y1, fy = coords(h, x.shape[1])
    x0, x1, fx = coords(w, x.shape[2])
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def oracle_labels(coarse: np.ndarray, fine: np.ndarray, box) -> tuple[tuple[int, int, int, int], np.ndarray]:
    x, y, w, h = (int(np.float32(v)) for v in box)
    size = (max(h, 1), max(w, 1))
    c = oracle_resize(coarse.astype(np.float64), *size).argmax(0)
    f = oracle_resize(fine.astype(np.float64), *size).argmax(0)
    return (x, y, w, h), (f * (c > 0)).astype(np.uint8)


def oracle_frame(people, height=H, width=W) -> np.ndarray:
    """Paint people (box, score, coarse, fine) in order, label > 0 overwriting."""
    out = np.zeros((height, width), np.uint8)
    for box, _score, coarse, fine in people:
        (x, y, w, h), labels = oracle_labels(coarse, fine, box)
        if w <= 0 or h <= 0:
            continue
        region = out[y : y + h, x : x + w]
        patch = labels[: region.shape[0], : region.shape[1]]
        region[patch > 0] = patch[patch > 0]
    return out


def person(label: int, box, score: float = 0.99, hole: str | None = None):
    """One detection whose fine logits pick ``label``; ``hole="left"`` makes the box's left half background."""
    fine = np.full((25, S, S), -4.0, np.float32)
    fine[label] = 4.0
    fine[(label % 24) + 1, : S // 4] = 5.0  # top quarter: the next part (structure the resize must keep)
    coarse = np.zeros((2, S, S), np.float32)
    coarse[1] = 1.0
    if hole == "left":
        coarse[1, :, : S // 2] = -1.0
    elif hole == "all":
        coarse[1] = -1.0
    return (np.array(box, np.float32), score, coarse, fine)


def detections(people) -> Detections:
    if not people:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2, S, S), np.float32), np.zeros((0, 25, S, S), np.float32))
    boxes, scores, coarse, fine = zip(*people)
    return Detections(np.stack(boxes), np.array(scores, np.float32), np.stack(coarse), np.stack(fine))


class FakeEstimator:
    """detectron2-shaped results; the frame's red channel at (0, 0) says which frame it is."""

    name = "fake"
    device = "cpu"

    def __init__(self, plan: dict[int, list], by_order: bool = False, fail_on_call: int | None = None):
        self.plan = plan
        self.by_order = by_order
        self.fail_on_call = fail_on_call
        self.batches: list[int] = []
        self.seen: list[int] = []

    def __call__(self, frames):
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise KeyboardInterrupt
        self.batches.append(len(frames))
        out = []
        for frame in frames:
            assert frame.dtype == np.uint8 and frame.shape == (H, W, 3)
            index = len(self.seen) if self.by_order else int(frame[0, 0, 0])
            self.seen.append(index)
            out.append(detections(self.plan.get(index, [])))
        return out


def frames_folder(folder: Path, count: int, names=None) -> list[str]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = names or [f"{i + 1:04d}.png" for i in range(count)]
    for i, name in enumerate(names):
        frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        frame[..., 0] = i
        Image.fromarray(frame).save(folder / name)
    return names


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


PLAN = {
    0: [person(5, (2.7, 3.2, 30.9, 20.5))],
    1: [person(5, (0, 0, 40, 30)), person(9, (20, 10, 32, 30), score=0.95, hole="left")],  # later box over earlier
    2: [],  # nobody
    3: [person(12, (10, 5, 45, 40), score=0.9), person(3, (0, 0, 10, 10), score=0.5)],  # 2nd below --min-score
    4: [person(24, (60.5, 40.5, 20, 20))],  # cut off by the frame edge
}


def brute_majority(frames, center):
    """The label most frames agree on at each pixel, ties going to the frame nearest ``center``
    (then the earlier one): an independent oracle of ``repair.majority``."""
    stack = np.stack(frames)
    out = np.empty(stack.shape[1:], np.uint8)
    order = sorted(range(len(frames)), key=lambda j: (abs(j - center), j))
    for pos in np.ndindex(*stack.shape[1:]):
        values = stack[(slice(None), *pos)]
        counts = np.bincount(values, minlength=25)
        best = counts.max()
        out[pos] = next(values[j] for j in order if counts[values[j]] == best)
    return out
