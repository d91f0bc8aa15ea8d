"""The one place that reads and writes videos, frame folders and images.

Convention (see docs/architecture.md): frames in memory are ``numpy.uint8`` RGB arrays of shape
``H×W×3`` (a clip is ``T×H×W×3``) and an fps travels with them. Videos go through ffmpeg:
ffmpeg-python builds the commands, the binary is the system ``ffmpeg`` when there is one, else
the static build shipped by imageio-ffmpeg. Frame folders hold ``00000.png``, ``00001.png``, ...

Every writer writes to a temporary name beside its destination and renames when complete, so
an interrupted run never leaves a half-written file under the final name, and nothing that exists
is replaced unless ``overwrite`` is set.

The modules, each importing only those above it:

* ``paths``: what a name is (``is_video``, ``is_image``, ``is_video_output``), inputs as typed (``input_path``) and
  output checks (``output_path``, ``check_output``, ``check_apart``, ``check_writable``, ...);
* ``ffmpeg``: the binary (``ffmpeg_binary``), running it (``popen``), its filters (``has_filter``),
  the stream readers decode (``VIDEO_STREAM``) and their filters (``square_pixels``, ``progressive``);
* ``images``: one image file read as shown (``open_image``, ``read_image``, ``read_still`` for one picture: EXIF, ICC → sRGB, HEIF)
  or written (``write_png``);
* ``frame_folders``: frame names and a folder's frames in order (``list_frame_files``);
* ``colours``: HDR and wide-gamut video in SDR BT.709 colours (``shown_colours``);
* ``sound``: sound streams and the sound a video keeps (``audio_streams``, ``kept_sound``);
* ``video``: reading videos (``probe``, ``pixel_format``, ``iter_frames``, ``read_frames``,
  ``check_decode``, ``extract_frames``) and the ones made from them (``remux_mp4``, ``encode_cut``);
* ``writer``: ``FrameWriter``, ``committed_together``, ``write_frames``, ``FrameStore``, ``check_clip_fits`` (a clip a GIF or WebP cannot hold, said before the work).

Every name the rest of the package uses is re-exported here (``media.probe(...)``); a test that
replaces one patches the module that looks it up (``media.writer.ffmpeg_binary``, ...).
"""

from __future__ import annotations

from ..frames import DEFAULT_FPS
from .colours import shown_colours
from .ffmpeg import VIDEO_STREAM, ffmpeg_binary, popen, progressive, square_pixels
from .frame_folders import check_frame_sizes, frame_name, list_frame_files
from .images import (
    as_shown,
    has_transparency,
    is_16bit_colour,
    open_image,
    read_alpha,
    read_image,
    read_map,
    read_still,
    save_image_like,
    save_png,
    to_rgb,
    upright,
    write_png,
)
from .paths import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    check_apart,
    check_encoder,
    check_name_encoding,
    check_names,
    check_only_outputs_in,
    check_output,
    check_sequence_output,
    check_writable,
    foreign_entry,
    input_path,
    is_image,
    is_video,
    is_video_output,
    needs_even_sides,
    output_path,
)
from .sound import (
    audio_streams,
    check_audio_source,
    check_holds_sound,
    kept_sound,
    picture_start,
    sound_end,
    warn_without_sound,
)
from .video import (
    Frames,
    VideoInfo,
    check_decode,
    check_video,
    encode_cut,
    extract_frames,
    iter_frames,
    pixel_format,
    probe,
    read_frames,
    remux_mp4,
    same_rate,
)
from .writer import FrameStore, FrameWriter, check_clip_fits, committed_together, write_frames

__all__ = [
    "DEFAULT_FPS", "FrameStore", "FrameWriter", "Frames", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_STREAM", "VideoInfo",
    "as_shown", "audio_streams", "check_apart", "check_audio_source", "check_clip_fits", "check_decode", "check_encoder", "check_frame_sizes",
    "check_holds_sound", "check_name_encoding", "check_names", "check_only_outputs_in", "check_output", "check_sequence_output",
    "check_video", "check_writable", "committed_together", "encode_cut", "extract_frames", "ffmpeg_binary", "foreign_entry",
    "frame_name", "has_transparency", "input_path", "is_16bit_colour", "is_image", "is_video", "is_video_output", "iter_frames", "kept_sound",
    "list_frame_files", "needs_even_sides", "open_image", "output_path", "picture_start", "pixel_format", "popen", "probe",
    "progressive", "read_alpha", "read_frames", "read_image", "read_map", "read_still", "remux_mp4", "same_rate", "save_image_like",
    "save_png", "shown_colours", "sound_end", "square_pixels", "to_rgb", "upright", "warn_without_sound", "write_frames",
    "write_png",
]  # fmt: skip
