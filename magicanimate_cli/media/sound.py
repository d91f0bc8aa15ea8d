"""Sound: the sound streams of a file (``audio_streams``), where its picture starts and its sound
ends, how a video keeps the sound of the video it is made from (``kept_sound``; ``sound_options``:
copied where its container holds the codec, else AAC, or Opus in a WebM), the ``--audio`` checks
(``check_audio_source``, ``check_holds_sound``) and the warning of a video written without its sound."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from ..errors import UserError, shown
from .ffmpeg import VIDEO_STREAM, _ffmpeg_report, has_encoder
from .paths import SOUNDLESS_EXTENSIONS, check_name_encoding, check_readable, is_video, is_video_output

_STREAM_LINE = re.compile(r"^\s+Stream #\d+:\d+\S*: (Video|Audio): ([^\s,]+)")


def audio_streams(path: Path) -> list[str]:
    """The codecs of the sound streams in ``path`` (a video or a sound file), as the header's
    stream lines list them (metadata lines, indented deeper, never match); ``[]`` for none."""
    return [found.group(2) for found in map(_STREAM_LINE.match, _ffmpeg_report(path).splitlines()) if found and found.group(1) == "Audio"]


def picture_start(path: Path) -> float:
    """Seconds from the start of ``path`` to its first picture (0 for a sound file). The readers
    (``iter_frames``) fill that time with the first picture, so their frames and a kept sound
    both start at the file's start; ``download``'s cuts hold no such filling, and start their
    frames and sound here. Read from the first decoded frame's timestamp (``showinfo``), which
    every ffmpeg prints, against the container's start."""
    report = _ffmpeg_report(path, "-map", f"0:{VIDEO_STREAM}", "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-")
    base = re.search(r"^\s+Duration: .*?, start: (-?\d+(?:\.\d+)?)", report, re.MULTILINE)
    first = re.search(r"\bpts_time:(-?\d+(?:\.\d+)?)", report)
    return max(0.0, float(first.group(1)) - (float(base.group(1)) if base else 0.0)) if first else 0.0


_TIME = re.compile(r"\btime=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def sound_end(path: Path) -> float:
    """Seconds from the start of ``path`` to the end of its first sound stream's last packet, as
    ffmpeg counts it when it copies that stream to nowhere (no decoding: milliseconds for hours of
    sound; the header's duration may be missing, estimated, or the picture's); 0 when it has no
    sound stream or no packet in it."""
    times = _TIME.findall(_ffmpeg_report(path, "-map", "0:a:0", "-c", "copy", "-f", "null", "-"))  # none: an error, no time=
    if not times:
        return 0.0
    hours, minutes, seconds = times[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


MP4_SOUND = ("aac", "mp3", "alac")  # sound codecs an mp4 (and a .mov, a .mkv) holds as they are; a .m4v only AAC
AAC = {"acodec": "aac", "audio_bitrate": "192k"}  # what other sound becomes
WEBM_SOUND = ("opus", "vorbis")  # the only sound codecs a WebM holds


def sound_options(codec: str, output: Path) -> dict:
    """ffmpeg's output options for a sound stream of ``codec`` (as ``audio_streams`` names it)
    in the video ``output``: copied as it is when its container holds that codec (no second
    lossy encoding), else encoded to AAC; in a WebM to Opus (Vorbis where the ffmpeg in use
    has no libopus), the sound a WebM takes."""
    suffix = Path(output).suffix.lower()
    holds = WEBM_SOUND if suffix == ".webm" else ("aac",) if suffix == ".m4v" else MP4_SOUND
    return {"acodec": "copy"} if codec in holds else encoded_sound(output)


def encoded_sound(output: Path) -> dict:
    """ffmpeg's output options for sound encoded for the video ``output``: AAC, or in a WebM Opus
    (Vorbis where the ffmpeg in use has no libopus)."""
    if Path(output).suffix.lower() != ".webm":
        return AAC
    return {"acodec": "libopus", "audio_bitrate": "128k"} if has_encoder("libopus") else {"acodec": "libvorbis", "audio_bitrate": "192k"}


EDIT_LISTS = (".mp4", ".mov", ".m4v")
"""Containers whose edit lists start a copied sound exactly where it was cut, between two of its
packets. A WebM or an MKV has none: copied from a time on, the sound starts at the packet (or the
video's keyframe) before it, and the muxer delays the picture by as much instead."""


def kept_sound(source: Path | None, output: Path) -> dict:
    """``FrameWriter`` keyword arguments that give the video ``output`` the sound of the video
    ``source`` it is made from, frame for frame (a stage that keeps the frames' times: DensePose,
    crop, align), so the music of a dance video reaches the poses and ``animate --audio``; ``{}``
    when there is no ``source``, either is not a video, ``output`` holds no sound (a GIF, an
    animated WebP: it is dropped, as a frames folder drops it) or ``source`` has no sound."""
    if source is None:
        return {}
    source, output = Path(source), Path(output)
    if output.suffix.lower() in SOUNDLESS_EXTENSIONS:
        return {}
    if not (is_video(output) and is_video(source) and source.is_file() and audio_streams(source)):
        return {}
    return {"audio": source, "sound_kept": True}


def warn_without_sound(output: Path, source, why: str, stacklevel: int = 3) -> None:
    """The one ``warning:`` line (``InputWarning``) of a video written without the sound it was
    to keep from ``source`` (a file or a URL), and ``why``: ``FrameWriter``, ``download``."""
    from ..errors import InputWarning

    warnings.warn(f"{shown(output)}: written without the sound of {shown(source)} ({why})", InputWarning, stacklevel=stacklevel)


def check_holds_sound(output: Path) -> None:
    """Refuse to give sound (``--audio``) to an ``output`` that cannot hold it, a folder of frames,
    a GIF or an animated WebP, in one line naming it and the fix, before any work."""
    output = Path(output)
    if not is_video_output(output):
        raise UserError(f"{shown(output)}: a folder of frames holds no sound; write a video (-o {output.name}.mp4) to give it --audio")
    if output.suffix.lower() in SOUNDLESS_EXTENSIONS:
        kind = "a GIF" if output.suffix.lower() == ".gif" else "an animated WebP"
        raise UserError(f"{shown(output)}: {kind} holds no sound; write {output.stem}.mp4 or {output.stem}.webm to give it --audio")


def check_audio_source(path: Path) -> Path:
    """Refuse a ``--audio`` source that is missing or has no sound, in one line naming it."""
    path = Path(path)
    check_name_encoding(path)
    check_readable(path)
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such file; --audio takes a video or sound file whose sound the output gets")
    if not audio_streams(path):
        raise UserError(f"{shown(path)}: has no sound (no audio stream ffmpeg can read); give --audio the video the poses were made from")
    return path
