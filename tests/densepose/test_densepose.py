"""The DensePose stage: palette, label extraction, painting, repair, the stage, weights, the CLI.

Everything around the estimator runs for real with ``FakeEstimator``, which returns what
detectron2 returns (float XYWH boxes, scores, coarse/fine segmentation logits per box). The
``TestDetectron2`` class at the end runs the real detectron2 R_50_FPN model (random weights, given
boxes) against detectron2's own extractor and visualiser; it is skipped when detectron2 is missing.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from magicanimate_cli import media
from magicanimate_cli.densepose import (
    MASK_LABEL_SYMMETRIES,
    PALETTE,
    PART_NAMES,
    POINT_LABEL_SYMMETRIES,
    DensePoseConfig,
    densepose,
    densepose_status,
    labels_from_render,
    render_labels,
)
from magicanimate_cli.densepose import estimator as est
from magicanimate_cli.densepose.charts import Detections, box_labels, frame_labels, int_box, paint, select
from magicanimate_cli.densepose.repair import fill_sources, majority, window
from magicanimate_cli.errors import UserError

# reference/official-inference.md §10.3: label -> (VIRIDIS LUT index, RGB)
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


# ----------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------- palette


def test_palette_is_the_table_of_section_10_3():
    assert PALETTE.shape == (25, 3) and PALETTE.dtype == np.uint8
    for label, (index, rgb) in TABLE_10_3.items():
        assert (label * 255) // 24 == index
        assert tuple(int(v) for v in PALETTE[label]) == rgb
    assert len({tuple(c) for c in PALETTE.tolist()}) == 25  # the inverse is well defined
    with pytest.raises(ValueError):
        PALETTE[0, 0] = 1  # read-only


def test_palette_is_opencv_viridis_of_floor_l_255_over_24():
    cv2 = pytest.importorskip("cv2")
    index = np.array([[(label * 255) // 24 for label in range(25)]], np.uint8)
    bgr = cv2.applyColorMap(index, cv2.COLORMAP_VIRIDIS)[0]
    assert np.array_equal(PALETTE, bgr[:, ::-1])
    # detectron2's float path: clip(l * 10.625).astype(uint8) gives the same LUT indices
    scaled = (np.arange(25, dtype=np.float32) * np.float32(255.0 / 24)).clip(0, 255).astype(np.uint8)
    assert np.array_equal(scaled, index[0])


def test_render_and_inverse_are_exact():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 25, (3, 17, 23), dtype=np.uint8)
    rgb = render_labels(labels)
    assert rgb.shape == (3, 17, 23, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[labels == 0], np.tile(PALETTE[0], ((labels == 0).sum(), 1)))
    assert np.array_equal(labels_from_render(rgb), labels)
    assert np.array_equal(labels_from_render(rgb[0]), labels[0])
    with pytest.raises(ValueError, match="0..24"):
        render_labels(np.full((2, 2), 25, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        render_labels(labels.astype(np.int32))


def test_inverse_of_a_compressed_render_needs_nearest():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 25, (20, 20), dtype=np.uint8)
    noisy = (render_labels(labels).astype(np.int16) + rng.integers(-2, 3, (20, 20, 3))).clip(0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match="not DensePose palette colours"):
        labels_from_render(noisy)
    assert np.array_equal(labels_from_render(noisy, nearest=True), labels)


def test_point_label_symmetries_swap_left_and_right():
    sym = POINT_LABEL_SYMMETRIES
    assert list(sym) == [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23]
    assert np.array_equal(sym[sym], np.arange(25))  # an involution
    for label in range(25):
        mirrored = PART_NAMES[sym[label]].replace("left", "L").replace("right", "left").replace("L", "right")
        assert PART_NAMES[label] == mirrored or label in (0, 1, 2, 23, 24)
    assert list(MASK_LABEL_SYMMETRIES) == [0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14]
    labels = np.array([[3, 4, 0, 24]], np.uint8)
    assert sym[labels].tolist() == [[4, 3, 0, 23]]


# ----------------------------------------------------------------------------- extraction and painting


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


# ----------------------------------------------------------------------------- repair


def test_fill_sources_take_the_nearest_good_frame():
    missing = [False, True, True, False, False, True]
    assert fill_sources(missing) == [0, 0, 3, 3, 4, 4]
    assert fill_sources([True, False, True, True, True, False]) == [1, 1, 1, 1, 5, 5]  # tie -> earlier
    assert fill_sources([True, True]) == [0, 1]


def brute_majority(frames, center):
    stack = np.stack(frames)
    out = np.empty(stack.shape[1:], np.uint8)
    order = sorted(range(len(frames)), key=lambda j: (abs(j - center), j))
    for pos in np.ndindex(*stack.shape[1:]):
        values = stack[(slice(None), *pos)]
        counts = np.bincount(values, minlength=25)
        best = counts.max()
        out[pos] = next(values[j] for j in order if counts[values[j]] == best)
    return out


def test_majority_matches_brute_force_with_centre_ties():
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 5):
        frames = [rng.integers(0, 4, (6, 7), dtype=np.uint8) for _ in range(k)]
        for center in range(k):
            assert np.array_equal(majority(frames, center), brute_majority(frames, center))
    assert list(window(0, 10, 5)) == [0, 1, 2] and list(window(5, 10, 5)) == [3, 4, 5, 6, 7] and list(window(9, 10, 3)) == [8, 9]


# ----------------------------------------------------------------------------- the stage


def test_frames_folder_renders_exactly_in_batches(tmp_path):
    names = frames_folder(tmp_path / "in", 5)
    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=fake)
    assert fake.batches == [2, 2, 1] and fake.seen == [0, 1, 2, 3, 4]
    assert result.frames == 5 and result.missing_frames == ["0003.png"] and result.missing == 1 and result.filled == 0
    assert result.model == "fake" and result.batch_size == 2 and result.resumed == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # the input's file names
    for index, name in enumerate(names):
        kept = PLAN[index][:1]  # default max_people 1 and min_score 0.8
        want = oracle_frame(kept)
        rgb = read_png(tmp_path / "out" / name)
        assert rgb.shape == (H, W, 3)
        assert np.array_equal(rgb, PALETTE[want])
        with Image.open(tmp_path / "labels" / name) as image:
            assert image.mode == "L"
            assert np.array_equal(np.asarray(image), want)
    assert np.array_equal(read_png(tmp_path / "out" / names[2]), np.broadcast_to(PALETTE[0], (H, W, 3)))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work folder or partials left


def test_max_people_zero_keeps_everyone_above_min_score(tmp_path):
    frames_folder(tmp_path / "in", 5)
    densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", max_people=0, min_score=0.4, estimator=FakeEstimator(PLAN))
    assert np.array_equal(read_png(tmp_path / "labels" / "0002.png"), oracle_frame(PLAN[1]))
    assert np.array_equal(read_png(tmp_path / "labels" / "0004.png"), oracle_frame(PLAN[3]))


def test_video_in_folder_and_video_out(tmp_path):
    rng = np.random.default_rng(4)
    media.write_frames(tmp_path / "in.mp4", rng.integers(0, 255, (4, H, W, 3), dtype=np.uint8), fps=10)
    plan = {0: [person(7, (4, 4, 40, 36))], 1: [person(20, (10, 2, 50, 44))], 2: [person(7, (4, 4, 40, 36))], 3: [person(14, (0, 0, 64, 48))]}
    result = densepose(tmp_path / "in.mp4", tmp_path / "out", estimator=FakeEstimator(plan, by_order=True), batch_size=3)
    assert result.fps == 10 and result.frames == 4 and result.labels is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [media.frame_name(i) for i in range(4)]
    for i in range(4):
        assert np.array_equal(read_png(tmp_path / "out" / media.frame_name(i)), PALETTE[oracle_frame(plan[i])])

    result = densepose(tmp_path / "in.mp4", tmp_path / "out.mp4", estimator=FakeEstimator(plan, by_order=True))
    video = media.read_frames(tmp_path / "out.mp4")
    assert video.array.shape == (4, H, W, 3) and video.fps == 10
    for i in range(4):  # h264 moves colours a little: snap back and compare
        agree = (labels_from_render(video.array[i], nearest=True) == oracle_frame(plan[i])).mean()
        assert agree > 0.9  # (edges of small parts blur; a wrong frame would agree on a few %)


def test_clip_folder_writes_densepose_and_labels_beside_images(tmp_path):
    clip = tmp_path / "clip"
    names = frames_folder(clip / "images", 5)
    (clip / "meta.json").write_text('{"fps": 30}')
    result = densepose(clip, estimator=FakeEstimator(PLAN))
    assert result.output == str(clip / "densepose") and result.labels == str(clip / "densepose_labels")
    assert sorted(p.name for p in (clip / "densepose").iterdir()) == names
    assert sorted(p.name for p in (clip / "densepose_labels").iterdir()) == names
    assert (clip / "meta.json").read_text() == '{"fps": 30}'
    assert np.array_equal(read_png(clip / "densepose" / "0001.png"), PALETTE[oracle_frame(PLAN[0])])

    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        densepose(clip, estimator=fake)
    assert fake.batches == []  # refused before any work
    densepose(clip, estimator=fake, overwrite=True, labels=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "0005.png").is_file()


def test_fill_missing_takes_the_nearest_good_frame(tmp_path):
    frames_folder(tmp_path / "in", 6)
    plan = {0: [person(3, (0, 0, 20, 20))], 3: [person(10, (30, 10, 20, 20))], 4: [person(22, (5, 5, 50, 40))]}
    result = densepose(tmp_path / "in", tmp_path / "raw", labels=tmp_path / "raw_labels", estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png", "0003.png", "0006.png"] and result.filled == 0
    assert not read_png(tmp_path / "raw_labels" / "0002.png").any()

    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", fill_missing=True, estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png", "0003.png", "0006.png"] and result.filled == 3
    for frame, source in enumerate([0, 0, 3, 3, 4, 4]):
        want = oracle_frame(plan[source])
        assert np.array_equal(read_png(tmp_path / "labels" / f"{frame + 1:04d}.png"), want)
        assert np.array_equal(read_png(tmp_path / "out" / f"{frame + 1:04d}.png"), PALETTE[want])


def test_smooth_takes_the_per_pixel_majority(tmp_path):
    frames_folder(tmp_path / "in", 5)
    box = (8, 8, 40, 32)
    sequence = [7, 7, 8, 7, 9]
    plan = {i: [person(label, box)] for i, label in enumerate(sequence)}
    densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", smooth=3, estimator=FakeEstimator(plan))
    raw = [oracle_frame(plan[i]) for i in range(5)]
    for i in range(5):
        span = window(i, 5, 3)
        want = brute_majority([raw[j] for j in span], i - span.start)
        got = read_png(tmp_path / "labels" / f"{i + 1:04d}.png")
        assert np.array_equal(got, want)
        assert np.array_equal(read_png(tmp_path / "out" / f"{i + 1:04d}.png"), PALETTE[got])
    # the flicker in frame 2 is gone, the tie at the end keeps the frame's own label
    assert got[20, 20] == 9 and read_png(tmp_path / "labels" / "0003.png")[20, 20] == raw[1][20, 20]
    assert (read_png(tmp_path / "labels" / "0003.png") != raw[2]).any()


def test_an_interrupted_run_resumes_at_the_first_frame_without_labels(tmp_path):
    frames_folder(tmp_path / "in", 5)
    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=2))
    assert not (tmp_path / "out").exists() and not (tmp_path / "labels").exists()
    work = tmp_path / ".out.densepose-work"
    assert sorted(p.name for p in work.glob("*.png")) == ["0001.png", "0002.png"]

    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "out", labels=tmp_path / "labels", batch_size=2, estimator=fake)
    assert fake.seen == [2, 3, 4] and result.resumed == 2 and result.missing_frames == ["0003.png"]
    for index in range(5):
        assert np.array_equal(read_png(tmp_path / "labels" / f"{index + 1:04d}.png"), oracle_frame(PLAN[index][:1]))
    assert not work.exists()

    with pytest.raises(KeyboardInterrupt):
        densepose(tmp_path / "in", tmp_path / "again", batch_size=2, estimator=FakeEstimator(PLAN, fail_on_call=2))
    fake = FakeEstimator(PLAN)
    result = densepose(tmp_path / "in", tmp_path / "again", batch_size=2, min_score=0.3, estimator=fake)  # other settings: start over
    assert fake.seen == [0, 1, 2, 3, 4] and result.resumed == 0


def test_a_detection_without_part_pixels_counts_as_missing(tmp_path):
    frames_folder(tmp_path / "in", 2)
    plan = {0: [person(5, (0, 0, 30, 30))], 1: [person(5, (0, 0, 30, 30), hole="all")]}
    result = densepose(tmp_path / "in", tmp_path / "out", fill_missing=True, estimator=FakeEstimator(plan))
    assert result.missing_frames == ["0002.png"] and result.filled == 1
    assert np.array_equal(read_png(tmp_path / "out" / "0002.png"), read_png(tmp_path / "out" / "0001.png"))


def test_no_person_anywhere_is_an_error(tmp_path):
    frames_folder(tmp_path / "in", 3)
    with pytest.raises(UserError, match="found no person in any of its 3 frames.*--min-score"):
        densepose(tmp_path / "in", tmp_path / "out", estimator=FakeEstimator({}))
    assert list(tmp_path.iterdir()) == [tmp_path / "in"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"smooth": 4}, "--smooth 4"),
        ({"smooth": -1}, "--smooth -1"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"min_score": 1.5}, "--min-score 1.5"),
        ({"max_people": -1}, "--max-people -1"),
        ({"device": "gpu"}, "--device gpu: choose one of auto, cuda, cpu \\(or cuda:N\\)"),  # cuda:N as for animate
        ({"device": "cuda:x"}, "--device cuda:x"),
        ({"output": "x.png"}, "not an image file"),
        ({"labels": "labels.mp4"}, "--labels is a folder"),
        ({"labels": "in"}, "used twice"),
        ({"config": "R_999"}, "unknown model"),
        ({"config": "missing.yaml"}, "no such config file"),
    ],
)
def test_bad_options_are_one_line_user_errors(tmp_path, monkeypatch, kwargs, message):
    frames_folder(tmp_path / "in", 2)
    monkeypatch.chdir(tmp_path)
    args = {"output": "out", "estimator": FakeEstimator(PLAN), **kwargs}
    if "config" in kwargs:
        args.pop("estimator")
    with pytest.raises(UserError, match=message) as info:
        densepose("in", **args)
    assert "\n" not in str(info.value)


def test_a_numbered_gpu_is_a_device_as_for_animate(tmp_path, monkeypatch):
    frames_folder(tmp_path / "in", 2)
    monkeypatch.chdir(tmp_path)  # (the device goes to the estimator; this one is given, so unused)
    assert densepose("in", output="out", device="cuda:1", estimator=FakeEstimator(PLAN)).frames == 2


def test_bad_inputs(tmp_path):
    fake = FakeEstimator(PLAN)
    with pytest.raises(UserError, match="no such file or folder"):
        densepose(tmp_path / "nothing", tmp_path / "out", estimator=fake)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a video, a frames folder or a clip folder"):
        densepose(tmp_path / "notes.txt", tmp_path / "out", estimator=fake)
    media.write_frames(tmp_path / "in.mp4", np.zeros((2, H, W, 3), np.uint8))
    with pytest.raises(UserError, match="pass -o OUTPUT"):
        densepose(tmp_path / "in.mp4", estimator=fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image frames"):
        densepose(tmp_path / "empty", tmp_path / "out", estimator=fake)


def test_default_config_values_are_documented():
    config = DensePoseConfig()
    assert (config.batch_size, config.min_score, config.max_people, config.smooth, config.fill_missing) == (4, 0.8, 1, 0, False)
    for name in ("min_score", "max_people", "batch_size"):
        assert name in DensePoseConfig.__doc__


# ----------------------------------------------------------------------------- weights


def zoo_pickle(path: Path, protocol: int = 2) -> dict:
    rng = np.random.default_rng(5)
    model = {"backbone.conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "head.bias": np.arange(3, dtype=np.float64)}
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle, protocol=protocol)
    return model


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_zoo_pickles_load_through_the_restricted_unpickler(tmp_path, protocol):
    model = zoo_pickle(tmp_path / "w.pkl", protocol)
    data = est.load_pickle_weights(tmp_path / "w.pkl")
    assert data["__author__"] == "Detectron2 Model Zoo"
    for key, value in model.items():
        assert data["model"][key].dtype == value.dtype and np.array_equal(data["model"][key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"model": {"w": np.zeros(2)}, "__author__": "x", "x": _Exploit()}, handle)
    with pytest.raises(UserError, match="refusing to unpickle (posix|nt|os).system"):
        est.load_pickle_weights(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "objects.pkl", "wb") as handle:
        pickle.dump({"model": {"w": np.array([1, "a"], dtype=object)}, "__author__": "x"}, handle)
    with pytest.raises(UserError, match="object array"):
        est.load_pickle_weights(tmp_path / "objects.pkl")


@pytest.fixture()
def served(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_download_once_and_check_sha256(tmp_path, served, monkeypatch):
    root, url = served
    payload = os.urandom(3 << 20)
    (root / "w.pkl").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    spec = est.ModelSpec("densepose_rcnn_test", 50, "DensePoseV1ConvXHead", 1, "w.pkl", digest, len(payload))
    monkeypatch.setattr(est.ModelSpec, "url", property(lambda self: f"{url}/{self.filename}"))
    seen = []
    path = est.ensure_weights(spec, tmp_path / "models", progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert path == tmp_path / "models" / "DensePose" / "densepose_rcnn_test" / "w.pkl"
    assert path.read_bytes() == payload and seen[-1] == ("download", len(payload), len(payload))
    (root / "w.pkl").unlink()
    assert est.ensure_weights(spec, tmp_path / "models") == path  # present and verified: no download

    path.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # always differs (a fixed byte matched 1 run in 256)
    with pytest.raises(UserError, match="does not match the expected"):
        est.ensure_weights(spec, tmp_path / "models")

    (root / "w.pkl").write_bytes(payload + b"tampered")
    path.unlink()
    with pytest.raises(UserError, match="downloaded file has sha256"):
        est.ensure_weights(spec, tmp_path / "models")
    assert list(path.parent.iterdir()) == []  # nothing half-written left

    unpinned = est.ModelSpec("densepose_rcnn_other", 101, "DensePoseDeepLabHead", 2, "o.pkl")
    with pytest.raises(UserError, match=r"no pinned sha256.*--weights FILE"):
        est.ensure_weights(unpinned, tmp_path / "models")


def test_the_default_model_is_pinned():
    spec = est.MODELS[est.DEFAULT_MODEL]
    assert spec.url == "https://dl.fbaipublicfiles.com/densepose/densepose_rcnn_R_50_FPN_s1x/165712039/model_final_162be9.pkl"
    assert spec.sha256 == "b8a7382001b16e453bad95ca9dbc68ae8f2b839b304cf90eaf5c27fbdb4dae91" and spec.size == 255_757_821
    values = est.config_values(spec)
    assert values["MODEL.RESNETS.DEPTH"] == 50 and values["MODEL.ROI_DENSEPOSE_HEAD.NAME"] == "DensePoseV1ConvXHead"
    assert est.resolve_model("R_101_FPN_DL_s1x")[0].head == "DensePoseDeepLabHead"


# ----------------------------------------------------------------------------- nearly empty results, fps, names, noise

SPARSE = {0: [person(5, (0, 0, 30, 30))], 3: [person(9, (10, 10, 30, 30))]}  # a person in 2 of 5 frames


def test_too_few_detected_frames_fail_naming_the_clip_and_the_fix(tmp_path):
    from magicanimate_cli.errors import StageFailed

    frames_folder(tmp_path / "in", 5)
    with pytest.raises(StageFailed) as info:
        densepose(tmp_path / "in", tmp_path / "out", estimator=FakeEstimator(SPARSE))
    message = str(info.value)
    assert not isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith(f"{tmp_path / 'in'}: DensePose found a person in only 2 of 5 frames (40%, below --min-detected 0.5)")
    assert "--min-score" in message and "--fill-missing" in message
    assert not (tmp_path / "out").exists()
    assert (tmp_path / ".out.densepose-work").is_dir()  # the labels are kept for the re-run

    fake = FakeEstimator(SPARSE)  # accepting the gaps: resumes from the kept labels, runs no frame again
    result = densepose(tmp_path / "in", tmp_path / "out", fill_missing=True, estimator=fake)
    assert fake.seen == [] and result.resumed == 5 and result.filled == 3 and result.min_detected == 0.5
    result = densepose(tmp_path / "in", tmp_path / "low", min_detected=0.4, estimator=FakeEstimator(SPARSE))
    assert result.missing == 3 and result.filled == 0  # 2 of 5 is not below 0.4
    with pytest.raises(UserError, match="--min-detected 1.5"):
        densepose(tmp_path / "in", tmp_path / "bad", min_detected=1.5, estimator=FakeEstimator(SPARSE))


def test_cli_too_few_detected_frames_exit_1_in_one_line(tmp_path, monkeypatch):
    from magicanimate_cli.cli import app

    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(SPARSE))
    frames_folder(tmp_path / "in", 5)
    result = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["exit_code"] == 1 and "only 2 of 5 frames" in payload["error"]
    assert result.stderr.strip().splitlines() == [f"error: {payload['error']}"]  # no class name, no traceback hint
    ok = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--min-detected", "0.4", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["missing_frames"] == ["0002.png", "0003.png", "0005.png"]


def test_fps_of_a_clip_folder_comes_from_its_meta_json(tmp_path):
    clip = tmp_path / "clip"
    frames_folder(clip / "images", 5)
    (clip / "meta.json").write_text('{"fps": 10.0}')
    result = densepose(clip, tmp_path / "dp.mp4", estimator=FakeEstimator(PLAN))
    assert result.fps == 10.0 and media.probe(tmp_path / "dp.mp4").fps == 10.0
    result = densepose(clip / "images", tmp_path / "dp12", fps=12, estimator=FakeEstimator(PLAN))
    assert result.fps == 12.0
    result = densepose(clip / "images", tmp_path / "dp25", estimator=FakeEstimator(PLAN))
    assert result.fps == 25.0  # a bare frames folder: the default
    media.write_frames(tmp_path / "in.mp4", np.zeros((2, H, W, 3), np.uint8), fps=10)
    for bad, message in ((12, "read at its own 10 fps"), (0, "--fps 0"), (float("nan"), "--fps nan")):
        with pytest.raises(UserError, match=message):
            densepose(tmp_path / "in.mp4" if bad == 12 else clip, tmp_path / "x", fps=bad, estimator=FakeEstimator(PLAN))


def test_result_names_the_weights_and_their_digest(tmp_path):
    class Loaded(FakeEstimator):  # what load_estimator() returns carries these two
        weights, weights_sha256 = tmp_path / "model.pkl", "ab" * 32

    frames_folder(tmp_path / "in", 5)
    result = densepose(tmp_path / "in", tmp_path / "out", estimator=Loaded(PLAN))
    assert result.weights == str(tmp_path / "model.pkl") and result.weights_sha256 == "ab" * 32
    result = densepose(tmp_path / "in", tmp_path / "out2", estimator=FakeEstimator(PLAN))
    assert result.weights is None and result.weights_sha256 is None


def test_library_noise_stays_off_stderr_unless_debug(capfd):
    """detectron2's checkpointer INFO lines and the torch warnings it triggers, with a root handler
    at INFO (as a user's logging.basicConfig or another library sets up), are held back; with the
    package logger on DEBUG (--debug) they come through."""
    import logging
    import warnings

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with est._quiet_libraries():
                logging.getLogger("fvcore.common.checkpoint").info("[Checkpointer] Loading from model_final.pkl ...")
                logging.getLogger("detectron2.checkpoint.detection_checkpoint").info("[DetectionCheckpointer] Loading")
                logging.getLogger("torch.fx._symbolic_trace").warning("is_fx_tracing will return true for both fx.symbolic_trace and torch.export.")
                warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.")
                logging.getLogger("detectron2").warning("a real problem")
            assert capfd.readouterr().err == "a real problem\n"
            package = logging.getLogger("magicanimate_cli")
            package.setLevel(logging.DEBUG)
            try:
                with est._quiet_libraries():
                    logging.getLogger("fvcore.common.checkpoint").info("[Checkpointer] Loading from model_final.pkl ...")
            finally:
                package.setLevel(logging.NOTSET)
            assert "[Checkpointer]" in capfd.readouterr().err
            assert logging.getLogger("fvcore").level == logging.NOTSET  # left as it was
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# ----------------------------------------------------------------------------- without detectron2, and the CLI

needs_no_detectron2 = pytest.mark.skipif(est.detectron2_available(), reason="detectron2 is installed here")


@needs_no_detectron2
def test_without_detectron2_the_stage_says_how_to_install_it(tmp_path):
    frames_folder(tmp_path / "in", 2)
    with pytest.raises(UserError) as info:
        densepose(tmp_path / "in", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and est.DETECTRON2_COMMIT in message
    assert "pip install --no-build-isolation 'detectron2 @ git+https://github.com/facebookresearch/detectron2.git@" in message
    assert "--no-deps 'detectron2-densepose @ " in message and "#subdirectory=projects/DensePose" in message
    status = densepose_status(tmp_path / "models")
    assert status["ok"] is False and status["detectron2"] is None and "--no-build-isolation" in status["install"]
    assert status["weights"].endswith("DensePose/densepose_rcnn_R_50_FPN_s1x/model_final_162be9.pkl") and status["weights_present"] is False


@needs_no_detectron2
def test_cli_without_detectron2_exits_2_with_the_install_line(tmp_path):
    from magicanimate_cli.cli import app

    frames_folder(tmp_path / "in", 2)
    result = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout.strip().splitlines()[0])
    assert payload["ok"] is False and payload["exit_code"] == 2 and "--no-build-isolation" in payload["error"]
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_runs_the_stage_and_refuses_to_overwrite(tmp_path, monkeypatch):
    from magicanimate_cli.cli import app

    monkeypatch.setattr(est, "require_detectron2", lambda: None)
    monkeypatch.setattr(est, "load_estimator", lambda *args, **kwargs: FakeEstimator(PLAN))
    frames_folder(tmp_path / "in", 5)
    argv = ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--labels", str(tmp_path / "labels"), "--batch-size", "2", "--smooth", "3", "--fill-missing", "--json"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True and payload["frames"] == 5 and payload["missing_frames"] == ["0003.png"] and payload["filled"] == 1
    assert payload["smooth"] == 3 and payload["batch_size"] == 2 and payload["min_score"] == 0.8 and payload["max_people"] == 1
    assert len(list((tmp_path / "labels").iterdir())) == 5

    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.stderr
    assert CliRunner().invoke(app, [*argv, "--overwrite"]).exit_code == 0
    bad = CliRunner().invoke(app, ["densepose", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--smooth", "2"])
    assert bad.exit_code == 2 and "--smooth 2" in bad.stderr


def test_importing_the_stage_loads_neither_numpy_nor_torch():
    import subprocess

    code = "import sys, magicanimate_cli.densepose as d; d.DensePoseConfig(); print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ----------------------------------------------------------------------------- detectron2 itself

needs_detectron2 = pytest.mark.skipif(not est.detectron2_available(), reason="detectron2/DensePose not installed (optional extra)")
BOXES = [  # XYXY in frame pixels: two overlapping people, then one
    np.array([[20.3, 30.7, 150.2, 240.9], [90.5, 10.2, 190.0, 200.6]], np.float32),
    np.array([[10.0, 20.0, 180.0, 250.0]], np.float32),
]


def upstream_configs() -> Path | None:
    """detectron2's projects/DensePose/configs, where a source tree is at hand (see the test using it)."""
    import densepose as upstream

    candidates = [Path(upstream.__file__).resolve().parents[1] / "configs"]
    if os.environ.get("DETECTRON2_SOURCE"):
        candidates.append(Path(os.environ["DETECTRON2_SOURCE"]).expanduser() / "projects" / "DensePose" / "configs")
    return next((c for c in candidates if (c / "Base-DensePose-RCNN-FPN.yaml").is_file()), None)


@pytest.fixture(scope="module")
def d2_estimator():
    import torch

    torch.manual_seed(0)
    cfg = est.build_config(None, device="cpu", min_score=0.8, max_people=0)
    return est.Detectron2Estimator(cfg, name="random R_50_FPN")


@pytest.fixture(scope="module")
def d2_frames():
    rng = np.random.default_rng(6)
    return [rng.integers(0, 255, (256, 192, 3), dtype=np.uint8) for _ in BOXES]


@pytest.fixture(scope="module")
def d2_instances(d2_estimator, d2_frames):
    return d2_estimator.predict(d2_frames, boxes=BOXES)


@needs_detectron2
class TestDetectron2:
    """R_50_FPN from the project's config, random weights, given boxes, against detectron2's own code."""

    @pytest.mark.parametrize("name", list(est.MODELS))
    def test_config_is_the_upstream_yaml_chain(self, name):
        """The configs built in code equal upstream's YAML chain, model section, for every zoo model.

        The DensePose wheel ships no YAML files, so they are looked for beside the installed
        package (a source or editable install) and in the detectron2 checkout named by
        ``DETECTRON2_SOURCE`` (the one the wheel was built from)."""
        from densepose import add_densepose_config
        from detectron2.config import get_cfg

        folder = upstream_configs()
        if folder is None:
            pytest.skip("no DensePose configs: set DETECTRON2_SOURCE to the detectron2 checkout the wheel was built from")
        theirs = get_cfg()
        add_densepose_config(theirs)
        theirs.merge_from_file(str(folder / f"{name}.yaml"))
        ours = est.build_config(name, device="cpu")
        theirs.defrost()
        for key in ("WEIGHTS", "DEVICE"):  # set by the run (weights are loaded by load_weights, never by detectron2)
            theirs.MODEL[key] = ours.MODEL[key]
        theirs.MODEL.ROI_HEADS.SCORE_THRESH_TEST = ours.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        assert ours.MODEL == theirs.MODEL  # every model key; only training/dataset keys are left out
        assert ours.INPUT.MIN_SIZE_TEST == theirs.INPUT.MIN_SIZE_TEST and ours.INPUT.MAX_SIZE_TEST == theirs.INPUT.MAX_SIZE_TEST
        yaml_file = folder / f"{name}.yaml"
        assert est.build_config(yaml_file, device="cpu").MODEL == ours.MODEL  # --config FILE.yaml
        with pytest.raises(UserError, match="needs its weights"):
            est.load_estimator(yaml_file, device="cpu")

    def test_zoo_configs_need_no_yaml_files(self, tmp_path, monkeypatch):
        """Under the wheel install (no YAML anywhere) every zoo model still builds, on the head it names."""
        from detectron2.modeling import build_model

        monkeypatch.chdir(tmp_path)
        for name, spec in est.MODELS.items():
            cfg = est.build_config(name, device="cpu")
            assert cfg.MODEL.RESNETS.DEPTH == spec.depth and cfg.MODEL.ROI_DENSEPOSE_HEAD.NAME == spec.head
        model = build_model(est.build_config(None, device="cpu"))
        assert type(model.roi_heads.densepose_head).__name__ == "DensePoseV1ConvXHead"
        assert len(model.backbone.bottom_up.stages) == 4 and len(model.backbone.bottom_up.res4) == 6  # ResNet-50

    def test_detection_with_random_weights_finds_nobody(self, d2_estimator, d2_frames):
        found = d2_estimator(d2_frames[:1])
        assert len(found) == 1 and len(found[0]) == 0
        assert frame_labels(found[0], 256, 192, 0.8, 1)[1] == 0

    def test_labels_and_render_equal_detectron2s_extractor_and_visualizer(self, d2_estimator, d2_instances, d2_frames):
        import cv2
        from densepose.vis.densepose_results import DensePoseResultsFineSegmentationVisualizer
        from densepose.vis.extractor import DensePoseResultExtractor

        from magicanimate_cli.densepose.estimator import to_detections

        visualizer = DensePoseResultsFineSegmentationVisualizer(cmap=cv2.COLORMAP_VIRIDIS, alpha=1)
        for frame, found, boxes in zip(d2_frames, d2_instances, BOXES):
            assert len(found) == len(boxes)
            results, boxes_xywh = DensePoseResultExtractor()(found)
            detections_ = to_detections(found)
            assert np.array_equal(detections_.boxes_xywh.numpy(), boxes_xywh.numpy())
            for i, result in enumerate(results):
                box, labels = box_labels(detections_.coarse_segm[i], detections_.fine_segm[i], detections_.boxes_xywh[i])
                assert np.array_equal(labels, result.labels.numpy().astype(np.uint8))
                assert len(np.unique(labels)) > 3  # random heads still give varied parts
            canvas = cv2.applyColorMap(np.zeros(frame.shape[:2], np.uint8), cv2.COLORMAP_VIRIDIS)
            theirs = visualizer.visualize(canvas, (results, boxes_xywh))[:, :, ::-1]
            label_map, count = frame_labels(detections_, *frame.shape[:2], 0.8, 0)
            assert count == len(boxes)
            assert np.array_equal(render_labels(label_map), theirs)

    def test_the_stage_end_to_end(self, d2_estimator, d2_frames, d2_instances, tmp_path):
        import cv2
        from densepose.vis.densepose_results import DensePoseResultsFineSegmentationVisualizer
        from densepose.vis.extractor import DensePoseResultExtractor

        folder = tmp_path / "in"
        folder.mkdir()
        for i, frame in enumerate(d2_frames):
            Image.fromarray(frame).save(folder / media.frame_name(i))

        class GivenBoxes:
            name, device, calls = "random R_50_FPN", "cpu", []

            def __call__(self, batch):
                start = sum(self.calls)
                self.calls.append(len(batch))
                return d2_estimator(batch, boxes=BOXES[start : start + len(batch)])

        given = GivenBoxes()
        result = densepose(folder, tmp_path / "out", labels=tmp_path / "labels", max_people=0, batch_size=2, estimator=given)
        assert given.calls == [2] and result.frames == 2 and result.missing == 0
        visualizer = DensePoseResultsFineSegmentationVisualizer(cmap=cv2.COLORMAP_VIRIDIS, alpha=1)
        for i, (frame, found) in enumerate(zip(d2_frames, d2_instances)):
            canvas = cv2.applyColorMap(np.zeros(frame.shape[:2], np.uint8), cv2.COLORMAP_VIRIDIS)
            theirs = visualizer.visualize(canvas, DensePoseResultExtractor()(found))[:, :, ::-1]
            assert np.array_equal(read_png(tmp_path / "out" / media.frame_name(i)), theirs)
            assert np.array_equal(PALETTE[read_png(tmp_path / "labels" / media.frame_name(i))], theirs)

    def test_weights_load_safely_and_strictly(self, d2_estimator, tmp_path):
        import torch

        state = {k: v.detach().numpy().copy() for k, v in d2_estimator.model.state_dict().items()}
        with open(tmp_path / "zoo.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "plain.pth")
        for weights in (tmp_path / "zoo.pkl", tmp_path / "plain.pth"):
            torch.manual_seed(1)  # a different random init, overwritten by the file
            loaded = est.Detectron2Estimator(est.build_config(None, device="cpu"), weights=weights)
            for key, value in loaded.model.state_dict().items():
                assert np.array_equal(value.numpy(), state[key]), key
        del state["roi_heads.densepose_predictor.ann_index_lowres.weight"]
        with open(tmp_path / "partial.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        with pytest.raises(UserError, match="does not fit the configured model.*missing parameters"):
            est.Detectron2Estimator(est.build_config(None, device="cpu"), weights=tmp_path / "partial.pkl")
        with pytest.raises(UserError, match="does not fit the configured model"):
            est.load_estimator("R_101_FPN_DL_s1x", weights=tmp_path / "zoo.pkl", device="cpu")
        loaded = est.load_estimator(None, weights=tmp_path / "zoo.pkl", device="cpu", max_people=3)
        assert loaded.name == "densepose_rcnn_R_50_FPN_s1x" and loaded.cfg.TEST.DETECTIONS_PER_IMAGE == 3
        assert loaded.weights == tmp_path / "zoo.pkl"  # a file the user names is trusted, and its digest recorded
        assert loaded.weights_sha256 == hashlib.sha256((tmp_path / "zoo.pkl").read_bytes()).hexdigest()

    def test_loading_and_inference_keep_stderr_to_our_own_messages(self, d2_estimator, d2_frames, tmp_path, capfd):
        """No torch.fx / meshgrid warning and no checkpointer INFO line, even with logging set up at INFO."""
        import logging
        import warnings

        state = {k: v.detach().numpy().copy() for k, v in d2_estimator.model.state_dict().items()}
        with open(tmp_path / "zoo.pkl", "wb") as handle:
            pickle.dump({"model": state, "__author__": "magicanimate test"}, handle, protocol=2)
        logging.basicConfig(level=logging.INFO, force=True)
        try:
            capfd.readouterr()
            with warnings.catch_warnings():
                warnings.simplefilter("default")  # as a plain `python -m magicanimate_cli` run shows them
                loaded = est.load_estimator(None, weights=tmp_path / "zoo.pkl", device="cpu")
                loaded(d2_frames[:1])
                loaded(d2_frames[:1], boxes=BOXES[:1])
            assert capfd.readouterr().err == ""
        finally:
            for handler in logging.getLogger().handlers[:]:
                logging.getLogger().removeHandler(handler)
            logging.getLogger().setLevel(logging.WARNING)
