"""media.ffmpeg: the ffmpeg processes the command starts."""

import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_ffmpeg_writing_on_its_own_ends_with_a_killed_command(tmp_path):
    # a command started through media.popen (as the frame extraction starts ffmpeg), then kill -9 of
    # the command: the child must not go on (ffmpeg once wrote 280 more frames after its parent died)
    script = "import sys, time; from magicanimate_cli.media import popen; print(popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie left to a parent that does not reap is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
