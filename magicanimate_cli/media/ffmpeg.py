"""The ffmpeg binary (the system one, else imageio-ffmpeg's static build) and how it is run: paths
as ffmpeg-python takes them (``_ffmpeg_path``), quiet runs (``_run_ffmpeg``), a process that ends
with the command (``popen``), its report on a file (``_ffmpeg_report``), the filters, encoders and decoders
it has (``has_filter``, ``has_encoder``, ``has_decoder``); the video stream every reader decodes (``VIDEO_STREAM``) and the filters every
reader applies (``square_pixels``, ``progressive``)."""

from __future__ import annotations

import re
import shutil
from functools import lru_cache
from pathlib import Path

from .paths import check_name_encoding


def _ffmpeg_path(path: Path | str) -> str:
    """``path`` as ffmpeg-python takes it: absolute (``a:b.mp4`` is then no protocol), UTF-8."""
    check_name_encoding(path)
    return str(Path(path).resolve())


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """The ffmpeg executable: the system one if on PATH, else imageio-ffmpeg's static build."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


VIDEO_STREAM = "V:0"
"""The video stream every reader here decodes, and the one ``_header`` describes: the first that is
no cover picture (ffmpeg's ``V``; the album art of a sound file is none). ffmpeg's own choice (the
largest) is not what ``0:v`` decodes when a file holds several (a broadcast capture's programs)."""


SQUARE_PIXELS = ("-vf", "scale=iw*sar:ih,setsar=1")
"""ffmpeg's filter that gives frames of square pixels, as a player shows them."""


def square_pixels(stream):
    """``stream`` at the size a player shows it: an anamorphic video (a camcorder's 1440×1080 with
    4:3 pixels) widened to square pixels (1920×1080); a square-pixel one passes unchanged, byte
    for byte (``SQUARE_PIXELS`` as an ffmpeg-python filter chain)."""
    return stream.filter("scale", "iw*sar", "ih").filter("setsar", "1")


def progressive(stream):
    """``stream`` with its interlaced frames (a camcorder's 1080i ``.mts``, a broadcast or DVD
    capture) deinterlaced as players show them, one frame for each (``bwdif``), instead of read
    with the two fields' combing on everything that moves; frames not flagged interlaced pass
    unchanged."""
    return stream.filter("bwdif", mode="send_frame", deint="interlaced")


def has_filter(name: str) -> bool:
    """Whether the ffmpeg in use (``ffmpeg_binary``) has the filter ``name`` (``ffmpeg -filters``)."""
    return name in _filters(ffmpeg_binary())


@lru_cache(maxsize=4)
def _filters(binary: str) -> frozenset[str]:
    import subprocess

    try:
        listed = subprocess.run([binary, "-hide_banner", "-nostdin", "-filters"], capture_output=True, text=True, errors="replace", timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(found.group(1) for found in re.finditer(r"^\s*\S+\s+(\w+)\s+\S+->\S+", listed, re.MULTILINE))


def has_encoder(name: str) -> bool:
    """Whether the ffmpeg in use (``ffmpeg_binary``) has the encoder ``name`` (``ffmpeg -encoders``):
    a system ffmpeg may be built without libvpx or libwebp."""
    return name in _encoders(ffmpeg_binary())


def has_decoder(name: str) -> bool:
    """Whether the ffmpeg in use (``ffmpeg_binary``) has the decoder ``name`` (``ffmpeg -decoders``):
    ``webp_anim``, an animated WebP's, came with FFmpeg 9.0."""
    return name in _decoders(ffmpeg_binary())


def _encoders(binary: str) -> frozenset[str]:
    return _codecs(binary, "-encoders")


def _decoders(binary: str) -> frozenset[str]:
    return _codecs(binary, "-decoders")


@lru_cache(maxsize=8)
def _codecs(binary: str, listing: str) -> frozenset[str]:
    """The names that ``binary LISTING`` (``-encoders`` or ``-decoders``) lists; none if it cannot run."""
    import subprocess

    try:
        listed = subprocess.run([binary, "-hide_banner", "-nostdin", listing], capture_output=True, text=True, errors="replace", timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(found.group(1) for found in re.finditer(r"^\s*[VAS][.\w]{5}\s+(\w[\w-]*)", listed, re.MULTILINE))


def popen(args: list[str], **kwargs):
    """``subprocess.Popen`` for an ffmpeg that writes files on its own: on Linux it is killed
    (``PR_SET_PDEATHSIG``) when the thread that starts it ends, which the callers keep alive until
    it exits. Without this, ffmpeg went on writing frames into the temporary folder after a
    ``kill -9`` of the command (220 → 500 PNGs seen), using the CPU for a result nobody keeps."""
    import functools
    import os
    import subprocess

    from ..processes import parent_death_signal

    arm = parent_death_signal()
    preexec = functools.partial(arm, os.getpid()) if arm is not None else None
    return subprocess.Popen(args, preexec_fn=preexec, **kwargs)


def _run_ffmpeg(stream) -> str | None:
    """Run an ffmpeg-python graph quietly, in a process that ends with this one: killed by the kernel
    when it is (``popen``: a ``kill -9``) and when the wait is interrupted (Ctrl-C, or SIGTERM as
    ``processes.stop_on_signals`` raises it), instead of going on encoding a GIF or cutting a clip
    into a temporary that the next run removes. None when it worked, else ffmpeg's last error line."""
    import subprocess

    import ffmpeg

    args = ffmpeg.compile(stream.global_args("-hide_banner", "-loglevel", "error", "-nostdin"), cmd=ffmpeg_binary(), overwrite_output=True)
    process = popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = process.communicate()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode == 0:
        return None
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "failed"


def _ffmpeg_report(path: Path, *args: str) -> str:
    """What ``ffmpeg -i path ARGS`` says on stderr (its header, and what ``ARGS`` add). ffmpeg-python's
    ``probe`` needs ffprobe, which imageio-ffmpeg does not ship. No shell; the path is one argument."""
    import subprocess

    return subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", _ffmpeg_path(path), *args], capture_output=True,
                          text=True, errors="replace", timeout=120).stderr  # fmt: skip
