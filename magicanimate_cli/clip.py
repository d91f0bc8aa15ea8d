"""The clip folder: ``images/``, ``densepose/``, ``masks/`` (+ ``densepose_labels/``), ``meta.json``.

This is the layout of the TikTok dataset that DisCo, MagicAnimate and their followers read::

    CLIP/images/00000.png      uint8 RGB frames
    CLIP/densepose/00000.png   DensePose renderings (viridis palette, see densepose/palette.py)
    CLIP/masks/00000.png       single-channel person masks, 255 = person
    CLIP/densepose_labels/00000.png  optional: DensePose part labels 0..24 (single channel)
    CLIP/meta.json             where the clip came from and how it was made

Subfolders share file names frame for frame. ``meta.json`` records the source, fps, crop box,
the software versions and one record per stage (parameters, status, timing, result), which is
what makes ``magicanimate preprocess`` resumable: a stage whose record says ``done`` with the
same parameters is skipped on a re-run; one left ``running`` (interrupted) is redone.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError

IMAGES = "images"
DENSEPOSE = "densepose"
MASKS = "masks"
LABELS = "densepose_labels"  # as written by `magicanimate densepose` in clip mode
SUBFOLDERS = (IMAGES, DENSEPOSE, MASKS, LABELS)
SIZE = 512  # a clip's square frames, as the TikTok dataset and MagicAnimate have them
META = "meta.json"
META_FORMAT = 1
WORK = ".work"  # `preprocess`'s full-size intermediate frames, removed when the clip is complete (kept with --keep-work)

# stage statuses written to meta.json
RUNNING, DONE, FAILED, UNAVAILABLE, SKIPPED = "running", "done", "failed", "unavailable", "skipped"


def is_clip_folder(path: Path) -> bool:
    """True for a folder with ``meta.json`` or at least one of the clip subfolders."""
    path = Path(path)
    return path.is_dir() and ((path / META).is_file() or any((path / sub).is_dir() for sub in SUBFOLDERS))


def clip_fps(folder: Path) -> float | None:
    """The fps a clip folder's meta.json records (``preprocess``, ``flip``), if any."""
    try:
        fps = (read_meta(folder) or {}).get("fps") if folder.is_dir() else None
    except UserError:  # a damaged meta.json: the default rate, as without one
        return None
    return float(fps) if isinstance(fps, (int, float)) and fps > 0 else None


def check_clip_fps(folder: Path, fps: float | None) -> None:
    """Refuse an ``--fps`` other than the rate a clip folder records (``clip_fps``): its frames
    (and the sound of the video it was made from) are of that rate, and read at another one the
    result plays faster or slower and out of step with its sound, as a video is read at its own
    rate. A clip without a recorded rate takes any."""
    from .media import same_rate

    recorded = clip_fps(folder)
    if fps is not None and recorded is not None and not same_rate(fps, recorded):
        raise UserError(f"--fps {fps:g}: {folder} is a clip made at {recorded:g} fps ({META}); leave --fps out, "
                        "or give the frames folder itself to read it at another rate")


def parts_of(path: Path) -> list[Path]:
    """What a clip folder holds (its subfolders and ``meta.json``): what a command that reads the
    clip must not write over (``media.check_output``'s ``protect``); none for another path."""
    path = Path(path)
    return [path / name for name in (*SUBFOLDERS, META) if (path / name).exists()] if is_clip_folder(path) else []


def motion_of(path: Path) -> Path:
    """The DensePose frames a MOTION argument names: a clip folder's ``densepose/`` (a clip
    without one is refused with the command that makes it, and with why its ``meta.json`` says
    the stage failed or could not run), else ``path`` itself."""
    if not is_clip_folder(path):
        return path
    if not (path / DENSEPOSE).is_dir():
        record = ((read_meta(path, damaged_ok=True) or {}).get("stages") or {}).get(DENSEPOSE)
        why = ""
        if isinstance(record, dict) and record.get("status") in (FAILED, UNAVAILABLE) and record.get("error"):
            error = " ".join(str(record["error"]).split())
            why = f" (its densepose stage {record['status']}: {error[:200]}{'...' if len(error) > 200 else ''})"
        raise UserError(f"{path}: clip folder without {DENSEPOSE}/{why}; run `magicanimate densepose {path}` first")
    return path / DENSEPOSE


def subfolders(path: Path) -> list[str]:
    """The clip subfolders present in ``path`` that hold at least one frame, in layout order."""
    from .media import list_frame_files

    return [sub for sub in SUBFOLDERS if (Path(path) / sub).is_dir() and list_frame_files(Path(path) / sub)]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of the software that shapes a clip's pixels (recorded in meta.json)."""
    import numpy
    import PIL

    found = {"magicanimate_cli": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__}
    found["ffmpeg"] = ffmpeg_version()
    found.update(stage_library_versions())
    return found


#: the model stages' libraries: distribution names (the first one installed counts), by key in meta.json
STAGE_LIBRARIES = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "detectron2": ("detectron2",),
    "densepose": ("detectron2-densepose",),
    "paddle": ("paddlepaddle", "paddlepaddle-gpu"),
    "paddleseg": ("paddleseg",),
}


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed, read from the package
    metadata without importing it (torch, paddle take seconds); None when none is."""
    from importlib import metadata

    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def stage_library_versions() -> dict[str, str | None]:
    """Installed versions of the DensePose and matting stages' libraries (None: not installed)."""
    return {key: installed_version(*distributions) for key, distributions in STAGE_LIBRARIES.items()}


@lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version`` of the binary ``media.ffmpeg_binary`` gives (e.g. ``ffmpeg version 9.0.2``)."""
    import subprocess

    from .media import ffmpeg_binary

    try:
        out = subprocess.run([ffmpeg_binary(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = out.splitlines()[0] if out else "unknown"
    return " ".join(first.split()[:3])


def read_meta(folder: Path, damaged_ok: bool = False) -> dict | None:
    """The clip's meta.json, or None when there is none (or it is damaged and ``damaged_ok``)."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        if damaged_ok:
            return None
        raise UserError(f"{path}: unreadable meta.json ({exc.__class__.__name__}); delete it, or pass --overwrite to redo the clip") from exc


def source_video(folder: Path) -> Path:
    """The video a clip folder was made from (its ``meta.json``), e.g. for its sound; refused in
    one line when the clip has no record of one, was made from frames, or the video is gone."""
    folder = Path(folder)
    meta = read_meta(folder)
    source = (meta or {}).get("source") or {}
    if not source.get("path"):
        raise UserError(f"{folder}: a folder with no record of a source video (no meta.json from `magicanimate preprocess`); "
                        "give the video itself")
    if source.get("kind") != "video":
        raise UserError(f"{folder}: made from frames ({source['path']}), which have no sound; give the video itself")
    path = Path(source["path"])
    if not path.is_file():
        raise UserError(f"{folder}: its source video {path} (meta.json) is not there any more; give the video itself")
    return path


def sound_of(folder: Path) -> Path | None:
    """The video a clip folder was made from, if it is still there (``source_video``), else None:
    its sound fits the clip's frames (``preprocess`` keeps their times), so a stage that writes a
    video from the clip keeps that sound along, and never fails for the lack of it."""
    try:
        return source_video(folder)
    except UserError:
        return None


def write_meta(folder: Path, meta: dict) -> None:
    """Write meta.json atomically (temporary name in the same folder, then rename)."""
    from .files import write_text

    write_text(Path(folder) / META, json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n", replace=True)


class Clip:
    """A clip folder and its meta.json, with one record per stage.

    ``start(stage, params)`` writes ``running`` before the work begins, ``finish`` writes
    ``done`` (or ``fail`` writes ``failed``/``unavailable``), so a run killed half-way leaves the
    stage ``running`` and the next run redoes it. Every change is saved at once.
    """

    def __init__(self, path: Path, meta: dict | None = None):
        self.path = Path(path)
        self.meta = meta if meta is not None else (read_meta(self.path) or {})
        self.meta.setdefault("format", META_FORMAT)
        self.meta.setdefault("stages", {})

    # ------------------------------------------------------------------ records

    def record(self, stage: str) -> dict:
        return self.meta["stages"].get(stage, {})

    def status(self, stage: str) -> str | None:
        return self.record(stage).get("status")

    def is_done(self, stage: str, params: dict) -> bool:
        """Finished before with exactly these parameters."""
        rec = self.record(stage)
        return rec.get("status") == DONE and rec.get("params") == _jsonable(params)

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta["updated"] = now()
        write_meta(self.path, self.meta)

    def start(self, stage: str, params: dict) -> None:
        self.meta["stages"][stage] = {"status": RUNNING, "params": _jsonable(params), "started": now()}
        self._clock = time.perf_counter()
        self.save()

    def finish(self, stage: str, result: dict | None = None) -> None:
        rec = self.meta["stages"][stage]
        rec.update(status=DONE, finished=now(), seconds=round(time.perf_counter() - getattr(self, "_clock", time.perf_counter()), 3))
        if result:
            rec["result"] = _jsonable(result)
        self.save()

    def fail(self, stage: str, message: str, status: str = FAILED, hint: str | None = None, params: dict | None = None) -> None:
        rec = self.meta["stages"].setdefault(stage, {})
        if params is not None:
            rec["params"] = _jsonable(params)
        rec.update(status=status, error=message, finished=now())
        if hint:
            rec["hint"] = hint
        else:
            rec.pop("hint", None)
        self.save()

    def skip(self, stage: str, reason: str) -> None:
        self.meta["stages"][stage] = {"status": SKIPPED, "reason": reason, "finished": now()}
        self.save()

    def forget(self, *stages: str) -> None:
        for stage in stages:
            self.meta["stages"].pop(stage, None)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))
