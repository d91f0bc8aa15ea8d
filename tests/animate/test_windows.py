import pytest

from magicanimate_cli.animate.windows import context_windows, last_use, padded_length


def starts(windows):
    return [w[0] for w in windows]


@pytest.mark.parametrize(
    "frames, expected_starts",
    [(16, [0]), (32, [0, 12, 24]), (48, [0, 12, 24, 36]), (64, [0, 12, 24, 36, 48, 60]), (80, list(range(0, 80, 12)))],
)
def test_official_window_table(frames, expected_starts):
    # official-inference.md §6.1, table of resulting windows
    windows = context_windows(frames, 16, 4)
    assert starts(windows) == expected_starts
    assert all(len(w) == 16 for w in windows)


def test_last_window_wraps_into_the_start():
    windows = context_windows(32, 16, 4)
    assert windows[-1] == list(range(24, 32)) + list(range(0, 8))


@pytest.mark.parametrize("frames", [16, 32, 48, 64, 96, 128])
@pytest.mark.parametrize("overlap", [0, 4, 8])
def test_every_frame_covered_once_or_twice(frames, overlap):
    counts = [0] * frames
    for window in context_windows(frames, 16, overlap):
        for f in window:
            counts[f] += 1
    assert min(counts) >= 1 and max(counts) <= 2


def test_overlap_zero_gives_disjoint_chunks():
    assert context_windows(48, 16, 0) == [list(range(s, s + 16)) for s in (0, 16, 32)]


def test_short_clip_is_one_window():
    assert context_windows(5, 16, 4) == [[0, 1, 2, 3, 4]]


def test_last_use_points_at_the_last_reader():
    windows = context_windows(32, 16, 4)
    last = last_use(windows)
    assert last[0] == 2 and last[7] == 2 and last[8] == 0 and last[15] == 1 and last[31] == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        context_windows(32, 16, 16)
    with pytest.raises(ValueError):
        context_windows(0, 16, 4)


def test_padded_length():
    assert [padded_length(n, 16) for n in (1, 16, 17, 28, 32)] == [16, 16, 32, 32, 32]
