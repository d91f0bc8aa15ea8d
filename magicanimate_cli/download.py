"""``magicanimate download``: videos by URL or YouTube ID (yt-dlp), time ranges, TED-talks tracklets.

* Each video is fetched once through the yt-dlp Python API: the best mp4 video stream no taller
  than ``max_height`` (h264 preferred at equal resolution). MagicAnimate needs no sound, so none
  is fetched where a site serves it apart (YouTube) unless ``sound``: then the best sound stream
  too (AAC preferred), merged into the mp4 by yt-dlp with ffmpeg. A non-mp4 result is remuxed
  into mp4 with ffmpeg (its sound kept).
* Downloads go to a hidden work folder ``DIR/.<name>.download-<hash>/`` whose name depends only on
  the URL, so an interrupted download resumes from its ``.part`` file on the next run; only a
  complete, readable video is renamed to ``DIR/<name>.mp4``. A video already there is skipped
  (``overwrite`` downloads it again).
* Failures are retried ``retries`` times (yt-dlp's own HTTP/fragment retries, plus whole
  attempts with a growing pause for errors yt-dlp does not retry, such as a 503 while reading the
  page); errors that cannot get better (404, 403, private or removed videos) are not retried.
  One failed video does not stop the others; the result lists each one.
* ``start``/``end`` cut a time range out of each video (frame-exact, re-encoded with libx264) into
  ``DIR/<name>_<start>-<end>.mp4`` (seconds, every digit given: ``--start 1.0001`` is not
  ``_1-end``); the full download stays beside it for other cuts. A cut keeps
  the video's sound, if it has one, from the cut's first frame for as long as its frames last
  (AAC), so ``animate --audio`` gets the music of that range. So do the tracklets. A start after
  the video's last frame, or an end more than a frame after its end, fails that video, saying its
  length: a clip is never shorter than its name says by more than a frame.
* ``tracklets`` reads the TED-talks metadata CSV
  (``video_id,start,end,bbox,fps,width,height,partition``, video_id ``YOUTUBEID#STARTFRAME#ENDFRAME``,
  bbox ``x0-y0-x1-y1``) and writes one clip per row into ``DIR/<partition>/<video_id>.mp4``,
  cut in time and cropped to the row's box, with the semantics of the dataset's reference loader
  (video-preprocessing ``load_videos.py``): ``start``/``end`` are frame numbers at the row's
  ``fps`` (end exclusive) and the box is given in a ``width×height`` frame and scaled to the real
  video size. When ``start`` and ``end`` are both 0 (the ``ted-metadata.csv`` published with
  articulated-animation) the frame numbers in ``video_id`` are used instead.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from .errors import UserError, first_line
from .times import frame_at, millis_down, parse_time

DEFAULT_MAX_HEIGHT = 1080
DEFAULT_RETRIES = 3
YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
RETRY_WAIT = 2.0  # seconds before the 2nd whole attempt; doubles each time, at most 60 s
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_PERMANENT = ("HTTP Error 404", "HTTP Error 403", "HTTP Error 410", "Unsupported URL", "Video unavailable", "Private video",
              "Requested format is not available", "is not a valid URL", "This video has been removed")
TRACKLET_COLUMNS = ("video_id", "bbox", "fps", "width", "height")


@dataclass
class DownloadResult:
    output: str
    items: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(item["status"] != "failed" for item in self.items)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failure(self) -> str:
        bad = [item for item in self.items if item["status"] == "failed"]
        return f"{len(bad)} of {len(self.items)} downloads failed; the first: {bad[0]['error']}" if bad else ""

    def to_dict(self) -> dict:
        counts = {status: sum(1 for i in self.items if i["status"] == status) for status in ("downloaded", "skipped", "cut", "failed")}
        return {"ok": self.ok, "output": self.output, **counts, "items": self.items, "seconds": self.seconds}

    def for_humans(self) -> dict:
        """Counts, then one line per failed video or clip (the terminal view)."""

        summary = {k: v for k, v in self.to_dict().items() if k not in ("items", "ok")}
        silent = [item["output"] for item in self.items if item.get("sound") is False]
        if silent:  # --sound asked for it, but these videos have none
            summary["without sound"] = (", ".join(Path(output).name for output in silent)
                                        + " (none served, or downloaded earlier without --sound: remove it to fetch it again)")
        for item in self.items:
            if item["status"] == "failed":
                summary[item["source"]] = f"failed: {item.get('error')}"
        return summary


@dataclass(frozen=True)
class Tracklet:
    line: int
    video_id: str  # the full id, YOUTUBEID#START#END
    youtube_id: str
    start: int  # frame numbers at fps, end exclusive
    end: int
    bbox: tuple[int, int, int, int]
    fps: float
    width: int
    height: int
    partition: str
    from_id: bool = True  # the range came from video_id (start and end columns were 0)

    @property
    def name(self) -> str:
        """The clip's file name: video_id, plus the range when it came from the start/end columns."""
        return self.video_id if self.from_id else f"{self.video_id}#{self.start:06d}#{self.end:06d}"


# ----------------------------------------------------------------------------- parsing


def source_url(ref: str, url_template: str = YOUTUBE_URL) -> str:
    """A URL as it is; a YouTube video ID through ``url_template``. A local file (a path, a
    ``file://`` URL) is refused: it needs no download, and the other commands take it as it is."""
    local = "`magicanimate download` fetches videos from the web; give a local video to `preprocess`, `frames` or `crop` as it is"
    if ref.lower().startswith("file:"):
        raise UserError(f"{ref}: a local file; {local}")
    if "://" in ref:
        return ref
    if _YOUTUBE_ID.match(ref):
        return url_template.format(id=ref)
    if Path(ref).expanduser().exists():
        raise UserError(f"{ref}: a local file; {local}")
    raise UserError(f"{ref}: neither a URL (https://...) nor an 11-character YouTube video ID")


def safe_name(name: str) -> str:
    """A file-name-safe version of a video id (letters, digits, . _ - # kept)."""
    cleaned = re.sub(r"[^A-Za-z0-9._#-]+", "_", name).strip("._") or "video"
    return cleaned[:120]


def read_tracklets(path: Path) -> list[Tracklet]:
    """Rows of a TED-talks metadata CSV (see the module docstring), validated."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such tracklets file")
    from .files import check_utf8

    check_utf8(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in TRACKLET_COLUMNS if c not in columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected video_id,start,end,bbox,fps,width,height,partition")
        rows = []
        for number, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("video_id"):
                continue
            rows.append(_tracklet(path, number, row))
    if not rows:
        raise UserError(f"{path}: no tracklet rows")
    return rows


def _tracklet(path: Path, line: int, row: dict) -> Tracklet:
    where = f"{path}:{line}"
    parts = row["video_id"].split("#")
    youtube_id = parts[0]
    if not youtube_id:
        raise UserError(f"{where}: video_id {row['video_id']!r} has no YouTube ID before '#'")
    try:
        start = int(float(row.get("start") or 0))
        end = int(float(row.get("end") or 0))
        fps = float(row["fps"])
        width, height = int(float(row["width"])), int(float(row["height"]))
        bbox = tuple(int(float(v)) for v in row["bbox"].split("-"))
    except (ValueError, OverflowError):  # OverflowError: inf
        raise UserError(f"{where}: start/end/fps/width/height must be numbers and bbox x0-y0-x1-y1") from None
    from_id = start == 0 and end == 0
    if from_id:
        if len(parts) != 3:
            raise UserError(f"{where}: start and end are 0 and video_id {row['video_id']!r} is not YOUTUBEID#STARTFRAME#ENDFRAME")
        try:
            start, end = int(parts[1]), int(parts[2])
        except ValueError:
            raise UserError(f"{where}: frame numbers in video_id {row['video_id']!r} are not integers") from None
    if len(bbox) != 4 or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise UserError(f"{where}: bbox {row['bbox']!r} must be x0-y0-x1-y1 with x1 > x0 and y1 > y0")
    if start < 0 or end <= start or not (math.isfinite(fps) and fps > 0) or width <= 0 or height <= 0:
        raise UserError(f"{where}: need 0 <= start < end, a finite fps > 0, width > 0, height > 0")
    if bbox[0] >= width or bbox[1] >= height:  # nothing of it in the frame: cut() made a 2-pixel strip of the frame's edge
        raise UserError(f"{where}: bbox {row['bbox']!r} lies outside the row's {width}x{height} frame; need x0 < {width} and y0 < {height}")
    return Tracklet(line, row["video_id"], youtube_id, start, end, bbox, fps, width, height, row.get("partition", ""), from_id)


# ----------------------------------------------------------------------------- yt-dlp


class _Log:
    """yt-dlp logger that keeps messages instead of printing them (library functions never print)."""

    def __init__(self):
        self.messages: list[str] = []

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        self.messages.append(message)

    def error(self, message: str) -> None:
        self.messages.append(message)


def format_selector(max_height: int, sound: bool = False) -> str:
    """Best mp4 video stream no taller than ``max_height`` (unknown heights allowed), then any
    container; with ``sound``, each merged with the best sound stream (m4a first) where the site
    serves it apart, else a format that has both."""
    h = f"[height<=?{int(max_height)}]"
    if sound:
        return f"bv*[ext=mp4]{h}+ba[ext=m4a]/b[ext=mp4]{h}/bv*{h}+ba/b{h}"
    return f"bv*[ext=mp4]{h}/b[ext=mp4]{h}/bv*{h}/b{h}"


def ydl_options(work: Path, *, max_height: int, retries: int, log: _Log, progress=None, sound: bool = False) -> dict:
    from .media import ffmpeg_binary

    def hook(status: dict) -> None:
        if progress is None:
            return
        done = int(status.get("downloaded_bytes") or 0)
        total = int(status.get("total_bytes") or status.get("total_bytes_estimate") or 0)
        if status.get("status") == "finished":
            total = done = max(done, total)
        progress("download", done, max(total, done, 1))

    return {
        "format": format_selector(max_height, sound),
        "format_sort": ["res", "vcodec:h264", "acodec:aac"],
        "merge_output_format": "mp4",
        "outtmpl": {"default": str(work / "video.%(ext)s")},
        "paths": {"home": str(work), "temp": str(work)},
        "noplaylist": True,
        "noprogress": True,
        "quiet": True,
        "no_warnings": True,
        "logger": log,
        "progress_hooks": [hook],
        "retries": retries,
        "fragment_retries": retries,
        "extractor_retries": retries,
        "file_access_retries": retries,
        "continuedl": True,
        "overwrites": False,
        "ffmpeg_location": ffmpeg_binary(),
        "writesubtitles": False,
        "writethumbnail": False,
    }


def _is_permanent(message: str) -> bool:
    return any(marker.lower() in message.lower() for marker in _PERMANENT)


def _clean_error(message: str) -> str:
    message = re.sub(r"^ERROR:\s*", "", str(message).strip().splitlines()[-1] if str(message).strip() else "download failed")
    return message


def fetch(url: str, folder: Path, *, name: str | None = None, max_height: int = DEFAULT_MAX_HEIGHT, retries: int = DEFAULT_RETRIES,
          overwrite: bool = False, sound: bool = False, progress=None, taken: dict | None = None) -> tuple[Path, str]:
    """Download ``url`` to ``folder/<name>.mp4`` (name: the video's id). Returns (path, status).

    status is ``downloaded`` or ``skipped`` (already complete, with or without sound: ``overwrite``
    fetches it again). ``sound``: with the best sound stream (``format_selector``). Raises
    ``UserError`` with yt-dlp's message when the video cannot be had. ``taken`` maps the files this
    run has given to their URLs (the caller adds each): another URL whose video has the same id
    (two sites' ``clip.mp4``) is refused rather than taken for that file, or written over it.
    """

    def claimed(final: Path) -> Path:
        if taken is not None and taken.get(final, url) != url:
            raise UserError(f"{url}: its video id names {final}, which {taken[final]} gave in this run; download it with another -o")
        return final

    try:
        import yt_dlp
    except ImportError:
        raise UserError("yt-dlp is not installed; install it with: pip install yt-dlp") from None

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if name is not None:
        final = claimed(folder / f"{safe_name(name)}.mp4")
        if final.exists() and not overwrite:
            if _readable(final):
                return final, "skipped"
            raise UserError(f"{final}: exists but is not a readable video; pass --overwrite to download it again")
    work = folder / f".{safe_name(name or 'url')}.download-{hashlib.sha1(url.encode()).hexdigest()[:10]}"
    from .files import writing

    with writing(folder):  # a full or read-only disk names the folder the user gave, not this hidden one
        work.mkdir(exist_ok=True)
    log = _Log()
    attempt = 0
    while True:
        try:
            with yt_dlp.YoutubeDL(ydl_options(work, max_height=max_height, retries=retries, log=log, progress=progress, sound=sound)) as ydl:
                info = ydl.extract_info(url, download=False)
                if info.get("_type") in ("playlist", "multi_video"):
                    raise UserError(f"{url}: is a playlist; pass the videos' URLs or IDs one by one")
                if name is None:
                    final = claimed(folder / f"{safe_name(str(info.get('id') or 'video'))}.mp4")
                    if final.exists() and not overwrite:
                        shutil.rmtree(work, ignore_errors=True)
                        if _readable(final):
                            return final, "skipped"
                        raise UserError(f"{final}: exists but is not a readable video; pass --overwrite to download it again")
                info = ydl.process_ie_result(info, download=True)
            break
        except UserError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        except yt_dlp.utils.DownloadError as exc:
            message = _clean_error(str(exc))
            if attempt >= retries or _is_permanent(message):
                if not any(p.name.endswith(".part") for p in work.iterdir()):
                    shutil.rmtree(work, ignore_errors=True)  # nothing to resume
                raise UserError(f"{url}: {message}") from None
            time.sleep(min(60.0, RETRY_WAIT * 2**attempt))
            attempt += 1
        except OSError:  # a full disk, no permission: said as such (files.write_error), the work kept to resume
            raise
        except Exception as exc:  # a URL yt-dlp cannot even parse (a space in the host, a broken IPv6 address): no retry helps
            shutil.rmtree(work, ignore_errors=True)
            raise UserError(f"{url}: not a URL that can be fetched ({first_line(exc)}); check it") from None
    downloads = info.get("requested_downloads") or [{}]
    got = Path(downloads[0].get("filepath") or downloads[0].get("_filename") or "")
    if not got.is_file():
        candidates = [p for p in work.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
        if not candidates:
            raise UserError(f"{url}: yt-dlp reported success but wrote no file")
        got = candidates[0]
    if not _readable(got):
        shutil.rmtree(work, ignore_errors=True)  # not worth resuming
        raise UserError(f"{url}: the downloaded file is not a readable video")
    if got.suffix.lower() != ".mp4":
        got = _remux_mp4(got, work / "video.remux.mp4", final, url)
    from .files import commit

    commit(got, final, replace=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return final, "downloaded"


def _readable(path: Path) -> bool:
    from . import media

    try:
        return media.probe(path).frames > 0
    except UserError:
        return False


def _picture_info(path: Path):
    """``media.probe(path)`` with ``frames`` counted from the first picture, as ``cut`` counts them:
    a video whose picture starts after its sound (``media.picture_start``) is read with frames
    repeated to fill that start, which no cut holds. Counted with them, a range past the picture's
    end was taken for one inside it: a clip shorter than its name says (a 1.2 s picture starting
    0.5 s in was cut as ``_0-1.6.mp4``), or a start after the last picture failed as an empty cut."""
    import dataclasses

    from . import media

    info = media.probe(path)
    lead = frame_at(media.picture_start(path), info.fps)  # the frames that fill the start
    return dataclasses.replace(info, frames=max(1, info.frames - lead)) if lead > 0 else info


def _remux_mp4(source: Path, target: Path, final: Path, url: str) -> Path:
    """The video stream of ``source`` (and its sound) in an mp4 container (``media.remux_mp4``),
    checked readable. A sound left out is warned about (``InputWarning``), naming ``final``, the
    file ``target`` becomes, and ``url``."""
    from . import media

    if not (media.remux_mp4(source, target) and _readable(target)):
        raise UserError(f"{source}: could not be converted to mp4")
    if media.audio_streams(source) and media.sound_end(target) <= 0:
        media.warn_without_sound(final, url, "ffmpeg could not put it in an mp4")
    return target


# ----------------------------------------------------------------------------- cutting


def cut(source: Path, output: Path, *, first: int, count: int | None = None, box: tuple[int, int, int, int] | None = None,
        overwrite: bool = False) -> int:
    """Frames ``first``..``first+count`` of ``source`` (optionally cropped to ``box``) into an mp4.

    Frame-exact: ffmpeg seeks to half a frame before ``first`` (counted from the first picture,
    which may start after the sound: ``media.picture_start``) and re-encodes (libx264, crf 18,
    yuv420p; sizes rounded down to even). The sound of those frames comes along, if ``source`` has
    one (``media.encode_cut``). Written atomically. Returns the frames written.
    """
    from . import media
    from .files import commit, discard, temp_beside

    source, output = Path(source), Path(output)
    info = _picture_info(source)
    media.check_output(output, overwrite)
    if first >= info.frames:
        raise UserError(f"{source}: starts at frame {first} but the video has {info.frames} frames ({info.frames / info.fps:.2f} s)")
    x0, y0, x1, y1 = box if box is not None else (0, 0, info.width, info.height)
    x0, y0 = max(0, min(x0, info.width - 2)), max(0, min(y0, info.height - 2))
    x1, y1 = max(x0 + 2, min(x1, info.width)), max(y0 + 2, min(y1, info.height))
    w, h = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    tmp = temp_beside(output, directory=False, suffix=".mp4")
    try:
        start = media.picture_start(source) + (first - 0.5) / info.fps if first > 0 else None  # frames count from the first picture
        error = media.encode_cut(source, tmp, start=start, box=(x0, y0, w, h), frames=count, fps=info.fps,
                                  seconds=(count if count is not None else info.frames - first) / info.fps)
        if error is not None:
            raise UserError(f"{source}: ffmpeg could not cut frames {first}+ ({error})")
        written = media.probe(tmp).frames
        if written == 0:
            raise UserError(f"{source}: the cut from frame {first} is empty")
        lost_sound = bool(media.audio_streams(source)) and media.sound_end(tmp) <= 0
        commit(tmp, output, replace=overwrite)
        tmp = None
    finally:
        discard(tmp)
    if lost_sound:
        end = media.sound_end(source)
        ends = end - media.picture_start(source)
        why = ("its sound stream is empty" if end <= 0 else f"its sound ends {ends:.2f} s after its first picture, before frame {first}"
               if ends <= first / info.fps else "ffmpeg could not encode it as AAC")  # fmt: skip
        media.warn_without_sound(output, source, why)
    return written


def _fmt_time(seconds: float | None) -> str:
    """``seconds`` as a clip's name gives it: every digit it has (``1.0001``, not ``1``, so two
    different cuts never share a name), in plain decimals (no ``1e-05``), no trailing zeros."""
    if seconds is None:
        return "end"
    text = format(Decimal(repr(float(seconds))), "f")
    return (text.rstrip("0").rstrip(".") if "." in text else text) or "0"


# ----------------------------------------------------------------------------- the stage


def download(
    sources: list[str] | tuple[str, ...] | None,
    output: Path | str,
    *,
    start: str | float | None = None,
    end: str | float | None = None,
    tracklets: Path | str | None = None,
    max_height: int = DEFAULT_MAX_HEIGHT,
    retries: int = DEFAULT_RETRIES,
    url_template: str = YOUTUBE_URL,
    sound: bool = False,
    overwrite: bool = False,
    progress=None,
) -> DownloadResult:
    """Download videos (URLs or YouTube IDs) into the folder ``output``; cut ranges or tracklets.

    With ``tracklets``, ``sources`` (optional) restricts the CSV to those YouTube IDs.
    ``url_template`` turns a YouTube ID into a URL (``{id}``), e.g. a lab mirror of the videos.
    ``sound`` also fetches the sound where it is served apart from the video (YouTube), for
    ``animate --audio``, and says in each item whether its output has sound (``sound``: some
    videos have none); cuts keep whatever sound the video has.
    """
    from .media import input_path, output_path

    output = output_path(output)
    tracklets = input_path(tracklets) if tracklets is not None else None
    sources = [s.strip() for s in (sources or []) if s and s.strip()]
    if max_height is None or max_height < 16:
        raise UserError(f"--max-height {max_height}: must be at least 16 pixels (1080 is the default)")
    if retries is None or retries < 0:
        raise UserError(f"--retries {retries}: must be 0 or more")
    example = "e.g. https://www.youtube.com/watch?v={id}"
    if "{id}" not in url_template:
        raise UserError(f"--url-template {url_template}: must contain {{id}}, {example}")
    try:
        url_template.format(id="x")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:  # {bogus}, {0}, a lone {, {id.x}
        raise UserError(f"--url-template {url_template}: {{id}} is the only field it may hold ({first_line(exc)}); "
                        f"write a literal brace as {{{{ or }}}}, {example}") from None
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a folder; -o takes the folder that receives the videos")
    t0, t1 = parse_time(start, "--start"), parse_time(end, "--end")
    if t1 is not None and t1 <= (t0 or 0.0):
        raise UserError(f"--start {start or 0} --end {end}: the end must come after the start")
    started = time.perf_counter()
    result = DownloadResult(str(output))
    from .folders import taking_back

    with taking_back(output, always=True):  # made by this run: removed again if left empty, whatever failed
        _download_into(output, result, sources, t0, t1, tracklets, max_height, retries, url_template, overwrite, progress, sound)
        if sound:
            from .media import sound_end

            for item in result.items:
                if item["status"] != "failed" and item.get("output"):
                    item["sound"] = sound_end(Path(item["output"])) > 0  # a packet of it, not only a stream in the header
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _download_into(output, result, sources, t0, t1, tracklets, max_height, retries, url_template, overwrite, progress, sound) -> None:
    if tracklets is not None:
        if t0 is not None or t1 is not None:
            raise UserError("--start/--end and --tracklets: the tracklets give each clip's range; use one or the other")
        rows = read_tracklets(Path(tracklets))
        if sources:
            wanted = {s.split("#")[0] for s in sources}
            rows = [r for r in rows if r.youtube_id in wanted]
            if not rows:
                raise UserError(f"{tracklets}: no rows for {', '.join(sorted(wanted))}")
        _download_tracklets(rows, output, result, csv=Path(tracklets), max_height=max_height, retries=retries, url_template=url_template,
                            overwrite=overwrite, sound=sound, progress=progress)
    else:
        if not sources:
            raise UserError("nothing to download: give URLs or YouTube IDs, or --tracklets CSV")
        urls = [(ref, source_url(ref, url_template)) for ref in sources]
        taken: dict[Path, str] = {}
        for ref, url in urls:
            item = {"source": ref, "url": url}
            if "://" not in ref and (t0 is not None or t1 is not None) and not overwrite:
                clip = output / f"{safe_name(ref)}_{_fmt_time(t0 or 0.0)}-{_fmt_time(t1)}.mp4"
                if clip.exists() and _readable(clip):  # the cut is there: its source need not be (nor be reachable)
                    result.items.append({**item, "output": str(clip), "status": "skipped"})
                    continue
            try:
                path, status = fetch(url, output, name=None if "://" in ref else ref, max_height=max_height, retries=retries,
                                     overwrite=overwrite, sound=sound, progress=progress, taken=taken)
                taken[path] = url
                item.update(file=str(path), status=status)
                if t0 is not None or t1 is not None:
                    clip = path.with_name(f"{path.stem}_{_fmt_time(t0 or 0.0)}-{_fmt_time(t1)}.mp4")
                    item["output"] = str(clip)
                    if clip.exists() and not overwrite and _readable(clip):
                        item["status"] = "skipped"
                    else:
                        first, count = _frame_range(path, t0 or 0.0, t1)
                        item["frames"] = cut(path, clip, first=first, count=count, overwrite=overwrite)
                        item["status"] = "cut"
                else:
                    item["output"] = str(path)
            except UserError as exc:
                item.pop("output", None)  # not written
                item.update(status="failed", error=str(exc))
            result.items.append(item)


def _frame_range(path: Path, start: float, end: float | None) -> tuple[int, int | None]:
    """(the first frame at or after ``start`` seconds, the count of frames before ``end``; None:
    to the last) of the video ``path``. A ``--start`` after its last frame, or an ``--end`` after
    its end (the clip would be shorter than its name says), is refused in the user's seconds, with
    the latest time it can take."""

    info = _picture_info(path)
    length = _length(path, info)
    first = frame_at(start, info.fps)
    if first >= info.frames:
        latest = millis_down((info.frames - 1) / info.fps)  # a start that still gets the last frame
        raise UserError(f"--start {_fmt_time(start)}: {length}, its last frame at {_fmt_time(latest)} s; "
                        f"give a --start of {_fmt_time(latest)} or less")
    if end is None:
        return first, None
    stop = frame_at(end, info.fps)
    if stop > info.frames + 1:  # one frame's slack: a length rounded in the metadata (an --end of 5:00 on 4:59.98)
        latest = millis_down(info.frames / info.fps)  # an end that still gets the last frame
        raise UserError(f"--end {_fmt_time(end)}: {length}; give an --end of {_fmt_time(latest)} or less, "
                        f"or no --end to cut to its end")
    if stop <= first:
        raise UserError(f"--start {_fmt_time(start)} --end {_fmt_time(end)}: no frame of {path} ({info.fps:g} fps) lies between them; "
                        f"widen the range to at least {1 / info.fps:.3g} s")
    return first, min(stop, info.frames) - first


def _length(path: Path, info) -> str:
    """``PATH is 1.20 s long (30 frames at 25 fps)``: a video's length as a refused time says it."""
    return f"{path} is {info.frames / info.fps:.2f} s long ({info.frames} frames at {info.fps:g} fps)"


def tracklet_frames(row: Tracklet, video_fps: float) -> tuple[int, int]:
    """(first frame, count) of ``row`` in a video at ``video_fps`` (load_videos.py's rule:
    frame i is in the clip when ``i * fps_row >= start * video_fps`` and ``< end * video_fps``)."""
    first = math.ceil(row.start * video_fps / row.fps - 1e-9)
    stop = math.ceil(row.end * video_fps / row.fps - 1e-9)
    return first, max(0, stop - first)


def tracklet_box(row: Tracklet, width: int, height: int) -> tuple[int, int, int, int]:
    """The row's bbox scaled from its ``width×height`` reference frame to the video (truncating)."""
    x0, y0, x1, y1 = row.bbox
    sx, sy = width / row.width, height / row.height
    return int(x0 * sx), int(y0 * sy), min(width, int(x1 * sx)), min(height, int(y1 * sy))


def _download_tracklets(rows: list[Tracklet], output: Path, result: DownloadResult, *, csv: Path, max_height: int, retries: int,
                        url_template: str, overwrite: bool, sound: bool, progress) -> None:

    by_video: dict[str, list[Tracklet]] = {}
    for row in rows:
        by_video.setdefault(row.youtube_id, []).append(row)

    def place(row: Tracklet) -> tuple[str, str]:
        return safe_name(row.partition) if row.partition else "", safe_name(row.name)

    places = [place(row) for row in rows]
    duplicates = {p for p in places if places.count(p) > 1}  # rows that would write one file: named by their line too

    def clip_of(row: Tracklet) -> Path:
        folder = output / safe_name(row.partition) if row.partition else output  # never outside -o
        name = row.name if place(row) not in duplicates else f"{row.name}#L{row.line}"
        return folder / f"{safe_name(name)}.mp4"

    done_rows = 0
    for youtube_id, video_rows in by_video.items():
        url = url_template.format(id=youtube_id)
        if not overwrite and all(clip_of(row).exists() and _readable(clip_of(row)) for row in video_rows):
            # every clip of this video is there: nothing to fetch (its source may be gone, or removed to free the disk)
            result.items.append({"source": youtube_id, "url": url, "status": "skipped", "note": "its clips are all there"})
            for row in video_rows:
                result.items.append({"source": row.video_id, "line": row.line, "output": str(clip_of(row)), "status": "skipped"})
            done_rows += len(video_rows)
            if progress is not None:
                progress("tracklets", done_rows, len(rows))
            continue
        try:
            path, status = fetch(url, output, name=youtube_id, max_height=max_height, retries=retries, overwrite=False,
                                 sound=sound, progress=progress)
            result.items.append({"source": youtube_id, "url": url, "file": str(path), "output": str(path), "status": status})
        except UserError as exc:
            result.items.append({"source": youtube_id, "url": url, "status": "failed", "error": str(exc)})
            for row in video_rows:
                result.items.append({"source": row.video_id, "line": row.line, "status": "failed", "error": f"video {youtube_id} not downloaded"})
            done_rows += len(video_rows)
            continue
        info = _picture_info(path)
        for row in video_rows:
            clip = clip_of(row)
            item = {"source": row.video_id, "line": row.line, "file": str(path), "output": str(clip)}
            try:
                if clip.exists() and not overwrite and _readable(clip):
                    item["status"] = "skipped"
                else:
                    first, count = tracklet_frames(row, info.fps)
                    box = tracklet_box(row, info.width, info.height)
                    item.update(first_frame=first, box=list(box))
                    if first >= info.frames:  # said in seconds and the row's own frames, not the video's frame number
                        latest = millis_down((info.frames - 1) / info.fps)
                        raise UserError(f"{csv}:{row.line}: starts at frame {row.start} at {row.fps:g} fps, {row.start / row.fps:.2f} s in, "
                                        f"but {_length(path, info)}, "
                                        f"its last frame at {_fmt_time(latest)} s; the row does not fit this video: correct it or leave it out")
                    item["frames"] = cut(path, clip, first=first, count=count, box=box, overwrite=overwrite)
                    item["status"] = "cut"
            except UserError as exc:
                item.pop("output", None)  # not written
                item.update(status="failed", error=str(exc))
            result.items.append(item)
            done_rows += 1
            if progress is not None:
                progress("tracklets", done_rows, len(rows))
