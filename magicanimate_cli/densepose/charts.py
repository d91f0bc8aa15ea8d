"""From an estimator's per-box outputs to one label map per frame, exactly as detectron2 does it.

An estimator returns, for each frame, ``Detections``: the people in detection order (detectron2
sorts them by descending score), their boxes as float XYWH in frame pixels (what
``DensePoseResultExtractor`` returns) and the raw coarse/fine segmentation logits of each box
(``DensePoseChartPredictorOutput.coarse_segm`` / ``fine_segm``, ``N×2×S×S`` / ``N×25×S×S``).

``frame_labels`` turns them into one ``H×W`` uint8 label map, following detectron2 DensePose
(../shared/reference/official-inference.md §10.2):

* labels of a box: its XYWH box truncated to integers (``make_int_box``), both logits resized
  bilinearly (``align_corners=False``) to the box, ``argmax(fine) * (argmax(coarse) > 0)``
  (``resample_fine_and_coarse_segm_tensors_to_bbox``);
* painting (``MatrixVisualizer`` with alpha 1): boxes in detection order, a box's pixels with
  label > 0 overwrite the map, its background pixels keep what is there; boxes with an integer
  width or height of 0 are skipped.

Rendering that map with the palette gives the vid2densepose frame bit for bit (the integration
test checks both steps against detectron2's own extractor and visualiser). Parts of a box outside
the frame are cut off; detectron2 clips its boxes to the frame, so that only concerns other
estimators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Detections:
    """One frame's people as detectron2 DensePose returns them (numpy arrays or torch tensors)."""

    boxes_xywh: Any  # N×4 float, XYWH in frame pixels
    scores: Any  # N
    coarse_segm: Any  # N×2×S×S logits
    fine_segm: Any  # N×25×S×S logits

    def __len__(self) -> int:
        return int(len(self.scores))


def select(scores, min_score: float, max_people: int) -> list[int]:
    """Indices of the people kept, in detection order.

    Like detectron2's ``fast_rcnn_inference``: scores above ``min_score`` (strictly), then the
    ``max_people`` best scores (0 keeps all). The kept people keep their detection order.
    """
    scores = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
    kept = [i for i in range(len(scores)) if scores[i] > min_score]
    if max_people > 0 and len(kept) > max_people:
        best = sorted(kept, key=lambda i: (-scores[i], i))[:max_people]
        kept = sorted(best)
    return kept


def int_box(box_xywh) -> tuple[int, int, int, int]:
    """detectron2's ``make_int_box``: each float32 coordinate truncated toward zero."""
    import torch

    box = torch.as_tensor(_to_numpy(box_xywh) if not isinstance(box_xywh, torch.Tensor) else box_xywh)
    x, y, w, h = box.to(torch.float32).long().tolist()
    return x, y, w, h


def box_labels(coarse_segm, fine_segm, box_xywh) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The integer box and the ``h×w`` uint8 labels of one person (``coarse``: 2×S×S, ``fine``: 25×S×S)."""
    import torch
    from torch.nn import functional as F

    x, y, w, h = int_box(box_xywh)
    size = (max(h, 1), max(w, 1))
    coarse = torch.as_tensor(coarse_segm)[None].float()
    fine = torch.as_tensor(fine_segm, device=coarse.device)[None].float()
    coarse_labels = F.interpolate(coarse, size, mode="bilinear", align_corners=False).argmax(dim=1)
    labels = F.interpolate(fine, size, mode="bilinear", align_corners=False).argmax(dim=1) * (coarse_labels > 0).long()
    return (x, y, w, h), labels[0].to(torch.uint8).cpu().numpy()


def paint(label_map: np.ndarray, box: tuple[int, int, int, int], labels: np.ndarray) -> None:
    """Paint one person's labels into ``label_map`` in place (label > 0 overwrites; 0 keeps)."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return
    height, width = label_map.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        return
    patch = labels[y0 - y : y1 - y, x0 - x : x1 - x]
    region = label_map[y0:y1, x0:x1]
    foreground = patch > 0
    region[foreground] = patch[foreground]


def frame_labels(detections: Detections, height: int, width: int, min_score: float, max_people: int) -> tuple[np.ndarray, int]:
    """One frame's ``H×W`` label map and the number of people painted into it."""
    label_map = np.zeros((height, width), dtype=np.uint8)
    if detections is None or len(detections) == 0:
        return label_map, 0
    _check(detections)
    kept = select(detections.scores, min_score, max_people)
    for index in kept:
        box, labels = box_labels(detections.coarse_segm[index], detections.fine_segm[index], detections.boxes_xywh[index])
        paint(label_map, box, labels)
    return label_map, len(kept)


def _check(detections: Detections) -> None:
    count = len(detections)
    shapes = {
        "boxes_xywh": (tuple(detections.boxes_xywh.shape), (count, 4)),
        "coarse_segm": (tuple(detections.coarse_segm.shape[:2]), (count, 2)),
        "fine_segm": (tuple(detections.fine_segm.shape[:2]), (count, 25)),
    }
    for name, (got, want) in shapes.items():
        if got != want:
            raise ValueError(f"estimator returned {name} of shape {got}, expected {want}[...] for {count} people")


def _to_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
