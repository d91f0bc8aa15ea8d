"""progress.py: the plain-line reporter's rate (injected clock and stream) and how rich_progress chooses."""

from __future__ import annotations

import io

from magicanimate_cli.progress import PlainProgress, rich_progress, silent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_at_each_tenth_and_at_the_end():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(stream, clock=clock)
    for done in range(201):  # 200 units, 0.1 s apart: never 30 s without a tenth
        report("densepose", done, 200)
        clock.now += 0.1
    out = lines(stream)
    assert [line.split()[1] for line in out] == [f"{n}/200" for n in range(0, 201, 20)]  # start, each 10 %, end
    assert out[0] == "densepose: 0/200 (0%) 0s" and out[-1] == "densepose: 200/200 (100%) 20s"
    report("densepose", 200, 200)  # the same final state again: nothing more
    assert len(lines(stream)) == 11


def test_slow_stages_print_every_30_seconds_between_tenths():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(stream, clock=clock)
    for done in range(51):  # 1000 units, 2 s per unit: a tenth takes 200 s
        report("animate", done, 1000)
        clock.now += 2.0
    out = lines(stream)
    # t = 0, then the first call at or past 30 s since the last line: 30, 60, 90 s (done 15, 30, 45)
    assert [line.split()[1] for line in out] == ["0/1000", "15/1000", "30/1000", "45/1000"]
    assert [line.split()[-1] for line in out] == ["0s", "30s", "60s", "90s"]


def test_stages_are_separate_and_a_stage_run_again_starts_over():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(stream, clock=clock)
    report("clips", 0, 2)
    for done in (1, 2):
        report("render", done, 2)
    report("clips", 1, 2)
    clock.now += 5
    for done in (1, 2, 3):  # the next clip's render: a new run of the stage
        report("render", done, 3)
    report("clips", 2, 2)
    assert lines(stream) == [
        "clips: 0/2 (0%) 0s", "render: 1/2 (50%) 0s", "render: 2/2 (100%) 0s", "clips: 1/2 (50%) 0s",
        "render: 1/3 (33%) 0s", "render: 2/3 (66%) 0s", "render: 3/3 (100%) 0s", "clips: 2/2 (100%) 5s",
    ]  # fmt: skip


def test_unknown_totals_print_by_time_only():
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress(stream, clock=clock)
    for done in range(100):
        report("download", done, 0)
        clock.now += 1.0
    assert [line.split()[1] for line in lines(stream)] == ["0", "30", "60", "90"]


def test_rich_progress_auto_is_plain_off_a_terminal_and_bars_on_one():
    plain = io.StringIO()
    with rich_progress(None, stream=plain) as report:
        assert isinstance(report, PlainProgress)
        report("frames", 0, 4)
        report("frames", 4, 4)
    assert lines(plain) == ["frames: 0/4 (0%) 0s", "frames: 4/4 (100%) 0s"]

    terminal = Tty()
    with rich_progress(None, stream=terminal) as report:
        assert not isinstance(report, PlainProgress)
        report("frames", 4, 4)
    assert "frames" in terminal.getvalue() and "4/4" in terminal.getvalue() and "(100%)" not in terminal.getvalue()


def test_rich_progress_false_is_silent_even_on_a_terminal():
    for stream in (io.StringIO(), Tty()):
        with rich_progress(False, stream=stream) as report:
            assert report is silent
            report("frames", 1, 2)
        assert stream.getvalue() == ""


def test_cli_json_stays_silent_and_plain_lines_reach_a_piped_stderr(tmp_path):
    """Through the CLI: a run with --json prints nothing on stderr; without it, plain lines."""
    import numpy as np
    from typer.testing import CliRunner

    from magicanimate_cli import media
    from magicanimate_cli.cli import app

    media.write_frames(tmp_path / "in.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=25.0)
    runner = CliRunner()
    quiet = runner.invoke(app, ["frames", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "a"), "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    loud = runner.invoke(app, ["frames", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "b")])
    assert loud.exit_code == 0, loud.output
    assert any(line.startswith("frames: ") and "(100%)" in line for line in loud.stderr.splitlines()), loud.stderr
