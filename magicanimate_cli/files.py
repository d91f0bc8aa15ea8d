"""The one way this package creates output files and folders: atomically, never replacing by accident.

Every output is first built under a hidden temporary name in the destination's own folder (so the
final rename never crosses a filesystem), flushed to disk, and renamed onto its final name only when
complete. An interrupted run therefore never leaves a half-written file under a final name, and a
temporary left by a killed run is found and removed by the next run that writes the same output.

API (all paths may be ``str`` or ``Path``):

``temp_beside(final, directory=True, suffix=None) -> Path``
    Create and return a fresh hidden temporary folder (or empty file with ``directory=False``) next
    to ``final``, named ``.{final.name}.{pid}-{random}.partial{suffix}`` (``suffix`` defaults to
    ``final``'s suffix for files, so tools that look at extensions still work; a name too long to
    take this tail is cut and hashed, ``short_name``, so every name the file system takes works).
    It has the mode a plain ``open``/``mkdir`` would give. It first ``sweep``s what killed writers of ``final`` left. While this process lives, an exclusive lock on a sibling
    ``.{final.name}.{pid}-{random}.lock`` marks it as in use, so that ``sweep`` run by another job
    never removes it; the OS drops the lock when the process dies, even by ``kill -9``.
``commit(tmp, final, *, replace) -> None``
    fsync ``tmp`` (a file, or a folder and the files directly in it), rename it onto ``final`` and
    fsync the folder. ``replace`` must be given: with ``replace=False`` an existing ``final`` (file,
    folder or link, e.g. one that appeared while this run was working) is kept and ``UserError`` is
    raised — the create is atomic, there is no window in which another writer's output is replaced.
    With ``replace=True`` a file is replaced atomically; a folder is swapped in atomically where
    the kernel offers it (Linux ``renameat2(RENAME_EXCHANGE)``), else moved aside, replaced and
    deleted. A device, FIFO or socket under ``final`` is never replaced (``check_replaceable``,
    ``UserError``). Releases the temporary's lock.
``commit_together([(tmp, final), ...], *, replace) -> None``
    Commit several outputs of one run all or none: every ``final`` is checked first, and if one
    commit fails the ones already committed by this call are taken back (removed, or with
    ``replace=True`` restored from the previous version) before the error is raised. With
    ``replace=True`` each previous version is replaced in one step (a file keeps a second name
    until the new one is in place; a folder is exchanged), so a kill at any moment leaves every
    ``final`` with its old or its new version. (A kill between two outputs' commits leaves the
    first new and the second old or absent: the re-run then needs ``--overwrite``.)
``discard(tmp) -> None``
    Remove a temporary file or folder (and its lock) if it is still there. Safe to call twice and
    after ``commit``.
``temporary(final, directory=False, suffix=None, replace=False)``
    Context manager around the three above: yields a temporary path; when the block ends without
    an exception it is committed onto ``final`` (with ``replace``), otherwise discarded.
``write_bytes(final, data, *, replace)`` / ``write_text(final, text, *, replace)``
    Whole-content atomic writes (JSON records, small files) through ``temporary``.
``sweep(final) -> list[Path]``
    Remove the temporaries (and locks) that killed runs left for ``final``; the ones whose owner
    still holds the lock (a live job, in this or another process) are left alone. Returns what it
    removed. ``media.check_output`` calls it for every output, so each command cleans up after an
    earlier killed run of itself.
``file_mode(directory=False) -> int``
    The permission bits a plain ``open(..., "w")`` (``0o666``) or ``mkdir`` (``0o777``) would give
    under the current umask. ``tempfile`` creates owner-only files, which would hide outputs from the
    other users of a shared folder; every temporary is ``chmod``-ed to this.
``writing(final)`` / ``write_error(exc, final=None)`` / ``ffmpeg_write_error(stderr, final)``
    A full disk (quota, read-only file system) met while writing ``final`` becomes a one-line
    ``UserError`` naming ``final`` (exit 2), never a traceback or a blame on the input;
    ``write_error`` also names the file of a name-too-long, permission or not-a-folder refusal
    (the CLI, batch tasks and preprocess stages map what no writer did). ``output_of(path)`` reads
    a temporary (or a file in one) as the output the user named.
``free_bytes(path)``
    The free space of the disk that holds (or would hold) ``path``: the checks before long work.
``short_name(name, room)``
    ``name``, or its start and a hash when ``room`` more bytes would not fit a file name.
``claim(final) -> Claim``
    One run at a time per output: a long, resumable run (``animate``, ``densepose``) holds
    ``.{final.name}.run.lock`` beside its output until it ends (``Claim.release()``, or the
    block of ``with claim(final):``); a second run of the same output meanwhile is refused in one
    line instead of sharing (or deleting) the first one's work; the refusal names the holder (pid,
    host, since when, command line), which the holding run records in the file
    (``record_holder``, ``holder_of``). The file is removed on release, and one that a killed run
    left is taken over (the OS dropped its lock).

``errors.first_line(exc)`` (the first non-empty line of an exception's message) and
``errors.shown(path)`` (a path quoted for a one-line message) live in ``errors``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError, one_line, shown

_UMASK_LOCK = threading.Lock()
_LOCKS: dict[str, object] = {}  # temporary path -> the filelock.FileLock held for it
_LOCKS_GUARD = threading.Lock()


def file_mode(directory: bool = False) -> int:
    """``0o666`` (``0o777`` for a folder) minus the process umask: what ``open``/``mkdir`` give."""
    with _UMASK_LOCK:  # reading the umask means setting it; do not race another thread doing so
        mask = os.umask(0o022)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


# ----------------------------------------------------------------------------- temporaries


def check_utf8(path: Path | str) -> None:
    """Refuse a text file (a manifest, a CSV) that is not UTF-8 (a BOM is fine): one line naming
    the file and the first bad byte's offset in it."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)  # counted after the BOM
        raise UserError(f"{path}: not UTF-8 text (byte {start}: {exc.reason}); save it as UTF-8") from None


NAME_MAX = 255
"""The longest file name, in bytes, that Linux and macOS filesystems take."""


def check_replaceable(final: Path | str) -> None:
    """Refuse an output path that names a device, a FIFO or a socket (``-o /dev/null``): no
    output may take its place, with ``--overwrite`` or without. A file, a folder, a symlink (the
    link itself is what an output replaces) or nothing is fine."""
    try:
        mode = os.lstat(final).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    kinds = {stat.S_ISCHR: "a device", stat.S_ISBLK: "a device", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}
    for test, kind in kinds.items():
        if test(mode):
            raise UserError(f"{final}: is {kind}, not a file or folder, and no output replaces it; choose another output")


def short_name(name: str, room: int) -> str:
    """``name`` itself when ``room`` more bytes still fit a file name (``NAME_MAX``), else its
    start cut to fit with ``~`` and 8 hex digits of its sha256 (the same name always gives the same
    short one, so later runs find what earlier ones named after it)."""
    raw = os.fsencode(name)
    if len(raw) + room <= NAME_MAX:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: max(NAME_MAX - room - 9, 1)].decode("utf-8", errors="ignore") or "x"  # never half a character
    return f"{head}~{digest}"


_TAIL_ROOM = 64
"""Bytes that a temporary's name adds to its output's (``.``, ``.PID-RANDOM.partial`` and a suffix)."""


def _stem(final: Path) -> str:
    return short_name(final.name, _TAIL_ROOM)


def _token_pattern(final: Path) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(_stem(final))}\.(\d+-[0-9a-f]{{8}})\.(partial.*|old|lock)$", re.DOTALL)


_ANY_TEMPORARY = re.compile(r"^\..+\.(\d+-[0-9a-f]{8}\.(partial.*|old|lock)|run\.lock)$", re.DOTALL)


def is_temporary_name(name: str) -> bool:
    """``name`` is one of the hidden temporaries, locks or run claims that this module puts
    beside an output (of whatever output)."""
    return _ANY_TEMPORARY.match(name) is not None


def _lock_path(final: Path, token: str) -> Path:
    return final.with_name(f".{_stem(final)}.{token}.lock")


def _run_lock_path(final: Path) -> Path:
    return final.with_name(f".{_stem(final)}.run.lock")  # not a token's: sweep's pattern never takes it


def temp_beside(final: Path | str, directory: bool = True, suffix: str | None = None) -> Path:
    """A fresh, locked, hidden temporary folder (or file) next to ``final``; see the module docstring."""
    final = Path(final)
    with writing(final):
        return _temp_beside(final, directory, suffix)


def _temp_beside(final: Path, directory: bool, suffix: str | None) -> Path:
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final)  # what a killed earlier writer of the same output left
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    lock = FileLock(str(_lock_path(final, token)), mode=file_mode())
    lock.acquire(timeout=0)
    tail = "" if directory else (final.suffix if suffix is None else suffix)
    if len(os.fsencode(tail)) > _TAIL_ROOM - 30:
        tail = ""  # an odd, long "extension": no tool needs it
    path = final.with_name(f".{_stem(final)}.{token}.partial{tail}")
    try:
        if directory:
            path.mkdir(mode=0o700)
            os.chmod(path, file_mode(directory=True))
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.chmod(path, file_mode())
    except BaseException:
        _drop_lock(lock)
        raise
    with _LOCKS_GUARD:
        _LOCKS[str(path)] = lock
        _OUTPUTS[str(path)] = final
        while len(_OUTPUTS) > 1024:
            del _OUTPUTS[next(iter(_OUTPUTS))]
    return path


def _drop_lock(lock) -> None:
    with contextlib.suppress(OSError):
        Path(lock.lock_file).unlink()  # unlink while holding it: nobody can be waiting on this token
    with contextlib.suppress(Exception):
        lock.release(force=True)


def _release(tmp: Path) -> None:
    with _LOCKS_GUARD:
        lock = _LOCKS.pop(str(tmp), None)
    if lock is not None:
        _drop_lock(lock)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):  # a read-only folder in it (a replaced output the user had made read-only)
            for folder, _, _ in os.walk(path):
                with contextlib.suppress(OSError):  # not ours to change: left (and tried again by the next sweep)
                    os.chmod(folder, stat.S_IMODE(os.lstat(folder).st_mode) | stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def discard(tmp: Path | str | None) -> None:
    """Remove a temporary file or folder (and release its lock) if it is still there."""
    if tmp is None:
        return
    tmp = Path(tmp)
    _remove(tmp)
    _release(tmp)


def sweep(final: Path | str) -> list[Path]:
    """Remove what killed runs left for ``final``; leave the temporaries of live jobs alone."""
    from filelock import FileLock, Timeout

    final = Path(final)
    try:
        names = os.listdir(final.parent)
    except OSError:
        return []
    pattern = _token_pattern(final)
    tokens: dict[str, list[Path]] = {}
    for name in names:
        match = pattern.match(name)
        if match:
            tokens.setdefault(match.group(1), []).append(final.with_name(name))
    removed: list[Path] = []
    for token, paths in tokens.items():
        with _LOCKS_GUARD:
            if any(str(p) in _LOCKS for p in paths):
                continue  # ours, still in use
        lock = FileLock(str(_lock_path(final, token)), mode=file_mode())
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its owner is alive
        except OSError:
            continue  # cannot even lock (read-only folder): not ours to judge
        try:
            for path in paths:
                if not path.name.endswith(".lock"):
                    _remove(path)
                    removed.append(path)
        finally:
            _drop_lock(lock)
    run_lock = _run_lock_path(final)
    if run_lock.exists():  # a killed run's claim (nobody holds it) goes too; a live run's stays
        with contextlib.suppress(UserError, OSError):
            claim(final).release()
            removed.append(run_lock)
    return removed


# ----------------------------------------------------------------------------- refusals

_OUTPUTS: dict[str, Path] = {}  # temporary path -> its output, for messages (the latest 1024)
_FULL = {
    errno.ENOSPC: "free space on that disk or choose an output on another one",
    errno.EDQUOT: "free space within your quota or choose an output on another disk",
    errno.EFBIG: "choose an output on a disk whose file system takes larger files, or raise the file-size limit (ulimit -f)",
    errno.EROFS: "choose an output on a writable disk",
}
_NAMED = {
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.ENOTDIR: "a file is in the way of a folder there; choose another path",
}


def nearest_existing(path: Path | str) -> Path:
    """``path`` if it exists, else its nearest parent that does (where it would be created)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: Path | str) -> int:
    """The bytes free on the disk that holds ``path``, or would hold it (its nearest existing folder)."""
    return shutil.disk_usage(nearest_existing(path)).free


def output_of(path: Path | str) -> Path:
    """The path the user knows for ``path``: a temporary (or a file inside one) read as its output."""
    path = Path(path)
    for parent in (path, *path.parents):
        final = _OUTPUTS.get(str(parent))
        if final is not None:
            return final / path.relative_to(parent)
    return path


def write_error(exc: BaseException, final: Path | str | None = None) -> UserError | None:
    """A filesystem's refusal (a full disk or quota, a read-only file system; with a file name:
    a name too long, no permission, a file in the way) as a one-line ``UserError`` naming the path
    and the fix, else None. ``final`` is the output being written, named for a full disk whose
    error names no file; without it, the error's own file is named (a temporary as its output)."""
    if not isinstance(exc, OSError):  # a Rust library's I/O error (safetensors' "... (os error 28)")
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None or int(code.group(1)) not in _FULL:
            return None
        exc = OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    if exc.errno is None:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    named = exc.filename is not None
    if exc.errno in _FULL:
        where = final if final is not None else (output_of(exc.filename) if named else None)
        if where is None:
            return UserError(f"{reason} while writing the output; {_FULL[exc.errno]}")
        return UserError(f"{shown(where)}: cannot write it ({reason}); {_FULL[exc.errno]}")
    if exc.errno in _NAMED and named and final is None:
        return UserError(f"{shown(output_of(exc.filename))}: {reason}; {_NAMED[exc.errno]}")
    return None


@contextlib.contextmanager
def writing(final: Path | str) -> Iterator[None]:
    """Report a full disk (quota, read-only file system) met in the block as a ``UserError``
    naming ``final``, the output being written (``write_error``)."""
    try:
        yield
    except Exception as exc:
        error = write_error(exc, final) if getattr(exc, "errno", None) in _FULL or not isinstance(exc, OSError) else None
        if error is None:
            raise
        raise error from exc


FFMPEG_REFUSALS = {os.strerror(code): code for code in _FULL}
"""ffmpeg's messages for a full disk (and the like), to tell them from a damaged input."""


def ffmpeg_write_error(stderr: str, final: Path | str, returncode: int | None = None) -> UserError | None:
    """The ``write_error`` for an ffmpeg run whose stderr says its output could not be written, or
    that a file-size limit (``ulimit -f``: SIGXFSZ, which kills it) ended."""
    import signal

    if returncode is not None and returncode == -getattr(signal, "SIGXFSZ", 0):
        return write_error(OSError(errno.EFBIG, os.strerror(errno.EFBIG)), final)
    for text, code in FFMPEG_REFUSALS.items():
        if text in stderr:
            return write_error(OSError(code, text), final)
    return None


# ----------------------------------------------------------------------------- committing


def _fsync_path(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data itself was synced
        pass
    finally:
        os.close(fd)


def _fsync_tree(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        for entry in os.scandir(tmp):
            if entry.is_file(follow_symlinks=False):
                _fsync_path(Path(entry.path), directory=False)
        _fsync_path(tmp, directory=True)
    else:
        _fsync_path(tmp, directory=False)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the kernel or libc lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False


def _old_name(tmp: Path) -> Path:
    """``.NAME.TOKEN.old`` for the temporary ``.NAME.TOKEN.partial...``: swept like it if a kill leaves it."""
    return tmp.with_name(tmp.name[: tmp.name.rfind(".partial")] + ".old")


def _appeared(final: Path) -> UserError:
    return UserError(f"{shown(final)}: appeared while this run was writing it (another job?); kept it, pass --overwrite to replace it")


def empty_folder(path: Path | str) -> bool:
    """``path`` is a folder (not a link to one) with nothing in it: a folder output may take its
    place without ``--overwrite`` (``mkdir -p out && magicanimate frames v.mp4 -o out``), as
    nothing in it can be lost."""
    path = Path(path)
    try:
        return path.is_dir() and not path.is_symlink() and next(os.scandir(path), None) is None
    except OSError:
        return False


def _place(tmp: Path, final: Path, replace: bool) -> Path | None:
    """Rename ``tmp`` onto ``final``; return where the replaced previous version now is, if kept."""
    check_replaceable(final)
    if not replace:
        if tmp.is_dir() and not tmp.is_symlink():
            if (final.exists() or final.is_symlink()) and not empty_folder(final):
                raise _appeared(final)
            try:
                os.rename(tmp, final)  # onto nothing or an empty folder; onto one that a racing writer just filled: fails
            except OSError as exc:
                if final.exists():
                    raise _appeared(final) from None
                raise exc
            return None
        try:
            os.link(tmp, final)  # fails if final exists: an atomic "create, never replace"
        except FileExistsError:
            raise _appeared(final) from None
        except OSError:  # a filesystem without hard links
            if final.exists() or final.is_symlink():
                raise _appeared(final) from None
            os.replace(tmp, final)
            return None
        os.unlink(tmp)
        return None
    final_is_dir = final.is_dir() and not final.is_symlink()
    tmp_is_dir = tmp.is_dir() and not tmp.is_symlink()
    if not final_is_dir and not tmp_is_dir:
        os.replace(tmp, final)  # a file onto a file (or nothing): atomic
        return None
    if final.exists() or final.is_symlink():
        if _exchange(tmp, final):
            return tmp  # tmp's name now holds the previous version
        old = _old_name(tmp)
        os.rename(final, old)
        os.rename(tmp, final)
        return old
    os.rename(tmp, final)
    return None


def _swap_in(tmp: Path, final: Path) -> Path:
    """Put ``tmp`` under ``final``'s name, which holds a previous version, in one step (a kill at
    any moment leaves ``final`` with the old or the new version, never without one); return where
    the previous version now is (for ``_take_back``, else removed by the caller)."""
    if not (tmp.is_dir() and not tmp.is_symlink()) and not (final.is_dir() and not final.is_symlink()):
        backup = _old_name(tmp)
        try:
            os.link(final, backup, follow_symlinks=False)  # a second name for the previous file; final keeps it
        except OSError:  # no hard links here: the exchange or the two renames below
            pass
        else:
            os.replace(tmp, final)
            return backup
    if _exchange(tmp, final):
        return tmp  # tmp's name now holds the previous version
    backup = _old_name(tmp)
    os.rename(final, backup)  # without renameat2: a moment with nothing under final
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(backup, final)
        raise
    return backup


def _take_back(tmp: Path, final: Path, previous: Path | None) -> None:
    """Undo one ``commit_together`` placement: the new version back to ``tmp``, the previous one to ``final``."""
    if previous is None:
        os.rename(final, tmp)
    elif previous == tmp:  # exchanged: exchange back
        if not _exchange(tmp, final):
            raise OSError("cannot exchange back")
    elif previous.is_dir() and not previous.is_symlink():
        os.rename(final, tmp)
        os.rename(previous, final)
    else:
        os.replace(previous, final)  # a file: the previous version back in one step


def commit(tmp: Path | str, final: Path | str, *, replace: bool) -> None:
    """Sync ``tmp`` and rename it onto ``final``; see the module docstring."""
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    old = _place(tmp, final, replace)
    _fsync_path(final.parent, directory=True)
    if old is not None:
        _remove(old)
    _release(tmp)


def commit_together(pairs: list[tuple[Path, Path]], *, replace: bool) -> None:
    """Commit every ``(tmp, final)`` pair, or none of them; see the module docstring."""
    pairs = [(Path(t), Path(f)) for t, f in pairs]
    for _, final in pairs:
        check_replaceable(final)
    if not replace:
        for tmp, final in pairs:
            if (final.exists() or final.is_symlink()) and not (tmp.is_dir() and not tmp.is_symlink() and empty_folder(final)):
                raise _appeared(final)
    for tmp, _ in pairs:
        _fsync_tree(tmp)
    done: list[tuple[Path, Path, Path | None]] = []  # (tmp, final, where the previous version now is)
    try:
        for tmp, final in pairs:
            if replace and (final.exists() or final.is_symlink()):
                done.append((tmp, final, _swap_in(tmp, final)))
            else:
                _place(tmp, final, replace=False)
                done.append((tmp, final, None))
    except BaseException:
        for tmp, final, previous in reversed(done):  # take this call's commits back
            with contextlib.suppress(OSError):
                _take_back(tmp, final, previous)
        raise
    for _, final, previous in done:
        _fsync_path(final.parent, directory=True)
        if previous is not None:
            _remove(previous)
    for tmp, _ in pairs:
        _release(tmp)


def record_holder(lock: Path | str | int) -> None:
    """Write who holds ``lock`` (its path, or an open descriptor of it) into the lock file: pid,
    host, command line and since when, as JSON, for ``holder_of``. Only the holder writes it (the
    lock held), and only its own record; a failure to write (a full disk) is not the run's."""
    import json
    import socket
    import sys
    import time

    argv = sys.argv or ["python"]
    if argv[0].endswith("__main__.py"):  # python -m PACKAGE
        program = f"python -m {os.path.basename(os.path.dirname(argv[0]))}"
    else:
        program = "python -c" if argv[0] == "-c" else os.path.basename(argv[0])
    command = " ".join([program, *argv[1:]])
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command[:300]}
    opened = not isinstance(lock, int)
    with contextlib.suppress(OSError):
        fd = os.open(lock, os.O_WRONLY) if opened else lock
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        finally:
            if opened:
                os.close(fd)


def holder_of(lock: Path | str) -> str:
    """What ``lock``'s holder recorded (``record_holder``), for a refusal: `` (held by pid 12 on
    host since 2025-01-02 10:00:00: magicanimate animate ...)``, with what to do when that pid has
    ended on this host while the lock is still held (a process it started holds it); ``""`` when
    nothing readable is recorded (an older version's lock, a holder that has not written yet)."""
    import json
    import socket
    import time

    try:
        with open(lock, "rb") as handle:
            record = json.loads(handle.read(4096))
        pid, host, since, command = int(record["pid"]), str(record["host"]), float(record["since"]), str(record["command"])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        if not 0 < pid < 2**31:  # 0 and -1 would name a process group, or every process, to os.kill
            raise ValueError(pid)
    except (OSError, ValueError, TypeError, KeyError, OverflowError, AttributeError):  # nothing readable (a damaged record: no one named)
        return ""
    said = f" (held by pid {pid} on {host} since {when}: {one_line(command)})"
    if host != socket.gethostname():
        return said
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"{said[:-1]}; pid {pid} has ended, so a process it started still holds the lock: stop that process, or if none is still writing, remove {shown(lock)})"
    except OSError:  # another user's process: alive
        pass
    return said


class Claim:
    """A held ``claim(final)``: release it once the run has ended (also as ``with``)."""

    def __init__(self, final: Path, path: Path, fd: int | None) -> None:
        self.final, self.path, self._fd = final, path, fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a run that opened it meanwhile sees it gone (below)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim(final: Path | str) -> Claim:
    """Hold the run lock of ``final``, or raise ``UserError`` when another run holds it; see the
    module docstring. Makes ``final``'s folder, as its first temporary would."""
    final = Path(final)
    path = _run_lock_path(final)
    try:
        import fcntl  # noqa: F401 (hold_lock needs it)
    except ImportError:  # no flock (Windows): runs are not kept apart
        return Claim(final, path, None)
    def refuse() -> None:
        raise UserError(f"{shown(final)}: another run is writing it now; wait for that run to end (or stop it), "
                        f"or choose another output{holder_of(path)}")  # fmt: skip

    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        return Claim(final, path, hold_lock(path, refuse))


def hold_lock(path: Path, busy: Callable[[], None]) -> int:
    """Lock the file ``path`` (made if missing; flock, exclusive) and return its descriptor, with
    this process recorded as its holder (``record_holder``). When another process holds it,
    ``busy()`` is called first: it raises to refuse, or returns to wait for the lock. A lock file
    its holder removed meanwhile (``Claim.release``) is locked afresh where it is made again.
    Release it as ``Claim.release`` does (unlink, then close). POSIX only (``fcntl``)."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:  # refused, or Ctrl-C while waiting
            os.close(fd)
            raise
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            record_holder(fd)  # who holds it, for the message of the next one
            return fd
        os.close(fd)  # the holder ended and removed it: lock the file there now


@contextlib.contextmanager
def temporary(
    final: Path | str, directory: bool = False, suffix: str | None = None, replace: bool = False
) -> Iterator[Path]:
    """Yield a temporary beside ``final``; commit it when the block succeeds, else discard it."""
    with writing(final):
        tmp = temp_beside(final, directory=directory, suffix=suffix)
        try:
            yield tmp
            commit(tmp, final, replace=replace)
        finally:
            discard(tmp)


def write_bytes(final: Path | str, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``final`` atomically."""
    with temporary(final, replace=replace) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text(final: Path | str, text: str, *, replace: bool, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``final`` atomically."""
    write_bytes(final, text.encode(encoding), replace=replace)
