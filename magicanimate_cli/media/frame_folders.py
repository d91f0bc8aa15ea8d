"""Frame folders: the frames' names (``00000.png``, ...), a folder's frames in frame order
(``list_frame_files``, which refuses frames named two ways) and their common size, read from the
files' headers (``check_frame_sizes``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError, shown
from .images import _pixel_limit, _quiet_exif
from .paths import is_image, permission_denied


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
