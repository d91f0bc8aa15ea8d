"""Reading videos (ffmpeg): size, rate and frame count (``probe``), frames one at a time
(``iter_frames``, which also reads a frames folder or one image) or a whole clip (``read_frames``),
the checks that a video opens and decodes to its end (``check_video``, ``check_decode``), frames
extracted to PNGs (``extract_frames``), and the videos made from one: an mp4 copy
(``remux_mp4``) and a cut (``encode_cut``)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError, first_line, shown
from ..frames import DEFAULT_FPS
from .colours import shown_colours
from .ffmpeg import (
    SQUARE_PIXELS,
    VIDEO_STREAM,
    _ffmpeg_path,
    _run_ffmpeg,
    ffmpeg_binary,
    popen,
    progressive,
    square_pixels,
)
from .frame_folders import list_frame_files
from .images import read_image
from .paths import is_animated_webp, is_image, permission_denied
from .sound import AAC, audio_streams, picture_start, sound_options


@dataclass(frozen=True)
class Frames:
    """A clip in memory: uint8 RGB ``T×H×W×3`` (or ``T×H×W`` for single-channel maps) and its fps."""

    array: np.ndarray
    fps: float


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int


def same_rate(a: float, b: float) -> bool:
    """Whether two frame rates are one: a rate typed is rounded (``--fps 23.976`` or ``23.98`` for
    24000/1001, ``exact_rate``), so it names the video's too (within 0.1 %)."""
    return abs(a - b) <= 1e-3 * max(a, b)


def probe(path: Path, fps: float | None = None) -> VideoInfo:
    """Size, fps and frame count of a video or frames folder (``fps`` overrides).

    A video's count is that of the frames ``iter_frames`` yields (``_counted_frames``: ffmpeg decodes
    it once through the same re-timing): a variable-rate video (a phone's, clips joined) counts the
    frames its duration takes at the header's rate, not the frames stored, and a picture that
    starts after the sound counts the frames that fill its start.
    """
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise UserError(f"{path}: folder has no image frames (expected 00000.png, 00001.png, ...)")
        first = read_image(files[0])
        return VideoInfo(first.shape[1], first.shape[0], fps or DEFAULT_FPS, len(files))
    _check_video(path)
    import imageio_ffmpeg

    meta = _header(path)
    count = _counted_frames(path, meta["fps"]) if meta.get("fps") else None
    if count is None:  # no rate in the header (iter_frames reads it as stored), or ffmpeg could not tell
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path.resolve()))
    width, height = meta["size"]
    return VideoInfo(width, height, float(fps or meta.get("fps") or DEFAULT_FPS), count)


def pixel_format(path: Path) -> str:
    """How a video stores its pixels, as ffmpeg names the format (``yuv420p``, ``bgr0``, ``gbrp``, ...),
    read from its header for the stream every reader decodes (``VIDEO_STREAM``); "" when the header
    does not say."""
    path = Path(path)
    _check_video(path)
    return str(_header(path).get("pix_fmt") or "").split("(")[0].strip()


def _counted_frames(path: Path, fps: float) -> int | None:
    """How many frames ``iter_frames`` yields of ``path``: ffmpeg decodes the video once through the
    same re-timing to ``fps`` and output timing (constant rate, from the file's start), into nothing;
    None when ffmpeg cannot tell (``iter_frames`` then says why, if it cannot either)."""
    import ffmpeg

    stream = ffmpeg.output(ffmpeg.input(_ffmpeg_path(path))[VIDEO_STREAM].filter("fps", fps=fps), "-", f="null", fps_mode="cfr")
    stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    done = subprocess.run(ffmpeg.compile(stream, cmd=ffmpeg_binary()), capture_output=True, text=True, errors="replace")
    frames = [line.partition("=")[2] for line in done.stdout.splitlines() if line.startswith("frame=")]
    return int(frames[-1]) if done.returncode == 0 and frames and frames[-1].isdigit() else None


def iter_frames(path: Path, same_size: bool = True, allow_truncated: bool = False, read=read_image, bits: int = 8,
                files: Sequence[Path] | None = None) -> Iterator[np.ndarray]:
    """Frames of a video, a frames folder or a single image, as uint8 RGB, one at a time; the
    image files read by ``read`` (default ``read_image``: as shown). ``bits=16`` reads a video's
    frames as uint16 RGB (ffmpeg's ``rgb48le``): the values a 16-bit video stores, of which 8-bit
    frames keep only the high bytes (image files are still ``read``'s).

    ``files``: a frames folder's frames as a run listed them when it planned its outputs' names:
    exactly those are read, so a frame removed meanwhile is an error naming it (and one added is
    not read), never every later frame shifted onto its predecessor's name.

    A frames folder must hold frames of one size unless ``same_size`` is False. A video that
    ffmpeg cannot decode to its end (a cut-off download, a damaged file) raises ``UserError`` after
    its last good frame unless ``allow_truncated``: see ``check_decode``.
    """
    path = Path(path)
    if path.is_dir():
        planned = files is not None
        files = list_frame_files(path) if files is None else list(files)
        if not files:
            raise UserError(f"{shown(path)}: folder has no image frames (expected 00000.png, 00001.png, ...)")
        shape = None
        for file in files:
            if planned and not file.is_file():
                raise UserError(f"{shown(file)}: removed while the run read {shown(path)}; put it back, or run again on the folder as it is")
            frame = read(file)
            if same_size and shape is not None and frame.shape != shape:
                raise UserError(f"{shown(file)}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame; resize the folder")
            shape = frame.shape
            yield frame
        return
    if is_image(path):
        yield read(path)
        return
    _check_video(path)
    header = _header(path)
    width, height = header["size"]
    import ffmpeg

    # the command imageio-ffmpeg runs, with errors only on stderr, which is checked, and the frames
    # re-timed to the rate the clip is labelled with (the header's average rate): a constant-rate
    # video comes out frame for frame, a variable-rate one (a phone's, a joined clip) with its
    # duration kept, where ffmpeg's own choice of rate (the fastest stretch's) repeated frames
    source = progressive(ffmpeg.input(_ffmpeg_path(path))[VIDEO_STREAM])
    source = source.filter("fps", fps=header["fps"]) if header.get("fps") else source
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    pixels, dtype = ("rgb24", np.uint8) if bits == 8 else ("rgb48le", np.dtype("<u2"))
    stream = ffmpeg.output(square_pixels(shown_colours(source, path, header)), "-", pix_fmt=pixels, vcodec="rawvideo", f="image2pipe")
    # ffmpeg's messages go to a file, not a pipe read by a thread: a reading thread still blocked when
    # a failing consumer left this generator suspended held the pipe's lock at interpreter shutdown,
    # and closing the pipe then aborted Python ("Fatal Python error: _enter_buffered_busy")
    errors = tempfile.TemporaryFile()
    command = ffmpeg.compile(stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error"), cmd=ffmpeg_binary())
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
    except BaseException:
        errors.close()
        raise
    size = width * height * 3 * np.dtype(dtype).itemsize
    count, finished = 0, False
    try:
        while True:
            raw = process.stdout.read(size)
            if len(raw) < size:
                finished = True
                break
            count += 1
            yield np.frombuffer(raw, dtype=dtype).reshape(height, width, 3)
    finally:
        if not finished:
            process.kill()  # the consumer stopped early (or failed): ffmpeg must not wait on a full pipe
        process.stdout.close()
        code = process.wait()
        errors.seek(0)
        report = errors.read().decode(errors="replace")
        errors.close()
    check_decode(path, code, report, count, _header_frames(header), allow_truncated, header.get("duration"))


def _displayed_size_notice(record) -> bool:
    """False for imageio-ffmpeg's warning that the frames' size is not the stored one.

    A video with a rotation in its display matrix decodes upright (ffmpeg rotates it), with width
    and height swapped for 90° and 270°, and an anamorphic one with square pixels; the header's
    ``size`` is that displayed size, which is the one every reader here uses, so the warning tells
    the user nothing to act on.
    """
    return "is different from the source frame size" not in record.getMessage()


def _header(path: Path) -> dict:
    """ffmpeg's view of the container (size, fps, duration), from its header alone."""
    import logging

    import imageio_ffmpeg

    logging.getLogger("imageio_ffmpeg").addFilter(_displayed_size_notice)  # once: a filter is a set member
    if is_animated_webp(path):
        _check_webp_decoder(path)
    # absolute: "take:1.mp4" is no protocol; the size reported is that of the frames as every reader
    # here decodes them: upright (a phone's rotation applied) and with square pixels
    reader = imageio_ffmpeg.read_frames(str(path.resolve()), output_params=["-map", f"0:{VIDEO_STREAM}", *SQUARE_PIXELS])
    frame = reader.gi_frame  # the reader's locals, its ffmpeg `process` among them, stay readable after it ends
    try:
        header = next(reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise UserError(f"{shown(path)}: {_unreadable(path, str(exc)) or f'ffmpeg cannot read this video ({first_line(exc)})'}") from exc
    finally:
        reader.close()
        _close_pipes(frame.f_locals.get("process"))
    header["fps"] = exact_rate(header.get("fps"))
    if path.suffix.lower() in ANIMATIONS:
        times = _frame_times(path)  # one listing of the frames gives both
        if not header.get("duration") and times is not None:  # an animated WebP's header has none: its frames' durations added up
            header["duration"] = times[0][-1] / times[1]
        header["fps"] = _animation_rate(times, path.suffix.lower()) or header.get("fps")
    return header


def _close_pipes(process: subprocess.Popen | None) -> None:
    """Close the pipes to and from the ffmpeg of an imageio-ffmpeg reader that was closed, and reap
    it: the reader closes them only if ffmpeg still runs (imageio-ffmpeg issue #61), and the ffmpeg
    of a short video, or of one it cannot read, has ended by then: a ``ResourceWarning`` (an open
    file) for each, after every ``probe``. Its stderr is the reader's log thread's to close."""
    if not isinstance(process, subprocess.Popen):
        return
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            with suppress(OSError):
                pipe.close()
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)  # ended, or killed by the reader's close


def exact_rate(printed: float | None) -> float | None:
    """The frame rate ffmpeg prints in a video's header (``23.98 fps``: two decimals, which is what
    imageio-ffmpeg reads) made exact where it is an NTSC rate, ``k × 1000/1001`` (24000/1001 =
    23.976..., 30000/1001, 60000/1001: films, cameras and broadcasts). Read at the printed 23.98, a
    23.976 fps video was re-timed (``iter_frames``), counted (``probe``) and cut (``download``) at a
    rate 0.017 % too fast: a frame repeated every 2 minutes 5 seconds (a 3100-frame video read as
    3101 frames). Any other rate, and a whole one, is returned as it is; a printed rate only within
    its rounding (0.005) of an NTSC one is taken for it."""
    if not printed or printed < 1 or float(printed).is_integer():
        return printed
    ntsc = round(printed * 1.001) * 1000 / 1001
    return ntsc if abs(ntsc - printed) <= 0.005 else printed


ANIMATIONS = {".gif": (-0.5, 0.5), ".webp": (-1.0, 0.0)}
"""Formats that store a duration per frame, in whole ticks (a GIF's hundredths of a second, an
animated WebP's milliseconds), with no frame rate (``_animation_rate``), and how far a frame's
stored start may be from its exact time, in ticks, as ffmpeg writes them: a GIF's rounded, a
WebP's rounded down (libwebp's timestamps)."""


#: The rates an animation's frame times are matched against (``_animation_rate``), slowest
#: first, then the NTSC ones (the frame times of a short clip cannot tell 30 from 29.97).
ANIMATION_RATES = (10.0, 12.0, 12.5, 15.0, 20.0, 24.0, 25.0, 30.0, 50.0, 60.0)
NTSC_RATES = (23.976, 29.97, 59.94)


def _animation_rate(times: tuple[list[int], int] | None, suffix: str) -> float | None:
    """The frame rate of a GIF or an animated WebP (``suffix``), from its frames' start times
    (``times``, as ``_frame_times`` lists them): of ``ANIMATION_RATES`` and ``NTSC_RATES``, those whose exact frame times, rounded as the
    format stores them (``ANIMATIONS``), are those times (a rate of less than two ticks a frame, a
    GIF's 60, fits any times and is not tried), the slowest whose times are stored exactly, none
    rounded, else the slowest (a 25 fps clip fits 50 as well; its first 3 or 4 frames, 4
    hundredths each, fit 24 too, rounded from 4.17: it was read at 24); none fitting, or two frames
    only, its frames over its duration where they last alike (within a tick), else the rate of its
    shortest frame (a frame held longer is then read several times, the timing kept). ffmpeg
    labels a 30 fps GIF (stored 3, 3, 4, ... hundredths) with its shortest delay's rate, 33.33, at
    which every third frame would be read twice, and an animated WebP with a guess (29.97 for 10
    frames at 30); and libwebp merges identical neighbouring frames into one longer one (a person
    standing still for 4 frames becomes one frame of 4/30 s), so neither the label nor frames over
    duration reads each frame once. None (ffmpeg's label stands) for a clip of one frame, or when
    ffmpeg cannot tell."""
    if times is None or len(times[0]) < 3:
        return None
    points, ticks = times
    starts, (low, high) = points[:-1], ANIMATIONS[suffix]

    def fits(rate: float) -> bool:
        frames = [int(start * rate / ticks + 0.5) for start in starts]
        return all(low <= start - frame * ticks / rate + 1e-9 and start - frame * ticks / rate - 1e-9 <= high
                   for start, frame in zip(starts, frames)) and all(b > a for a, b in zip(frames, frames[1:]))  # fmt: skip

    def exact(rate: float) -> bool:  # the stored starts are the rate's frame times, none rounded
        return all(abs(start * rate / ticks - round(start * rate / ticks)) < 1e-6 for start in starts)

    gaps = [b - a for a, b in zip(points, points[1:])]
    even = round(len(starts) * ticks / points[-1], 3)  # frames over duration
    if len(starts) < 3:  # two frames fit too many rates
        return even
    fitting = [rate for rate in (*ANIMATION_RATES, *NTSC_RATES) if ticks / rate >= 2 and fits(rate)]
    if fitting:  # the slowest stored exactly, else the slowest
        return next((rate for rate in fitting if exact(rate)), fitting[0])
    return even if max(gaps) - min(gaps) <= 1 else round(ticks / max(min(gaps), 1), 3)


def _frame_times(path: Path) -> tuple[list[int], int] | None:
    """The start time of each stored frame of ``path`` and the end of its last, in ticks of its time
    base, and the ticks per second: ffmpeg lists the packets (``framecrc``, copied, not decoded).
    None when ffmpeg cannot tell, or the time base is not whole ticks of a second."""
    import re

    import ffmpeg

    stream = ffmpeg.output(ffmpeg.input(_ffmpeg_path(path))[VIDEO_STREAM], "-", c="copy", f="framecrc")
    done = subprocess.run(ffmpeg.compile(stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error"), cmd=ffmpeg_binary()),
                          capture_output=True, text=True, errors="replace")  # fmt: skip
    base = re.search(r"^#tb 0: 1/(\d+)$", done.stdout, re.MULTILINE)
    packets = [[int(field) for field in line.split(",")[1:4]] for line in done.stdout.splitlines() if re.match(r"0,\s*-?\d", line)]
    if done.returncode != 0 or base is None or not packets or int(base.group(1)) <= 0:
        return None
    points = [pts for pts, _, _ in packets] + [packets[-1][0] + packets[-1][2]]
    return ([point - points[0] for point in points], int(base.group(1))) if points[-1] > points[0] else None


def _check_webp_decoder(path: Path) -> None:
    """Refuse the animated WebP ``path`` when an ffmpeg that reads it (``ffmpeg_binary``, and
    imageio-ffmpeg's, which reads headers) has no ``webp_anim`` decoder: before FFmpeg 9.0 it skips
    the frames and fails on "image data not found". One line naming the file and the fix."""
    import imageio_ffmpeg

    from .ffmpeg import _decoders

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    for binary in dict.fromkeys((ffmpeg_binary(), bundled)):
        if "webp_anim" in _decoders(binary):
            continue
        if binary == bundled:
            fix = "upgrade imageio-ffmpeg (pip install -U imageio-ffmpeg)"
        elif "webp_anim" in _decoders(bundled):
            fix = "take that ffmpeg off PATH (imageio-ffmpeg's own can)"
        else:
            fix = "upgrade that ffmpeg"
        raise UserError(f"{shown(path)}: an animated WebP, which the ffmpeg in use ({binary}) cannot decode (FFmpeg 9.0 or later can); "
                        f"{fix}, or give the clip as an .mp4 or a folder of frames")


def _unreadable(path: Path, report: str) -> str | None:
    """Why ffmpeg could not open ``path``, and the fix, where its report says (else None)."""
    if "Permission denied" in report:
        return permission_denied()
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes); download or export it again"
    if "(attached pic)" in report and f"'0:{VIDEO_STREAM}'" in report:  # a song's album art: no video to read
        return "no video stream in this file, only a cover picture (a sound file?); give a video"
    if "Output file does not contain any stream" in report or ("Stream #" in report and "Video:" not in report):
        return "no video stream in this file (sound only?); give a video"
    if "misdetection possible" in report:  # ffmpeg only guessed the format from the name
        return "not a video (ffmpeg does not recognise what the file holds); check that it is the video you meant"
    if "moov atom not found" in report:
        return "not a whole video (its index, the 'moov atom', is missing: an unfinished download or recording); download or export it again"
    if "Invalid data found when processing input" in report:
        return "not a video ffmpeg can read (invalid data); check that the file is the video you meant"
    return None


def _header_frames(header: dict) -> int | None:
    duration, fps = header.get("duration"), header.get("fps")
    if duration and fps and duration > 0 and fps > 0:
        return int(round(duration * fps))
    return None


def check_decode(
    path: Path, code: int, stderr: str, count: int, expected: int | None, allow_truncated: bool, duration: float | None = None
) -> None:
    """Refuse a video that did not decode to its end: ffmpeg reported errors, or far fewer frames
    came out than its header's duration promises (more than 10 % and 2 frames short) while the
    file's streams end well before that ``duration`` (a cut-off download; a video whose sound
    merely runs on after the picture is complete)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if allow_truncated and count > 0:
        return
    short = expected is not None and count < expected * 0.9 - 2
    if short and not lines and code == 0 and duration:
        reached = _streams_end(path)
        short = reached is None or reached < duration * 0.9
    if code != 0 and count == 0:
        raise UserError(f"{shown(path)}: ffmpeg cannot decode this video ({lines[-1] if lines else f'exit {code}'})")
    cut = _cut_off_webp(path)
    if lines or code != 0 or short or cut:
        what = f"ffmpeg reports {lines[0]!r}" if lines else cut or f"its header promises about {expected} frames"
        raise UserError(
            f"{shown(path)}: truncated or damaged video: {what}, and {count} frames decode; "
            "download or export it again (animate, align, crop, frames, matte and preprocess take --allow-truncated to use the "
            "frames that decode; for the other commands extract them first with `magicanimate frames --allow-truncated`)"
        )


def _cut_off_webp(path: Path) -> str | None:
    """What the header of an animated WebP shorter than its RIFF size promises (a cut-off download,
    whose frames there are ffmpeg decodes without a word); None for a whole one or another file."""
    if not is_animated_webp(path):
        return None
    try:
        with open(path, "rb") as file:
            promised = int.from_bytes(file.read(8)[4:], "little") + 8
        size = path.stat().st_size
    except OSError:
        return None
    return f"its header promises {promised} bytes and {size} are there" if size < promised else None


def _streams_end(path: Path) -> float | None:
    """Seconds into the file that its streams (sound included) reach, read packet by packet
    without decoding; None when ffmpeg cannot tell."""
    import subprocess

    import ffmpeg

    stream = ffmpeg.output(ffmpeg.input(_ffmpeg_path(path)), "-", f="null", c="copy", map="0")
    stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    done = subprocess.run(ffmpeg.compile(stream, cmd=ffmpeg_binary()), capture_output=True, text=True, errors="replace")
    times = [line.partition("=")[2] for line in done.stdout.splitlines() if line.startswith("out_time_us=")]
    return int(times[-1]) / 1e6 if done.returncode == 0 and times and times[-1].isdigit() else None


def read_frames(path: Path, fps: float | None = None, allow_truncated: bool = False) -> Frames:
    """A whole clip in memory (see ``iter_frames`` for streaming)."""
    info_fps = probe(path, fps).fps if not is_image(Path(path)) else (fps or DEFAULT_FPS)
    frames = list(iter_frames(path, allow_truncated=allow_truncated))
    if not frames:
        raise UserError(f"{path}: no frames")
    return Frames(np.stack(frames), info_fps)


def check_video(path: Path, fps: float | None = None) -> None:
    """``path`` is a video ffmpeg opens, read from its header alone (no pass over the stream), else
    a one-line ``UserError`` saying why (no video, its index missing, sound only, ...). With
    ``fps``, also one its header's duration shows too short to give a frame at that rate (ffmpeg's
    ``fps`` filter keeps none of a video shorter than half a period; the header's duration is
    rounded to 10 ms, so a video that close to that length is left to the extraction to tell)."""
    _check_video(path)
    duration = _header(path).get("duration")
    if fps and duration and duration > 0 and (duration + 0.01) * fps < 0.5:
        raise UserError(f"{shown(path)}: the video ({duration:g} s) is shorter than one frame at --fps {fps:g}; raise --fps")


def _check_video(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if not path.is_file():
        raise UserError(f"{path}: not a video file")


def extract_frames(
    video: Path, folder: Path, *, fps: float = DEFAULT_FPS, progress=None, expected: int | None = None, allow_truncated: bool = False
) -> int:
    """Write the frames of ``video`` at ``fps`` into the (empty, existing) ``folder`` as 00000.png...

    ffmpeg's ``fps`` filter re-times the video, dropping or repeating frames by timestamp; PNGs at
    zlib level 1. Not atomic by itself: callers write into a temporary folder and rename it.
    Returns the number of frames written. ``expected`` is only the progress bar's total. A video
    that does not decode to its end is refused unless ``allow_truncated`` (see ``check_decode``).
    """
    import subprocess
    import tempfile

    import ffmpeg

    header = _header(Path(video))

    source = progressive(ffmpeg.input(_ffmpeg_path(video))[VIDEO_STREAM]).filter("fps", fps=fps)  # absolute: "a:b.mp4" is no protocol
    stream = square_pixels(shown_colours(source, Path(video), header))
    pattern = _ffmpeg_path(folder).replace("%", "%%") + "/%05d.png"  # a literal % in the folder name
    # zlib level 1: ~6x faster than ffmpeg's default for ~10 % larger files (still lossless)
    stream = ffmpeg.output(stream, pattern, start_number=0, pix_fmt="rgb24", vcodec="png", compression_level=1)
    stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    args = ffmpeg.compile(stream, cmd=ffmpeg_binary(), overwrite_output=True)
    with tempfile.TemporaryFile() as errors:
        process = popen(args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        try:
            for raw in process.stdout:
                key, _, value = raw.decode(errors="replace").strip().partition("=")
                if key == "frame" and progress is not None and value.isdigit():
                    done = int(value)
                    progress("frames", done, max(expected or 0, done))
        except BaseException:  # Ctrl-C, SIGTERM, a progress callback that failed: nobody keeps the rest
            process.kill()  # else ffmpeg decodes the whole video before wait() returns (seen: 9 s on a 2-minute one)
            raise
        finally:
            process.stdout.close()
            code = process.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    from .. import files

    refusal = files.ffmpeg_write_error(stderr, files.output_of(folder), code)  # a full disk is no damaged video
    if refusal is not None:
        raise refusal
    count = len(list_frame_files(folder))
    duration = header.get("duration")
    check_decode(Path(video), code, stderr, count, int(round(duration * fps)) if duration else None, allow_truncated, duration)
    if progress is not None:
        progress("frames", count, count)
    return count


def remux_mp4(source: Path, target: Path) -> bool:
    """Copy the video stream of ``source`` into the mp4 ``target`` (faststart); re-encode with
    libx264 when it cannot be copied. Its first sound stream too, if it has one
    (``sound_options``); without it if that fails. True when ffmpeg succeeded. Not atomic by
    itself."""
    import ffmpeg

    codecs = audio_streams(source)
    sounds = ([sound_options(codecs[0], target)] if codecs else []) + [None]
    for codec in ({"vcodec": "copy"}, {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": 18}):
        for sound in sounds:  # a sound that cannot be kept costs the sound, not a re-encoding of the picture
            video = ffmpeg.input(_ffmpeg_path(source))
            streams = [video[VIDEO_STREAM]] + ([video["a:0"]] if sound is not None else [])  # the first of each
            stream = ffmpeg.output(*streams, _ffmpeg_path(target), movflags="+faststart", **codec, **(sound or {"an": None}))
            if _run_ffmpeg(stream) is None:
                return True
    return False


def encode_cut(source: Path, target: Path, *, start: float | None, box: tuple[int, int, int, int], frames: int | None,
               fps: float, seconds: float) -> str | None:
    """Re-encode part of ``source`` into the mp4 ``target`` (libx264 crf 18, yuv420p, faststart):
    from ``start`` seconds (input seeking), cropped to ``box`` = (x, y, width, height) of the frames
    as ``probe`` sizes them (upright, square pixels: an anamorphic video is scaled first), at most
    ``frames`` frames. The sound of those frames comes too (the first sound stream, if ``source``
    has one; AAC): it starts half a frame after ``start`` (the first frame's time; ``start`` is
    half a frame before it; without ``start``, at the first picture: ``picture_start``) and lasts
    ``seconds``; a sound ffmpeg cannot encode is left out. None when it worked, else ffmpeg's
    error line. Not atomic by itself."""
    import ffmpeg

    x0, y0, w, h = box
    path = _ffmpeg_path(source)
    stream = ffmpeg.input(path, ss=f"{start:.6f}") if start is not None else ffmpeg.input(path)
    video = progressive(stream[VIDEO_STREAM])
    shown = shown_colours(video, Path(source), _header(Path(source)))
    if shown is not video:  # converted (HDR, BT.2020): written as the BT.709 video it now is, labelled so
        shown = shown.filter("scale", out_color_matrix="bt709", out_range="tv")
    streams = [square_pixels(shown).filter("crop", w, h, x0, y0).filter("setpts", "PTS-STARTPTS")]
    limit = {"frames:v": int(frames)} if frames is not None else {}
    if audio_streams(source):
        begin = start + 0.5 / fps if start is not None else picture_start(source)
        window = ({"ss": f"{begin:.6f}"} if begin > 0 else {}) | {"t": f"{seconds:.6f}"}
        out = ffmpeg.output(*streams, ffmpeg.input(path, **window)["a:0"], _ffmpeg_path(target), vcodec="libx264", pix_fmt="yuv420p",
                            crf=18, movflags="+faststart", **AAC, **limit)  # fmt: skip
        if _run_ffmpeg(out) is None:
            return None
    out = ffmpeg.output(*streams, _ffmpeg_path(target), vcodec="libx264", pix_fmt="yuv420p", crf=18, movflags="+faststart", an=None, **limit)
    return _run_ffmpeg(out)
