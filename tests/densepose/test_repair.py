"""Repair of frames where nobody was found (``repair.py``)."""

from __future__ import annotations

import numpy as np

from magicanimate_cli.densepose.repair import fill_sources, majority, window

from densepose_helpers import brute_majority


def test_fill_sources_take_the_nearest_good_frame():
    missing = [False, True, True, False, False, True]
    assert fill_sources(missing) == [0, 0, 3, 3, 4, 4]
    assert fill_sources([True, False, True, True, True, False]) == [1, 1, 1, 1, 5, 5]  # tie -> earlier
    assert fill_sources([True, True]) == [0, 1]


def test_majority_matches_brute_force_with_centre_ties():
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 5):
        frames = [rng.integers(0, 4, (6, 7), dtype=np.uint8) for _ in range(k)]
        for center in range(k):
            assert np.array_equal(majority(frames, center), brute_majority(frames, center))
    assert list(window(0, 10, 5)) == [0, 1, 2] and list(window(5, 10, 5)) == [3, 4, 5, 6, 7] and list(window(9, 10, 3)) == [8, 9]


