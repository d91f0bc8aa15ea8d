"""Label extraction and painting (``charts.py``) against an independent float64 oracle."""

from __future__ import annotations

import numpy as np

from magicanimate_cli.densepose.charts import box_labels, frame_labels, int_box, paint, select

from densepose_helpers import PLAN, H, S, W, detections, oracle_frame, oracle_labels


def test_int_box_truncates_like_make_int_box():
    assert int_box(np.array([10.9, 5.2, 20.7, 13.99], np.float32)) == (10, 5, 20, 13)
    assert int_box([0.4, 0.0, 0.6, 1.0]) == (0, 0, 0, 1)


def test_box_labels_match_an_independent_bilinear_argmax():
    rng = np.random.default_rng(2)
    for box in ([3.3, 4.9, 21.7, 13.2], [0, 0, 8, 8], [1, 1, 5.5, 40.9], [2, 2, 0.5, 7]):
        coarse = rng.normal(size=(2, S, S)).astype(np.float32)
        fine = rng.normal(size=(25, S, S)).astype(np.float32)
        got_box, got = box_labels(coarse, fine, np.array(box, np.float32))
        want_box, want = oracle_labels(coarse, fine, box)
        assert got_box == want_box
        assert got.dtype == np.uint8 and got.shape == want.shape == (max(want_box[3], 1), max(want_box[2], 1))
        assert np.array_equal(got, want)
        assert (got == 0).any() and (got > 0).any()


def test_paint_order_background_skip_and_clipping():
    canvas = np.zeros((10, 10), np.uint8)
    paint(canvas, (0, 0, 6, 6), np.full((6, 6), 3, np.uint8))
    second = np.full((6, 6), 7, np.uint8)
    second[:, :3] = 0  # background of the second box keeps what is under it
    paint(canvas, (2, 2, 6, 6), second)
    assert canvas[1, 1] == 3 and canvas[3, 3] == 3 and canvas[3, 6] == 7 and canvas[9, 9] == 0
    before = canvas.copy()
    paint(canvas, (1, 1, 0, 5), np.full((5, 1), 9, np.uint8))  # width 0: skipped, as MatrixVisualizer does
    assert np.array_equal(canvas, before)
    paint(canvas, (8, -2, 4, 4), np.arange(16, dtype=np.uint8).reshape(4, 4) % 24 + 1)  # cut by the frame
    assert canvas[0, 8] == 9 and canvas[1, 9] == 14


def test_select_follows_detectron2_threshold_and_topk_keeping_order():
    scores = np.array([0.9, 0.95, 0.8, 0.85, 0.99])
    assert select(scores, 0.8, 0) == [0, 1, 3, 4]  # strictly above, detection order
    assert select(scores, 0.8, 2) == [1, 4]
    assert select(scores, 0.0, 1) == [4]
    assert select(np.zeros(0), 0.5, 1) == []


def test_frame_labels_paint_people_in_detection_order():
    for index, people in PLAN.items():
        kept = [p for p in people if p[1] > 0.8][:1] if index != 1 else people
        label_map, count = frame_labels(detections(people), H, W, 0.8, 0 if index == 1 else 1)
        assert count == len(kept)
        assert np.array_equal(label_map, oracle_frame(kept))
    label_map, _ = frame_labels(detections(PLAN[1]), H, W, 0.8, 0)
    assert label_map[25, 25] == 5 and label_map[25, 45] == 9  # left half of box 2 is background: box 1 shows


