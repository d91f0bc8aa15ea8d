"""The one place that reads and writes videos, frame folders and images.

Convention (see docs/architecture.md): frames in memory are ``numpy.uint8`` RGB arrays of shape
``H×W×3`` (a clip is ``T×H×W×3``) and an fps travels with them. Videos go through ffmpeg:
ffmpeg-python builds the commands, the binary is the system ``ffmpeg`` when there is one, else
the static build shipped by imageio-ffmpeg. Frame folders hold ``00000.png``, ``00001.png``, ...

Every writer writes to a temporary name beside its destination and renames when complete, so
an interrupted run never leaves a half-written file under the final name, and nothing that exists
is replaced unless ``overwrite`` is set.
"""

from __future__ import annotations

import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import InputWarning, UserError, first_line, shown
from .files import discard, temp_beside
from .frames import DEFAULT_FPS

VIDEO_EXTENSIONS = {  # what ffmpeg reads: phones, cameras (.mts/.m2ts), broadcast and DVD captures (.ts, .mpg), the web
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".ts", ".mts", ".m2ts", ".3gp", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv",
}
WRITABLE_VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".m4v"}  # containers that take H.264
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
HEIF_EXTENSIONS = {".heic", ".heif"}  # iPhone photos: read through pillow-heif's Pillow plugin
MAX_PIXELS = 1 << 28  # 268 MP: a 200 MP phone photo (16320x12240) reads; Pillow alone refuses above 179 MP


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
    """Whether two frame rates are one: a header's rate is rounded (23.98 for 24000/1001), so
    ``--fps 23.976`` names it too (within 0.1 %)."""
    return abs(a - b) <= 1e-3 * max(a, b)


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def check_name_encoding(path: Path | str) -> None:
    """Refuse a path that is not valid UTF-8 (a name made on another system, say ``caf\xe9.mp4`` in
    Latin-1): ffmpeg-python cannot pass it to ffmpeg. One line naming the file and the fix."""
    import os

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(str(path))  # the bytes on disk, shown as \xNN where they are not UTF-8
        raise UserError(f"{raw.decode('utf-8', 'backslashreplace')}: the name is not valid UTF-8, which ffmpeg cannot be handed; rename it") from None


def _ffmpeg_path(path: Path | str) -> str:
    """``path`` as ffmpeg-python takes it: absolute (``a:b.mp4`` is then no protocol), UTF-8."""
    check_name_encoding(path)
    return str(Path(path).resolve())


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """The ffmpeg executable: the system one if on PATH, else imageio-ffmpeg's static build."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ----------------------------------------------------------------------------- images


def to_rgb(image) -> np.ndarray:
    """Any PIL image (RGBA, LA, P, L, I;16, I, F, CMYK, ...) as uint8 RGB.

    Transparent pixels are composited over white; 16-bit and float images are scaled to 8 bits
    instead of clipped.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F":
            peak = 1.0 if array.max() <= 1.0 else 255.0
        gray = np.clip(np.floor(array / peak * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def has_transparency(image) -> bool:
    """An alpha channel, or a colour key (a PNG's tRNS chunk: palette, RGB or grey pixels of one
    value are transparent, as PNG optimisers write a mask with only 0 and 255)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("P", "RGB", "L") and "transparency" in image.info)


@contextmanager
def open_image(path: Path):
    """A loaded PIL image of ``path`` (any format Pillow reads), closed after the block.

    Every way an image file can be unusable — missing, not an image, truncated, a decompression
    bomb (more than ``MAX_PIXELS`` pixels, or than Pillow's own guard if that is set higher) — is a
    one-line ``UserError``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{shown(path)}: is a folder; pass an image file (PNG or JPEG)")
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such image file")
    if not _heif_plugin() and path.suffix.lower() in HEIF_EXTENSIONS:  # registered for every file: a HEIC may be named .jpg
        raise UserError(f"{shown(path)}: a HEIC/HEIF photo needs pillow-heif; pip install pillow-heif (or export the photo as JPEG)")
    if path.stat().st_size == 0:
        raise UserError(f"{shown(path)}: empty file (0 bytes); write the image again or remove it")
    try:
        with _quiet_exif(), _pixel_limit() as limit:
            image = Image.open(path)
            image.load()
    except Image.DecompressionBombError as exc:
        raise UserError(f"{shown(path)}: image too large to decode safely ({first_line(exc)}); resize it below {limit} pixels") from None
    except PermissionError as exc:
        raise UserError(f"{shown(path)}: {permission_denied()}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{shown(path)}: not a readable image ({exc.__class__.__name__}); pass a PNG or JPEG") from exc
    with image:
        yield image


@contextmanager
def _quiet_exif():
    """Pillow warns "Corrupt EXIF data" on stderr for a photo whose metadata is damaged but whose
    pixels are fine (the damaged EXIF then reads as none), and ``DecompressionBombWarning`` for an
    image of 89 to 179 megapixels (a 100 MP phone photo), which is read; only those warnings are
    silenced (above that, ``DecompressionBombError`` is said in one line)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


@contextmanager
def _pixel_limit():
    """Pillow's decompression-bomb guard raised to ``MAX_PIXELS`` for the block (restored after it;
    a caller's higher limit, or none, is kept); yields the number of pixels above which an image is
    refused. Pillow refuses above twice ``Image.MAX_IMAGE_PIXELS`` (179 MP by default), which a
    200 MP phone's photos exceed."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    if before is not None and 2 * before < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    try:
        yield None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS
    finally:
        Image.MAX_IMAGE_PIXELS = before


@lru_cache(maxsize=1)
def _heif_plugin() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow once; False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def upright(image):
    """A PIL ``image`` turned the way viewers show it (its EXIF orientation, as phones store photos
    sideways and tag them); ``image`` itself when it carries no turn. A corrupt EXIF block reads as
    no turn, without Pillow's warning."""
    from PIL import ExifTags, ImageOps

    with _quiet_exif():
        if image.getexif().get(ExifTags.Base.Orientation, 1) not in range(2, 9):
            return image
        return ImageOps.exif_transpose(image)


def as_shown(image):
    """A photo as viewers show it: turned by its EXIF orientation (``upright``) and with its colours
    in sRGB (``in_srgb``)."""
    return in_srgb(upright(image))


def in_srgb(image):
    """A PIL ``image`` with its colours converted to sRGB from the ICC profile it embeds (an
    iPhone's Display P3, a camera's Adobe RGB, a print CMYK profile), as colour-managed viewers
    show it; read as sRGB, such a photo's colours come out washed out (P3, Adobe RGB) or wrong
    (CMYK). ``image`` itself, byte for byte, when it embeds no profile, an sRGB one (by its
    description: a camera's "sRGB IEC61966-2.1"), a damaged one, or is not RGB(A)/CMYK. Relative
    colorimetric with black-point compensation, as photo editors convert by default; the profile
    is not kept (the pixels are sRGB now)."""
    import io

    from PIL import ImageCms

    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image
        converted = ImageCms.profileToProfile(
            image, profile, ImageCms.createProfile("sRGB"), renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGBA" if image.mode == "RGBA" else "RGB", flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
        )  # fmt: skip
    except (ImageCms.PyCMSError, OSError, ValueError):  # a damaged or unusable profile reads as none
        return image
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


def check_frame_sizes(folder: Path) -> tuple[int, int] | None:
    """Refuse a frames folder whose frames differ in size (as ``iter_frames`` does when it reaches
    one), from the files' headers alone: width and height as viewers show them (EXIF turn). A file
    Pillow cannot open is left to the reader, which says why. Returns the frames' (width, height),
    None if no frame opens."""
    from PIL import ExifTags, Image

    first = None
    for file in list_frame_files(folder):
        try:
            with _quiet_exif(), _pixel_limit(), Image.open(file) as image:
                size = image.size[::-1] if image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8) else image.size
        except Exception:  # noqa: BLE001 - said where the frame is read
            continue
        if first is None:
            first = size
        elif size != first:
            raise UserError(f"{shown(file)}: size {size[0]}x{size[1]} differs from the first frame's {first[0]}x{first[1]}; resize the folder")
    return first


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``H×W×3`` as viewers show it: upright, colours in sRGB (``as_shown``)."""
    with open_image(path) as image:
        return to_rgb(as_shown(image))


def read_alpha(path: Path) -> np.ndarray | None:
    """The alpha channel of an image file as uint8 ``H×W`` (oriented like ``read_image``), or None."""
    with open_image(path) as image:
        image = upright(image)
        if not has_transparency(image):
            return None
        return np.asarray(image.convert("RGBA"))[..., 3].copy()


def read_map(path: Path) -> np.ndarray:
    """A single-channel image (mask, label map) as stored, ``H×W``."""
    with open_image(path) as image:
        return np.asarray(image)


def write_png(path: Path, array: np.ndarray, *, replace: bool) -> None:
    """Write one PNG atomically (temporary name in the same folder, then rename). Without
    ``replace`` a file that appeared under ``path`` meanwhile is kept (``UserError``)."""
    from PIL import Image

    path = Path(path)
    from . import files

    with files.temporary(path, replace=replace) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_image_like(image, path: Path, source) -> None:
    """Save a PIL ``image`` the way ``source`` was saved: same format and colour profile (a Display
    P3 photo stays one); a JPEG keeps its quantisation tables and subsampling. Not atomic by itself
    (callers write into a temporary folder)."""
    fmt = source.format or "PNG"
    profile = {"icc_profile": source.info["icc_profile"]} if source.info.get("icc_profile") else {}
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        image.save(path, format="JPEG", qtables=source.quantization, subsampling=JpegImagePlugin.get_sampling(source), **profile)
    else:
        image.save(path, format=fmt, **profile)


def save_png(image, path: Path, compress_level: int = 6) -> None:
    """Save a PIL image or a uint8 array as PNG (zlib ``compress_level``); not atomic by itself."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, format="PNG", compress_level=compress_level)


def frame_name(index: int) -> str:
    return f"{index:05d}.png"


def list_frame_files(folder: Path, *, sequence: bool = True) -> list[Path]:
    """Image files of a frames folder, in frame order: numbers in the names compared as numbers
    (``1.png``, ``2.png``, ``10.png``; ``frame_9.png`` before ``frame_10.png``).

    The frames must be named one way, their numbers aside: ``frame_0001.png`` beside
    ``img_0001.png``, ``0001.png`` beside ``frame_0002.png``, or a ``cover.jpg`` beside numbered
    frames have no one order (sorting by name read them out of order or took the stray image as a
    frame), and are refused naming one of each way; so are two files for one frame (``00001.png``
    and ``00001.jpg``, ``1.png`` and ``01.png``). Names without numbers (``a.png``, ``b.png``) are
    read in name order. With ``sequence`` False the folder is no sequence (a folder of videos and
    their thumbnails): its images are listed in that order without these checks.
    """
    import re

    folder = Path(folder)
    try:
        files = [p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith(".")]
    except PermissionError as exc:
        raise UserError(f"{shown(folder)}: {permission_denied(folder=True)}") from exc

    def key(p: Path):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)]

    files = sorted(files, key=key)
    if not sequence:
        return files
    ways: dict[tuple, Path] = {}  # a name's parts between its numbers: one way of naming
    for file in files:
        ways.setdefault(tuple(re.split(r"\d+", file.stem)), file)
    if len(ways) > 1 and any(len(way) > 1 for way in ways):  # (names without numbers: in name order)
        numbered = next(way for way in ways if len(way) > 1)
        first, second = ways[numbered], next(file for way, file in ways.items() if way != numbered)
        raise UserError(f"{shown(folder)}: frames named two ways ({first.name} and {second.name}), so their order is unclear; "
                        "rename them one way (00000.png, 00001.png, ...) or move the others out")
    seen: dict[tuple, Path] = {}
    for file in files:  # 00001.png beside 00001.jpg, or 1.png beside 01.png: which is frame 1?
        stem = tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", file.stem))
        other = seen.setdefault(stem, file)
        if other is not file:
            what = "name" if other.stem.lower() == file.stem.lower() else "number"
            raise UserError(f"{shown(other)} and {file.name}: two frames of one {what} in the folder; keep one of them")
    return files


# ----------------------------------------------------------------------------- reading clips


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


def _counted_frames(path: Path, fps: float) -> int | None:
    """How many frames ``iter_frames`` yields of ``path``: ffmpeg decodes the video once through the
    same re-timing to ``fps`` and output timing (constant rate, from the file's start), into nothing;
    None when ffmpeg cannot tell (``iter_frames`` then says why, if it cannot either)."""
    import subprocess

    import ffmpeg

    stream = ffmpeg.output(ffmpeg.input(_ffmpeg_path(path))[VIDEO_STREAM].filter("fps", fps=fps), "-", f="null", fps_mode="cfr")
    stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
    done = subprocess.run(ffmpeg.compile(stream, cmd=ffmpeg_binary()), capture_output=True, text=True, errors="replace")
    frames = [line.partition("=")[2] for line in done.stdout.splitlines() if line.startswith("frame=")]
    return int(frames[-1]) if done.returncode == 0 and frames and frames[-1].isdigit() else None


def iter_frames(path: Path, same_size: bool = True, allow_truncated: bool = False) -> Iterator[np.ndarray]:
    """Frames of a video, a frames folder or a single image, as uint8 RGB, one at a time.

    A frames folder must hold frames of one size unless ``same_size`` is False. A video that
    ffmpeg cannot decode to its end (a cut-off download, a damaged file) raises ``UserError`` after
    its last good frame unless ``allow_truncated``: see ``check_decode``.
    """
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise UserError(f"{shown(path)}: folder has no image frames (expected 00000.png, 00001.png, ...)")
        shape = None
        for file in files:
            frame = read_image(file)
            if same_size and shape is not None and frame.shape != shape:
                raise UserError(f"{shown(file)}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame; resize the folder")
            shape = frame.shape
            yield frame
        return
    if is_image(path):
        yield read_image(path)
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
    stream = ffmpeg.output(square_pixels(shown_colours(source, path, header)), "-", pix_fmt="rgb24", vcodec="rawvideo", f="image2pipe")
    process = ffmpeg.run_async(
        stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error"), cmd=ffmpeg_binary(), pipe_stdout=True, pipe_stderr=True
    )
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    size = width * height * 3
    count, finished = 0, False
    try:
        while True:
            raw = process.stdout.read(size)
            if len(raw) < size:
                finished = True
                break
            count += 1
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    finally:
        if not finished:
            process.kill()  # the consumer stopped early (or failed): ffmpeg must not wait on a full pipe
        process.stdout.close()
        code = process.wait()
        reader.join()
        process.stderr.close()  # read to its end by the reader thread
    check_decode(path, code, b"".join(errors).decode(errors="replace"), count, _header_frames(header), allow_truncated, header.get("duration"))


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


REFERENCE_WHITE = 203.0
"""cd/m² of HDR's reference (diffuse) white (BT.2408; HLG's 75 % signal), shown as SDR white."""
HDR_PEAK = 1000.0
"""cd/m² of the brightest HDR highlight kept apart: HLG's nominal display peak (BT.2100), the
usual mastering peak of PQ video (HDR10 from phones and cameras); brighter ones clip."""
HDR_TRANSFERS = {"arib-std-b67": "HLG", "smpte2084": "PQ"}
_COLOURS = re.compile(r"\b([\w-]+)/([\w-]+)/([\w-]+)\b")  # the header's matrix/primaries/transfer


def video_colours(header: dict) -> tuple[str, str, str]:
    """The (matrix, primaries, transfer) the header names, in ffmpeg's words, read from its pixel
    format (``yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67)``); ``unknown`` for each when it names
    none of them or one name for all three (``yuv420p(tv, bt709)``: no HDR, no BT.2020)."""
    found = _COLOURS.search(str(header.get("pix_fmt") or ""))
    return found.groups() if found else ("unknown", "unknown", "unknown")


def shown_colours(stream, path: Path, header: dict):
    """``stream`` in the colours a player shows on an ordinary (SDR, BT.709) screen, where it needs
    it: HDR video (HLG, an iPhone's default, or PQ: HDR10 from other phones and cameras) tone
    mapped, and wide-gamut (BT.2020) video taken into BT.709's primaries; any other passes
    unchanged, byte for byte.

    HDR is made linear with ``REFERENCE_WHITE`` as 1.0 (zimg applies HLG's OOTF for a 1000 cd/m²
    display), so the reference white of BT.2408 becomes SDR white and what an SDR version of the
    video shows (skin, clothes: up to half that white) keeps its colour and contrast; the
    highlights above that up to ``HDR_PEAK`` are compressed into the rest (ffmpeg's ``mobius``,
    whose knee sits where BT.2390's in players does, unlike ``hable``, which darkens everything),
    and desaturated where they are brighter than twice the reference white. Frames are encoded for
    BT.709 (BT.1886) screens, as SDR video is. This needs ffmpeg's ``zscale`` filter (libzimg):
    without it the video is read as it was before, with one ``warning:`` line saying so and the fix.
    """
    matrix, primaries, transfer = video_colours(header)
    hdr = HDR_TRANSFERS.get(transfer)
    if hdr is None and primaries != "bt2020":
        return stream
    if not has_filter("zscale"):
        _warn_colours(path, hdr)
        return stream
    given = {"min": matrix, "pin": primaries, "tin": transfer}  # the header's word (the frames may carry none), BT.2020's where it says none
    given = {key: name if name != "unknown" else default for (key, name), default in zip(given.items(), ("bt2020nc", "bt2020", "bt2020-10"))}
    stream = stream.filter("zscale", t="linear", npl=REFERENCE_WHITE, p=given["pin"], **given).filter("format", "gbrpf32le").filter("zscale", p="709")
    if hdr is not None:
        stream = stream.filter("tonemap", "mobius", param=0.5, desat=2, peak=HDR_PEAK / REFERENCE_WHITE)
    return stream.filter("zscale", t="709").filter("format", "gbrp")


_WARNED_COLOURS: set[str] = set()


def _warn_colours(path: Path, hdr: str | None) -> None:
    """The one ``warning:`` line (``InputWarning``, once per video) of a video read without the
    conversion ``shown_colours`` gives it, for want of ``zscale``."""
    if str(path) in _WARNED_COLOURS:
        return
    _WARNED_COLOURS.add(str(path))
    what = f"HDR video ({hdr}) read without tone mapping, so its colours look dark and washed out" if hdr else \
        "wide-gamut (BT.2020) video read without converting its colours, so they look washed out"
    warnings.warn(InputWarning(f"{shown(path)}: {what}: the ffmpeg in use ({ffmpeg_binary()}) lacks the zscale filter (libzimg); "
                               "install an ffmpeg built with libzimg, or take that one off PATH so imageio-ffmpeg's own is used"),
                  stacklevel=4)


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
    # absolute: "take:1.mp4" is no protocol; the size reported is that of the frames as every reader
    # here decodes them: upright (a phone's rotation applied) and with square pixels
    reader = imageio_ffmpeg.read_frames(str(path.resolve()), output_params=["-map", f"0:{VIDEO_STREAM}", *SQUARE_PIXELS])
    try:
        return next(reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise UserError(f"{shown(path)}: {_unreadable(path, str(exc)) or f'ffmpeg cannot read this video ({first_line(exc)})'}") from exc
    finally:
        reader.close()


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
    if lines or code != 0 or short:
        what = f"ffmpeg reports {lines[0]!r}" if lines else f"its header promises about {expected} frames"
        raise UserError(
            f"{shown(path)}: truncated or damaged video: {what}, and {count} frames decode; "
            "download or export it again (animate, align, crop, frames, matte and preprocess take --allow-truncated to use the "
            "frames that decode; for the other commands extract them first with `magicanimate frames --allow-truncated`)"
        )


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
    from . import files

    refusal = files.ffmpeg_write_error(stderr, files.output_of(folder), code)  # a full disk is no damaged video
    if refusal is not None:
        raise refusal
    count = len(list_frame_files(folder))
    duration = header.get("duration")
    check_decode(Path(video), code, stderr, count, int(round(duration * fps)) if duration else None, allow_truncated, duration)
    if progress is not None:
        progress("frames", count, count)
    return count


def popen(args: list[str], **kwargs):
    """``subprocess.Popen`` for an ffmpeg that writes files on its own: on Linux it is killed
    (``PR_SET_PDEATHSIG``) when the thread that starts it ends, which the callers keep alive until
    it exits. Without this, ffmpeg went on writing frames into the temporary folder after a
    ``kill -9`` of the command (220 → 500 PNGs seen), using the CPU for a result nobody keeps."""
    import functools
    import os
    import subprocess

    from .processes import parent_death_signal

    arm = parent_death_signal()
    preexec = functools.partial(arm, os.getpid()) if arm is not None else None
    return subprocess.Popen(args, preexec_fn=preexec, **kwargs)


def _run_ffmpeg(stream) -> str | None:
    """Run an ffmpeg-python graph quietly; None when it worked, else ffmpeg's last error line."""
    import ffmpeg

    try:
        ffmpeg.run(stream.global_args("-hide_banner", "-loglevel", "error", "-nostdin"), cmd=ffmpeg_binary(),
                   capture_stdout=True, capture_stderr=True, overwrite_output=True)
    except ffmpeg.Error as exc:
        lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "failed"
    return None


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


# ----------------------------------------------------------------------------- writing


def input_path(value: Path | str) -> Path:
    """An input path as the user wrote it: ``~`` is the home folder; an empty one (an unset shell
    variable) is refused instead of read as the current folder, one this user may not read as such
    (``check_readable``)."""
    import os

    text = os.fspath(value)
    if not text:
        raise UserError('"": an empty input path (an unset shell variable?); name the file or folder to read')
    path = Path(text).expanduser()
    check_readable(path)
    return path


def check_readable(path: Path) -> None:
    """Refuse an input this user may not read (a file it may not open, a folder it may not list
    or enter, or one inside a folder it may not enter) in one line saying so and the fix
    (``permission_denied``), not as the image, video or sound it then seems not to be. A path that
    is not there is left to the caller, which says so."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except PermissionError as exc:
        raise UserError(f"{shown(path)}: {permission_denied(above=True)}") from exc
    except (OSError, ValueError):
        return
    folder = stat.S_ISDIR(mode)
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise UserError(f"{shown(path)}: {permission_denied(folder=folder)}")


def permission_denied(*, folder: bool = False, above: bool = False) -> str:
    """What follows ``path:`` when this user may not read ``path``: why, and the fix."""
    if above:
        return "permission denied: a folder on its way may not be entered; make it searchable (chmod +x) or run as a user who may"
    if folder:
        return "permission denied: this user may not list the folder; make it readable (chmod +rx) or run as a user who may"
    return "permission denied: this user may not read the file; make it readable (chmod +r) or run as a user who may"


def output_path(value: Path | str, option: str = "-o") -> Path:
    """An output path as the user wrote it, checked before it becomes a ``Path`` (which drops a
    trailing ``/``): ``~`` is the home folder; an empty one is refused (``-o "$OUT"`` with an unset
    variable would otherwise name the current folder); a name that ends in ``/`` (a folder) but
    reads as a video or an image file is refused (``-o out.mp4/``: the video, or a folder of
    frames?). ``option`` names the option in that refusal. Every stage takes its outputs through
    it; the CLI hands them over as typed."""
    import os

    text = os.fspath(value)
    if not text:
        raise UserError(f'{option} "": an empty output path (an unset shell variable?); name a video (out.mp4) or a folder (out/)')
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) and (is_video(path) or is_image(path)):
        kind = "a video" if is_video(path) else "an image"
        raise UserError(f"{text}: ends in / (a folder) but {path.suffix} names {kind} file; drop the / to write {kind}, "
                        f"or name the folder without {path.suffix}")
    return path


_STREAM_LINE = re.compile(r"^\s+Stream #\d+:\d+\S*: (Video|Audio): ([^\s,]+)")


def _ffmpeg_report(path: Path, *args: str) -> str:
    """What ``ffmpeg -i path ARGS`` says on stderr (its header, and what ``ARGS`` add). ffmpeg-python's
    ``probe`` needs ffprobe, which imageio-ffmpeg does not ship. No shell; the path is one argument."""
    import subprocess

    return subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", _ffmpeg_path(path), *args], capture_output=True,
                          text=True, errors="replace", timeout=120).stderr  # fmt: skip


def audio_streams(path: Path) -> list[str]:
    """The codecs of the sound streams in ``path`` (a video or a sound file), as the header's
    stream lines list them (metadata lines, indented deeper, never match); ``[]`` for none."""
    return [found.group(2) for found in map(_STREAM_LINE.match, _ffmpeg_report(path).splitlines()) if found and found.group(1) == "Audio"]


def picture_start(path: Path) -> float:
    """Seconds from the start of ``path`` to its first picture (0 for a sound file): a video whose
    picture starts after its sound has its first frame there, so the sound that goes with the
    frames starts there too. Read from the first decoded frame's timestamp (``showinfo``), which
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


def sound_options(codec: str, output: Path) -> dict:
    """ffmpeg's output options for a sound stream of ``codec`` (as ``audio_streams`` names it)
    in the video ``output``: copied as it is when its container holds that codec (no second
    lossy encoding), else encoded to AAC."""
    holds = ("aac",) if Path(output).suffix.lower() == ".m4v" else MP4_SOUND
    return {"acodec": "copy"} if codec in holds else AAC


def kept_sound(source: Path | None, output: Path) -> dict:
    """``FrameWriter`` keyword arguments that give the video ``output`` the sound of the video
    ``source`` it is made from, frame for frame (a stage that keeps the frames' times: DensePose,
    crop, align), so the music of a dance video reaches the poses and ``animate --audio``; ``{}``
    when there is no ``source``, either is not a video or ``source`` has no sound."""
    if source is None:
        return {}
    source, output = Path(source), Path(output)
    if not (is_video(output) and is_video(source) and source.is_file() and audio_streams(source)):
        return {}
    return {"audio": source, "sound_kept": True}


def warn_without_sound(output: Path, source, why: str, stacklevel: int = 3) -> None:
    """The one ``warning:`` line (``InputWarning``) of a video written without the sound it was
    to keep from ``source`` (a file or a URL), and ``why``: ``FrameWriter``, ``download``."""
    from .errors import InputWarning

    warnings.warn(f"{shown(output)}: written without the sound of {shown(source)} ({why})", InputWarning, stacklevel=stacklevel)


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


def check_apart(output: Path, inputs=()) -> None:
    """Refuse an output that is one of ``inputs``, lies inside one, or holds one (or the current
    folder): writing it would change or delete what the command reads. Symlinks are resolved."""
    out = Path(output).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise UserError(f"{shown(output)}: is the current folder or holds it; choose a new output path")
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if out == source:
            raise UserError(f"{shown(output)}: is the input {shown(item)}; choose another output")
        if source in out.parents:
            raise UserError(f"{shown(output)}: lies inside the input {shown(item)}, which writing it would change; choose an output outside it")
        if out in source.parents:
            raise UserError(f"{shown(output)}: holds the input {shown(item)}, which replacing it would delete; choose another output")


def check_sequence_output(path: Path) -> None:
    """Refuse an image file name for an output that receives many frames (a video or a folder):
    ``-o out.png`` would otherwise become a folder named ``out.png``."""
    if is_image(path):
        raise UserError(f"{shown(path)}: an image file name, but this writes every frame; pass a video ({path.stem}.mp4) or a folder ({path.stem}/)")


_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}  # what file managers leave in any folder they show


def foreign_entry(folder: Path) -> Path | None:
    """The first thing in ``folder`` that no output of this package holds, or None.

    A folder output is a frames folder of PNGs, or a clip folder: ``meta.json``, the clip
    layout's subfolders of PNGs (``clip.SUBFOLDERS``) and ``preprocess --keep-work``'s ``.work/``.
    Temporaries and locks of this package's writers and file managers' litter (``.DS_Store``,
    ``._*``) are part of no one's work. Anything else (a document, a video, another folder) is
    the user's: ``--overwrite`` must not delete it with the folder (``check_output``).
    """
    import os

    from .clip import META, SUBFOLDERS, WORK
    from .files import is_temporary_name

    def stray(where: Path, top: bool) -> Path | None:
        with os.scandir(where) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = entry.name
                if name in _LITTER or name.startswith("._") or is_temporary_name(name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if top and name == WORK:
                        continue
                    if top and name in SUBFOLDERS:
                        found = stray(Path(entry.path), top=False)
                        if found is not None:
                            return found
                        continue
                    return Path(entry.path)
                if name.lower().endswith(".png") or (top and name == META):
                    continue
                return Path(entry.path)
        return None

    return stray(Path(folder), top=True)


def check_output(path: Path, overwrite: bool, protect=()) -> Path:
    """Check an output path before the work: make sure its folder exists and is writable.

    An existing output is refused unless ``overwrite``, but for an empty folder where a folder
    output goes (``mkdir -p out`` first: nothing in it can be lost); a device, FIFO or socket
    always (``files.check_replaceable``), as is a name that is not UTF-8. Whatever ``overwrite``
    says, an output is never one of the ``protect`` paths (the command's inputs), inside one, or holding one, nor the
    current folder (``check_apart``). Temporaries that a killed earlier run left for this output
    are removed (``files.sweep``).
    """
    from .files import check_replaceable, empty_folder, sweep

    path = Path(path)
    check_name_encoding(path)
    check_apart(path, protect)
    check_replaceable(path)
    sweep(path)  # a killed run's temporaries (a run refused below leaves none of them either)
    vacant = empty_folder(path) and not is_video(path) and not is_image(path)  # an empty folder for a folder output
    if (path.exists() or path.is_symlink()) and not overwrite and not vacant:
        raise UserError(f"{shown(path)}: already exists; pass --overwrite to replace it or choose another output")
    if overwrite and not vacant:
        check_only_outputs_in(path)
    if is_video(path) and path.suffix.lower() not in WRITABLE_VIDEO_EXTENSIONS:
        raise UserError(f"{shown(path)}: cannot write {path.suffix} video; use one of {', '.join(sorted(WRITABLE_VIDEO_EXTENSIONS))}")
    check_writable(path)
    return path


def check_only_outputs_in(path: Path) -> None:
    """Refuse to replace a folder ``path`` that holds something no output of this package holds
    (``foreign_entry``): ``--overwrite`` replaces an earlier output, never a folder of the user's
    own files named by mistake (``-o ~/Documents``), nor a file where a folder goes (``-o
    thesis.docx``: no output is a file of that name). A video or image file, a link or nothing passes."""
    path = Path(path)
    if path.is_file() and not path.is_symlink() and not is_video(path) and not is_image(path):
        raise UserError(f"{shown(path)}: is a file where a folder of frames would go, not an earlier output, so --overwrite does not "
                        "replace it; move it away or choose another output")
    try:
        stray = foreign_entry(path) if path.is_dir() and not path.is_symlink() else None
    except OSError as exc:
        raise UserError(f"{shown(path)}: cannot look inside ({exc.strerror or exc}), so --overwrite does not replace it; choose another output") from exc
    if stray is not None:
        raise UserError(f"{shown(path)}: holds {shown(stray)}, which is not part of an earlier output, so --overwrite does not replace "
                        "this folder (it replaces PNG frames and clip folders only); move that away or choose another output")


def check_names(path: Path, fix: str = "choose a shorter one") -> Path:
    """Refuse a ``path`` whose name, or the name of a folder it still needs, is longer than its
    file system takes (``fix`` says what to do). Returns the nearest part of it that exists."""
    import os

    from .files import NAME_MAX

    path = Path(path)
    existing = path.parent
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = NAME_MAX
    for part in [path, *(p for p in path.parents if p not in existing.parents and p != existing)]:
        size = len(os.fsencode(part.name))
        if size > longest:
            raise UserError(f"{shown(part)}: a name of {size} bytes, longer than the {longest} its file system takes; {fix}")
    return existing


def check_writable(path: Path) -> None:
    """Can ``path`` be written? Said before the work, without creating anything: the folders it
    needs are made when its first temporary is (a run refused later leaves no empty folder)."""
    import errno
    import os

    existing = check_names(path)
    if not existing.is_dir():
        raise UserError(f"{shown(path)}: {shown(existing)} is a file, not a folder; choose another output")
    try:
        if existing == path.parent:
            discard(temp_beside(path, directory=False))  # can we write there at all? say so before the work (and sweep)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
    except OSError as exc:  # (a full disk is already a UserError naming the output)
        raise UserError(f"{shown(path)}: cannot write into {shown(existing)} ({exc.strerror or exc}); choose another output") from exc


class FrameStore:
    """Square uint8 RGB frames (``size``²) in a file, so memory does not grow with the clip: ``append``
    them, then ``frames()`` maps them (``T×size×size×3``, read-only). ``animate`` and ``align`` keep the
    fitted motion in one.

    The file is a locked temporary beside the output (``files.temp_beside``): a run killed with
    ``kill -9`` leaves it, and the next run writing the same output removes it.
    """

    def __init__(self, path: Path, size: int) -> None:
        from .files import output_of

        self.path = Path(path)
        self.output = output_of(self.path)  # what a full disk names: the output, not this temporary
        self.size = size
        self.count = 0
        self._file = open(self.path, "wb")

    def append(self, frame) -> None:
        from .files import writing

        with writing(self.output):
            self._file.write(frame.tobytes())
        self.count += 1

    def frames(self):
        self._file.close()
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, self.size, self.size, 3))


class FrameWriter:
    """Stream frames to an mp4 (any video extension) or to a folder of PNGs, atomically.

    Use as a context manager; frames become visible under ``path`` only when the block ends
    without an exception. H.264 in yuv420p (what players take) has even sides: odd frames are
    padded by one edge pixel in a video, with a warning (``InputWarning``; ``written_size`` is the
    size written, width × height); a folder keeps them exact. Folder
    frames are named ``00000.png``, ... unless ``names`` (or ``write(..., name=)``) gives names,
    e.g. to keep the file names of the input frames. A video gets the first sound stream of
    ``audio`` (a video or sound file; ``check_audio_source``) from its first picture
    (``picture_start``), or ``audio_start`` seconds after it, as long as the frames written last
    (copied when the container holds its codec, else AAC: ``sound_options``). The sound is muxed
    in after the picture is encoded, by a second ffmpeg pass that copies the picture, so the
    frames are encoded as without it. If that pass fails or yields no sound (no packet:
    ``sound_end``), the video is written without it: with a ``warning:`` line
    (``InputWarning``) when the sound was only kept along (``sound_kept``, as ``kept_sound`` gives
    it), as an error naming ``audio`` when it was asked for; a full disk is an error either way.
    """

    def __init__(
        self,
        path: Path,
        fps: float = DEFAULT_FPS,
        overwrite: bool = False,
        crf: int = 18,
        names: list[str] | None = None,
        commit: bool = True,
        audio: Path | None = None,
        sound_kept: bool = False,
        audio_start: float = 0.0,
    ):
        self.path = check_output(Path(path), overwrite)
        self.overwrite = overwrite
        self.commit = commit
        self.pending: Path | None = None  # with commit=False: the finished temporary, for committed_together
        self.names = names
        self.fps = float(fps)
        self.crf = crf
        self.audio, self.sound_kept, self.audio_start = audio, sound_kept, float(audio_start)
        self.count = 0
        self._process = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> FrameWriter:
        return self  # the temporary file appears with the first frame, not before a long computation

    def write(self, frame: np.ndarray, name: str | None = None) -> None:
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError("frames must be uint8 H×W or H×W×3")
        if self._size is None:
            self._size = frame.shape[:2]
            self._tmp = temp_beside(self.path, directory=not is_video(self.path))
        elif frame.shape[:2] != self._size:
            raise ValueError("all frames must have the same size")
        from .files import writing

        with writing(self.path):  # a full disk names the output, not the temporary
            if is_video(self.path):
                self._write_video_frame(frame)
            else:
                from PIL import Image

                name = name or (self.names[self.count] if self.names else frame_name(self.count))
                Image.fromarray(frame).save(self._tmp / name, format="PNG")
        self.count += 1

    @property
    def written_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames as written (a video's padded to even sides); None before any."""
        if self._size is None:
            return None
        height, width = self._size
        return (width + width % 2, height + height % 2) if is_video(self.path) else (width, height)

    def _write_video_frame(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        height, width = frame.shape[:2]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self._process is None:
            import ffmpeg

            if pad_h or pad_w:
                warnings.warn(
                    InputWarning(f"{shown(self.path)}: H.264 video needs even sides: the {width}x{height} frames are written as "
                                 f"{width + pad_w}x{height + pad_h}, the last column or row repeated; write a folder of frames to keep the size"),
                    stacklevel=3,
                )

            stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width + pad_w}x{height + pad_h}", framerate=self.fps)
            stream = ffmpeg.output(
                stream, _ffmpeg_path(self._tmp), vcodec="libx264", pix_fmt="yuv420p", crf=self.crf, movflags="+faststart", r=self.fps,
            ).global_args("-hide_banner", "-loglevel", "error")
            self._process = ffmpeg.run_async(
                stream, cmd=ffmpeg_binary(), pipe_stdin=True, pipe_stderr=True, overwrite_output=True, quiet=False
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            from .files import ffmpeg_write_error

            code = self._process.wait()
            stderr = self._process.stderr.read().decode(errors="replace")
            lines = stderr.strip().splitlines()
            raise ffmpeg_write_error(stderr, self.path, code) or UserError(
                f"{self.path}: ffmpeg stopped encoding ({lines[-1] if lines else 'no message'})"
            ) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        from . import files

        ok = exc_type is None and self.count > 0
        try:
            if self._process is not None:
                self._process.stdin.close()
                err = self._process.stderr.read().decode(errors="replace")
                self._process.stderr.close()
                code = self._process.wait()
                if code != 0 and ok:
                    lines = err.strip().splitlines()
                    raise files.ffmpeg_write_error(err, self.path, code) or UserError(
                        f"{self.path}: ffmpeg failed to encode ({lines[-1] if lines else 'no message'})"
                    )
                if ok and self.audio is not None:
                    self._add_sound()
            if ok and self.commit:
                files.commit(self._tmp, self.path, replace=self.overwrite)
                self._tmp = None
            elif ok:
                self.pending, self._tmp = self._tmp, None
        finally:
            discard(self._tmp)

    def _add_sound(self) -> None:
        """Mux the sound of ``audio`` into the encoded picture (copied): cut by the sound input's
        length (the frames written), not by ``-shortest``, which may cut the last frames."""
        import ffmpeg

        from .files import ffmpeg_write_error

        muxed = temp_beside(self.path, directory=False)  # a full disk names the output
        try:
            codecs = audio_streams(self.audio)
            begin = picture_start(self.audio) + self.audio_start
            window = ({"ss": f"{begin:.6f}"} if begin > 0 else {}) | {"t": f"{self.count / self.fps:.6f}"}
            error = "no sound stream" if not codecs else _run_ffmpeg(ffmpeg.output(
                ffmpeg.input(_ffmpeg_path(self._tmp))["v:0"], ffmpeg.input(_ffmpeg_path(self.audio), **window)["a:0"], _ffmpeg_path(muxed),
                vcodec="copy", movflags="+faststart", **sound_options(codecs[0], self.path)))  # fmt: skip
            if error is None and sound_end(muxed) <= 0:  # the header may list a stream that no packet fills
                error = "no sound came out (an empty sound stream, or none from that time on?)"
        except BaseException:  # Ctrl-C during the second pass: no temporary left behind
            discard(muxed)
            raise
        if error is None:
            discard(self._tmp)
            self._tmp = muxed
            return
        discard(muxed)
        full = ffmpeg_write_error(error, self.path, 1)
        if full is not None:
            raise full
        if not self.sound_kept:
            raise UserError(f"{shown(self.audio)}: its sound could not be added to {shown(self.path)} (ffmpeg: {error}); "
                            "give --audio another file")
        warn_without_sound(self.path, self.audio, f"ffmpeg: {error}", stacklevel=4)


@contextmanager
def committed_together(writers: list[FrameWriter], replace: bool):
    """Enter every ``FrameWriter(..., commit=False)``; when the block succeeds, commit all their
    outputs together (``files.commit_together``) or, if one cannot be, none of them."""
    from . import files

    try:
        with ExitStack() as stack:
            for writer in writers:
                stack.enter_context(writer)
            yield writers
        pending = [(w.pending, w.path) for w in writers if w.pending is not None]
        if pending and len(pending) == len(writers):
            files.commit_together(pending, replace=replace)
    finally:
        for writer in writers:
            files.discard(writer.pending)
            writer.pending = None


def write_frames(path: Path, frames: np.ndarray, fps: float = DEFAULT_FPS, overwrite: bool = False) -> Path:
    """Write a whole clip (see ``FrameWriter`` for streaming)."""
    with FrameWriter(path, fps, overwrite) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
