import pytest

from magicanimate_cli.animate.windows import context_windows, last_use, padded_length, window_weights


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
    with pytest.raises(ValueError, match="schedule"):
        context_windows(32, 16, 4, "spiral")


@pytest.mark.parametrize("size, overlap", [(16, 4), (16, 0), (16, 8), (8, 3), (24, 4)])
@pytest.mark.parametrize("frames", [1, 5, 16, 17, 28, 29, 32, 40, 48, 64, 100, 256])
def test_open_windows_stay_inside_the_clip_and_overlap_as_asked(frames, size, overlap):
    windows = context_windows(frames, size, overlap, "open")
    for window in windows:  # consecutive frames, none wrapped
        assert window == list(range(window[0], window[0] + len(window))) and window[-1] < frames
    assert windows[0][0] == 0 and windows[-1][-1] == frames - 1
    assert all(len(w) == min(size, frames) for w in windows)
    starts_ = starts(windows)
    assert starts_ == sorted(set(starts_))
    shared = [len(set(a) & set(b)) for a, b in zip(windows, windows[1:])]
    assert all(n >= overlap for n in shared)
    # as few windows as that allows: with one less, some neighbours would be further apart than
    # ``size - overlap`` frames, so they would share fewer than ``overlap``
    if frames <= size:
        assert len(windows) == 1
    elif len(windows) > 2:
        assert (frames - size) / (len(windows) - 2) > size - overlap


@pytest.mark.parametrize("frames", [16, 32, 48, 64, 80, 96, 128, 256])
def test_open_windows_at_the_defaults_cover_a_frame_at_most_twice_and_never_outnumber_the_loop(frames):
    # the padded lengths (multiples of 16) the pipeline gives them: at most two windows per frame
    # keeps --devices bitwise the single-process result
    windows = context_windows(frames, 16, 4, "open")
    counts = [0] * frames
    for window in windows:
        for f in window:
            counts[f] += 1
    assert min(counts) == 1 and max(counts) <= 2
    assert len(windows) <= len(context_windows(frames, 16, 4, "loop"))


def test_open_windows_save_the_wrapped_window_where_the_loop_needs_one():
    assert starts(context_windows(64, 16, 4, "open")) == [0, 12, 24, 36, 48]  # the loop: 6 windows, the last 60..63, 0..11
    assert starts(context_windows(256, 16, 4, "open")) == list(range(0, 241, 12))  # 21 windows; the loop: 22


def test_padded_length():
    assert [padded_length(n, 16) for n in (1, 16, 17, 28, 32)] == [16, 16, 32, 32, 32]


def test_window_weights():
    assert window_weights(16) == [1] * 16
    assert window_weights(16, "pyramid") == [1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1]
    assert window_weights(5, "pyramid") == [1, 2, 3, 2, 1] and window_weights(1, "pyramid") == [1]
    with pytest.raises(ValueError, match="fusion"):
        window_weights(16, "gauss")
