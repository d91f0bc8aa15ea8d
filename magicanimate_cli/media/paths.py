"""User paths: what a name is (a video or an image file, by its extension; a ``.webp`` by its header:
an animated WebP is a video), an input as the user
typed it and readable by this user (``input_path``), and an output checked before any work
(``output_path``, ``check_output``: never an input, never the user's own files replaced, a name
its file system and ffmpeg take, in a folder that can be written)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError, shown
from ..files import discard, temp_beside

VIDEO_EXTENSIONS = {  # what ffmpeg reads: phones, cameras (.mts/.m2ts), broadcast and DVD captures (.ts, .mpg), the web
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif", ".ts", ".mts", ".m2ts", ".3gp", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv",
}
H264_EXTENSIONS = {".mp4", ".mov", ".mkv", ".m4v"}  # containers that take H.264 (with even sides)
WEB_ENCODERS = {".gif": "gif", ".webm": "libvpx-vp9", ".webp": "libwebp_anim"}  # clips to share as they are, and the ffmpeg encoder each needs
SOUNDLESS_EXTENSIONS = {".gif", ".webp"}  # animations that hold no sound
WRITABLE_VIDEO_EXTENSIONS = H264_EXTENSIONS | WEB_ENCODERS.keys()
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".heic", ".heif"}


def is_video(path: Path) -> bool:
    """Whether ``path`` is a video: a video name, or an animated WebP (``is_animated_webp``)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS or is_animated_webp(path)


def is_animated_webp(path: Path) -> bool:
    """Whether ``path`` is an animated WebP: a ``.webp`` file whose header (its first 21 bytes; nothing
    is decoded) opens with the extended format's ``VP8X`` chunk, with its animation flag set (the
    WebP container, RFC 9649). A still WebP is not, nor a ``.webp`` that is not there, not a file
    or not readable: that one stays an image, as its name says, and so do the errors that name it."""
    path = Path(path)
    if path.suffix.lower() != ".webp":
        return False
    try:
        if not path.is_file():  # (a FIFO would block the read)
            return False
        with open(path, "rb") as file:
            head = file.read(21)
    except (OSError, ValueError):
        return False
    return len(head) == 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and bool(head[20] & 0x02)


def is_video_output(path: Path) -> bool:
    """Whether an output ``path`` names one video file (not a folder of frames): a video name, or
    ``.webp``, which is an animated WebP as an output (as an input, a still WebP is one image)."""
    return is_video(path) or Path(path).suffix.lower() == ".webp"


def needs_even_sides(path: Path) -> bool:
    """Whether the video ``path`` is H.264 (yuv420p), whose sides ``FrameWriter`` pads to even."""
    return Path(path).suffix.lower() in H264_EXTENSIONS


def check_name_encoding(path: Path | str) -> None:
    """Refuse a path that is not valid UTF-8 (a name made on another system, say ``caf\xe9.mp4`` in
    Latin-1): ffmpeg-python cannot pass it to ffmpeg. One line naming the file and the fix."""
    import os

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(str(path))  # the bytes on disk, shown as \xNN where they are not UTF-8
        raise UserError(f"{raw.decode('utf-8', 'backslashreplace')}: the name is not valid UTF-8, which ffmpeg cannot be handed; rename it") from None


def is_image(path: Path) -> bool:
    """Whether ``path`` is an image: an image name, but for an animated WebP (``is_animated_webp``)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and not is_animated_webp(path)


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
        what = "a video (out.mp4) or a folder (out/)" if option == "-o" else "a folder"  # --labels, --state, --workdir: folders
        raise UserError(f'{option} "": an empty output path (an unset shell variable?); name {what}')
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) and (is_video(path) or is_image(path)):
        kind = "a video" if is_video(path) else "an image"
        raise UserError(f"{text}: ends in / (a folder) but {path.suffix} names {kind} file; drop the / to write {kind}, "
                        f"or name the folder without {path.suffix}")
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
    ``-o out.png`` would otherwise become a folder named ``out.png``. ``out.webp`` is an animated WebP."""
    if is_image(path) and not is_video_output(path):
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

    from ..clip import META, SUBFOLDERS, WORK
    from ..files import is_temporary_name

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
    always (``files.check_replaceable``), as is a name that is not UTF-8 or a video the ffmpeg in use
    has no encoder for (``check_encoder``). Whatever ``overwrite``
    says, an output is never one of the ``protect`` paths (the command's inputs), inside one, or holding one, nor the
    current folder (``check_apart``). Temporaries that a killed earlier run left for this output
    are removed (``files.sweep``).
    """
    from ..files import check_replaceable, empty_folder, sweep

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
    check_encoder(path)
    check_writable(path)
    return path


def check_encoder(path: Path) -> None:
    """Refuse a ``.gif``, ``.webm`` or ``.webp`` output when the ffmpeg in use lacks its encoder
    (``WEB_ENCODERS``: a system ffmpeg may be built without libvpx or libwebp), before any work."""
    import shutil

    from .ffmpeg import ffmpeg_binary, has_encoder  # (that module imports this one)

    path = Path(path)
    encoder = WEB_ENCODERS.get(path.suffix.lower())
    if encoder is None or has_encoder(encoder):
        return
    binary = ffmpeg_binary()
    other = "; or take that ffmpeg off PATH (imageio-ffmpeg's own has it)" if binary == shutil.which("ffmpeg") else ""
    raise UserError(f"{shown(path)}: the ffmpeg in use ({binary}) has no {encoder} encoder, which {path.suffix} needs; "
                    f"write {path.stem}.mp4 instead{other}")


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

    from ..files import NAME_MAX

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
