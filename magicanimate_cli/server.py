"""Models that stay loaded between CLI calls: ``magicanimate serve`` and ``magicanimate --server``.

A fresh ``magicanimate animate`` spends most of its time before the first denoising step importing
torch, diffusers and transformers and loading the weights (``docs/performance.md``, "Loading and
the first step"). ``serve`` keeps one process up: it listens on a Unix socket and runs the tasks
that clients send with the batch's ``TaskRunner`` (``batch/tasks.py``), so the animator is loaded
once and reused by every later call that asks for the same weights, device and dtype. A client
(``magicanimate --server SOCKET animate ...``, or ``MAGICANIMATE_SERVER=SOCKET`` in the
environment) imports none of that: it sends the command, its arguments and its working folder,
shows the progress the server reports and prints the result, with the CLI's exit codes.

The protocol is one JSON object per line. The client sends ``{"protocol": 1, "command": ...,
"args": [...], "cwd": ..., "env": {...}, "process_env": {...}, "width": ..., "debug": false, "umask": ..., "version": ...}``; the server answers ``{"started": true}``,
``{"progress": [stage, done, total]}``, ``{"warning": text}`` lines (an ``InputWarning`` of the
task, which the client warns with in its own process, so its terminal shows it when it is found),
``{"say": text}`` lines (what a local run prints on stderr meanwhile: ``models download``'s plan)
and one ``{"record": ...}`` (the batch's task record:
``exit_code``, ``error``, ``result``, ``summary``, ...). One task runs at a time, in the order the
clients connected, in the client's folder. A client that goes away (Ctrl-C) ends its task at the
task's next progress report; what the task had written stays as an interrupted run leaves it
(``animate`` resumes from its last finished step).

Only the user who started the server can use it: the socket lives in a folder nobody else can
write to (``_private_folder`` checks it), the socket itself is ``0600``, and on Linux each side
checks the other's user id. ``SOCKET.lock`` keeps a second server off the same socket. Commands
that a batch cannot run (``batch``, ``demo``, ``serve``) and ``--help`` always run in the client's
own process.
"""

from __future__ import annotations

import json
import os
import shlex
import socket as sockets
import stat
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__
from .errors import InputWarning, StageFailed, UserError, first_line, shown
from .processes import environment, stop_on_signals

PROTOCOL = 1
MAX_REQUEST_BYTES = 1 << 20
"""The longest request line the server reads (a command line, not data)."""

DEFAULT_WIDTH = 80
"""Columns of the summary when the client's stdout is not a terminal (Rich's default for a file)."""

REQUEST_TIMEOUT_S = 30.0
"""How long the server waits for a connected client's request before it serves the next one."""

MAX_IDLE_TIMEOUT = float((2**31 - 1) // 1000)
"""The longest ``--idle-timeout`` (24.8 days): CPython waits on a socket in milliseconds held in a
32-bit int, and a longer timeout wraps around (49.7 days timed out after 1.5 s)."""

FORWARDED_ENV = ("MAGICANIMATE_MODELS", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Variables of the client's environment that hold for its task on the server (set or unset): a
command reads them afresh (the weights folder; huggingface_hub reads its token for each request)."""

PROCESS_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA",
               "MKL_ENABLE_INSTRUCTIONS", "HF_HUB_OFFLINE", "HF_ENDPOINT")
"""Variables that change what a command does but are read once per process (the GPUs when CUDA
starts, torch's threads and CPU kernels when it is imported, huggingface_hub's offline mode and
endpoint when it is): a task cannot take its client's, so a client that sets one to another value
than the server was started with is refused, saying to restart the server with it. One the client
leaves unset is the server's (a server started from a job script with its own thread count or
offline mode serves a plain shell; a server per GPU is how a client picks one)."""

__all__ = ["PROTOCOL", "Forwarded", "ServeResult", "check_usage", "default_socket", "describe_task", "forwardable", "serve",
           "submit", "wants_json"]


def default_socket() -> Path:
    """Where ``serve`` listens unless told otherwise: a folder of the user's own.

    ``$XDG_RUNTIME_DIR/magicanimate/serve.sock`` when the session has a runtime folder, else
    ``<temp>/magicanimate-<uid>/serve.sock``.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "magicanimate" / "serve.sock"
    return Path(tempfile.gettempdir()) / f"magicanimate-{os.getuid()}" / "serve.sock"


def socket_path(socket: Path | str, option: str) -> Path:
    """A socket path as typed (``~`` is the home folder, quoted or not); an empty one (an unset
    variable) is refused instead of read as the current folder. ``option`` names it in that refusal.
    (``media.input_path``'s rule, without importing ``media``: a client stays light.)"""
    text = os.fspath(socket)
    if not text:
        raise UserError(f'{option} "": an empty socket path (an unset shell variable?); name the socket, or leave {option} out')
    return Path(text).expanduser()


# ----------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Forwarded:
    """The result of a task run by a server: its ``--json`` fields, its exit code and the summary
    the CLI prints for a person (rendered by the server for the client's width)."""

    result: dict
    exit_code: int = 0
    models_loaded: int | None = None
    summary: str | None = None
    failure: str | None = None  # with a non-zero exit code: the one line saying what failed, as the CLI's own

    def to_dict(self) -> dict:
        return dict(self.result)

    def for_humans(self):
        from rich.text import Text

        return Text(self.summary.rstrip("\n")) if self.summary is not None else self.to_dict()


def forwardable(command: str | None, args: list[str], registry=None) -> bool:
    """Whether ``magicanimate COMMAND ARGS`` goes to a server: a command of ``registry`` (default
    the CLI's: every command a batch can run, so not ``batch``, ``demo`` or ``serve``), and no
    ``--help`` (shown by the client's own CLI)."""
    return _refusal(command, args, registry) is None


def _refusal(command: str | None, args: list[str], registry=None) -> str | None:
    """Why ``COMMAND ARGS`` does not run on a server (None: it does)."""
    from .batch.registry import NOT_TASKS, Unknown

    if registry is None:
        from .batch.registry import COMMANDS as registry
    words = (command or "").split()
    if not words or words[0] in NOT_TASKS or "--help" in option_words(args):
        return f"'{command}' does not run on a server; run it without --server"
    try:
        registry.lookup(command, args)
    except Unknown as exc:  # not a command, or a group without its subcommand: the local CLI says so
        return str(exc)
    return None


def check_usage(ctx, command: str, args: list[str]) -> None:
    """Parse ``COMMAND ARGS`` with the CLI's own parser (click, under the root context ``ctx``) in
    the client, before anything is sent: a usage error (an unknown option, a value of the wrong
    type, a missing argument) is raised as the direct run raises it, so it is the same one line
    with the same exit code 2 (the server's own check, ``Command.parse``, words its messages apart
    from click's). Nothing runs: no command's callback is called."""
    from .batch.registry import COMMANDS

    found, rest = COMMANDS.lookup(command, args)
    leaf = ctx.command
    for word in found.name.split():  # "models download": the group, then its command
        leaf = leaf.get_command(ctx, word)
    with leaf.make_context(found.name, list(rest), parent=ctx):
        pass


def option_words(args: list[str]) -> list[str]:
    """The words before ``--`` (after it every word is an argument, ``--json`` and ``--debug`` too)."""
    return args[: args.index("--")] if "--" in args else args


def wants_json(args: list[str]) -> bool:
    """Whether the command's own arguments ask for ``--json``."""
    return "--json" in option_words(args)


def submit(
    command: str,
    args: list[str],
    *,
    socket: Path | str,
    cwd: Path | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    debug: bool = False,
    on_say: Callable[[str], None] | None = None,
) -> Forwarded:
    """Run ``magicanimate COMMAND ARGS`` on the server at ``socket``, as if typed in ``cwd``.

    Relative paths are read against ``cwd`` (default: this process's folder). The server's
    progress goes to ``progress``; the task's ``InputWarning``s are warned here as they come, and
    the text a local run prints on stderr meanwhile (``models download``'s plan) goes to ``on_say``. Bad
    input raises ``UserError`` (the CLI's exit 2), a failed task ``StageFailed`` (exit 1); a
    result whose own exit code is not 0 (a stage of ``preprocess`` failed) is returned with it. The variables of ``FORWARDED_ENV`` hold for the
    task as they are in this process (the task runs in ``cwd``: a relative weights folder is read there);
    those of ``PROCESS_ENV`` that this process sets must be the server's, else the task is refused
    (``UserError``); those it leaves unset are the server's. With
    ``debug`` a task that fails with an unexpected exception raises a ``StageFailed`` whose
    ``traceback`` is the server's text of it (``--debug`` prints it, as for a local run).
    """
    path = socket_path(socket, "--server")
    cwd = os.path.abspath(cwd or os.getcwd())
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    request = {"protocol": PROTOCOL, "command": command, "args": [str(arg) for arg in args], "cwd": cwd, "env": env,
               "process_env": {name: os.environ.get(name) for name in PROCESS_ENV}, "width": _terminal_width(), "debug": bool(debug),
               "umask": _umask(), "version": __version__}
    record = None
    with _connect(path) as conn:
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
            with conn.makefile("rb") as replies:
                for line in replies:
                    message = json.loads(line)
                    if "record" in message:
                        record = message["record"]
                        break
                    if "warning" in message:  # the task's InputWarning, when it was found
                        warnings.warn(str(message["warning"]), InputWarning, stacklevel=2)
                    if on_say is not None and "say" in message:  # what a local run prints on stderr (a plan)
                        on_say(str(message["say"]))
                    if progress is not None and "progress" in message:
                        stage, done, total = message["progress"]
                        progress(str(stage), int(done), int(total))
        except OSError:
            record = None  # the server went away: said below
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StageFailed(f"{shown(path)}: the server sent a reply this client cannot read ({first_line(exc)}); "
                              "use the same magicanimate version for both") from None
    if not isinstance(record, dict):
        raise StageFailed(f"{shown(path)}: the server stopped before the task ended (see the server's output)")
    code = int(record.get("exit_code") or 0)
    if code == 2:
        raise UserError(record.get("error") or "bad input")
    result = record.get("result") or {}
    if code and not set(result) - {"warnings"}:  # failed with no result but the warnings said before, which came as they were said
        failed = StageFailed(record.get("error") or f"the task failed with exit code {code}")
        failed.traceback = record.get("traceback")
        raise failed
    return Forwarded(result, code, record.get("models_loaded"), record.get("summary"), record.get("error") if code else None)


def _umask() -> int:
    """This process's umask (the permissions its files are created without), which only setting it tells."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _terminal_width() -> int:
    """The columns the summary is laid out for: this terminal's, else Rich's default for a file."""
    import shutil
    import sys

    return max(20, min(1000, shutil.get_terminal_size().columns)) if sys.stdout.isatty() else DEFAULT_WIDTH


def _connect(path: Path) -> sockets.socket:
    if not hasattr(sockets, "AF_UNIX"):
        raise UserError("--server needs Unix sockets, which this platform lacks; run the command without --server")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # said by the connect below
    if mode is not None and not stat.S_ISSOCK(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "a file"
        raise UserError(f"{shown(path)}: is {what}, not a magicanimate server's socket; pass the socket `magicanimate serve` "
                        f"printed (its default: {shown(default_socket())}) to --server / MAGICANIMATE_SERVER")  # fmt: skip
    conn = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        conn.close()
        raise UserError(
            f"{shown(path)}: no magicanimate server is listening there ({exc.strerror}); start one with "
            f"`magicanimate serve --socket {shown(path)}`, or run without --server / MAGICANIMATE_SERVER"
        ) from None
    except OSError as exc:
        conn.close()
        raise UserError(f"{shown(path)}: cannot reach a server there ({exc.strerror or exc}); check --server / MAGICANIMATE_SERVER") from None
    uid = _peer_uid(conn)
    if uid is not None and uid != os.getuid():
        conn.close()
        raise UserError(f"{shown(path)}: the process listening there belongs to user id {uid}, not you; "
                        "start your own with `magicanimate serve` in a folder of yours")
    return conn


# ----------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class ServeResult:
    """What a server did before it stopped."""

    socket: str
    tasks: int
    failed: int
    models_loaded: int
    seconds: float
    exit_code: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("exit_code")
        return data


def describe_task(record: dict) -> str:
    """One line for the server's log: ``animate ref.png poses.mp4 -o out.mp4: exit 0 in 12.3 s``."""
    words = [record.get("command") or "?", *(record.get("args") or [])]
    line = f"{' '.join(shown(word) for word in words)}: exit {record.get('exit_code')}"
    if record.get("seconds") is not None:
        line += f" in {record['seconds']} s"
    if record.get("error"):
        line += f" ({record['error']})"
    return line


class _ClientGone(BaseException):
    """The client closed its connection: its task stops at its next progress report, as a task
    stops on Ctrl-C (a ``BaseException``, so that no stage takes it for a failure of its own)."""


def serve(
    socket: Path | str | None = None,
    *,
    idle_timeout: float | None = None,
    progress=None,
    on_ready: Callable[[str], None] | None = None,
    on_task: Callable[[dict], None] | None = None,
    preload: bool = False,
    models: Path | str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    commands=None,
) -> ServeResult:
    """Run the tasks clients send to ``socket`` (default ``default_socket()``) until stopped.

    With ``preload`` the animator of ``models``, ``device`` and ``dtype`` is loaded before
    ``on_ready`` (its weights checked first), so the first ``animate`` with the same three
    settings is warm too; clients that connect meanwhile wait.

    Stops on Ctrl-C or SIGTERM (the normal ends: exit 0), or after ``idle_timeout`` seconds
    without a client. ``on_ready(path)`` is called once the socket accepts clients, ``on_task(record)``
    after each task. A socket that another server is using (it holds ``SOCKET.lock``) is refused
    (``UserError``); a stale one (its server died) is replaced; any other file at ``socket`` is never
    touched, nor is a socket folder that others could write to used. ``commands`` is the registry
    the tasks are looked up in (the CLI's, as a batch's). ``progress`` is accepted for the CLI's
    uniform call and unused: each task's progress goes to its client.
    """
    from .batch.tasks import COMMANDS, TaskRunner

    started_with = {name: os.environ.get(name) for name in PROCESS_ENV}  # before anything here sets one (torch's kernels)
    if not hasattr(sockets, "AF_UNIX"):
        raise UserError("serve needs Unix sockets, which this platform lacks; use `magicanimate batch` instead")
    if idle_timeout is not None and not 0 < idle_timeout <= MAX_IDLE_TIMEOUT:
        raise UserError(f"--idle-timeout {idle_timeout}: must be a number of seconds above 0, at most {MAX_IDLE_TIMEOUT:.0f} "
                        "(24 days; leave it out to serve until stopped)")
    from .animate import check_dtype
    from .device import check_device

    check_device(device)  # a bad --device or --dtype is said before the socket's folder and lock are made,
    check_dtype(dtype)  # with --preload or without (where they are unused)
    runner = TaskRunner(commands or COMMANDS)
    started, counts = time.monotonic(), {"tasks": 0, "failed": 0}

    def counted(record: dict) -> None:  # before the client sees the record
        counts["tasks"] += 1
        counts["failed"] += record.get("exit_code") != 0

    path = socket_path(socket, "--socket") if socket is not None else default_socket()
    with stop_on_signals():  # before the socket exists: a SIGTERM from here on stops the server cleanly
        lock = _lock(path)
        listener = identity = home = None
        try:
            listener = _listen(path)
            identity = os.stat(path).st_ino
            home = os.open(".", os.O_RDONLY)  # the server's own folder, back after each task
            listener.settimeout(idle_timeout)
            if preload:
                from .models import check_models

                check_models(models)  # missing or damaged weights in one line, before the load
                animate = runner.registry["animate"]
                runner.model(animate.name, animate.model, {"models": models, "device": device, "dtype": dtype}, check=False)
            if on_ready is not None:
                on_ready(str(path))
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    break
                with conn:
                    try:
                        record = _serve_one(conn, runner, counted, started_with)
                    finally:
                        os.fchdir(home)
                if record is not None and on_task is not None:
                    on_task(record)
        except KeyboardInterrupt:
            pass
        finally:
            if home is not None:
                os.close(home)
            if listener is not None:
                listener.close()
            _remove_if_ours(path, identity)
            os.close(lock)
    return ServeResult(str(path), counts["tasks"], counts["failed"], runner.loads, round(time.monotonic() - started, 3))


def _private_folder(folder: Path) -> None:
    """Create the socket's folder (``0700``) or check that nobody else can write to it."""
    try:
        if not os.path.lexists(folder):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        info = os.lstat(folder)
    except OSError as exc:
        raise UserError(f"{shown(folder)}: cannot create the socket's folder ({exc.strerror}); choose another --socket") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{shown(folder)}: the socket's folder is not a folder (a link or a file); choose another --socket")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise UserError(
            f"{shown(folder)}: others could replace a socket in this folder (owner or permissions); "
            "choose a --socket in a folder of your own that only you can write to"
        )


def _lock(path: Path) -> int:
    """Hold ``SOCKET.lock`` for the server's lifetime: one server per socket, no race between two."""
    import fcntl

    if len(os.fsencode(path)) > 100:
        raise UserError(f"{shown(path)}: too long for a Unix socket path (at most about 100 bytes); choose a shorter --socket")
    _private_folder(path.parent)
    _not_another_file(path)  # before the lock file is made: a refused --socket leaves nothing behind
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise UserError(f"{shown(lock_path)}: cannot open the server's lock file ({exc.strerror}); choose another --socket") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise UserError(
            f"{shown(path)}: a magicanimate server is already listening there; use it with --server {shown(path)}, "
            "stop it, or choose another --socket"
        ) from None
    return lock


def _listen(path: Path) -> sockets.socket:
    """Listen on ``path`` (the lock held): a socket left there by a server that died is replaced.

    The socket is bound and listening under a hidden name first, then renamed onto ``path``, so a
    client that sees the file can connect (a bound socket refuses connections until ``listen``)."""
    _not_another_file(path)  # again, the lock held: nothing else may have been put there meanwhile
    hidden = _hidden(path)
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    mask = os.umask(0o177)  # the socket is born 0600
    try:
        hidden.unlink(missing_ok=True)  # left by a server killed while it started (the lock is held)
        listener.bind(str(hidden))
        listener.listen(16)
        os.replace(hidden, path)  # a stale socket there goes: no server holds the lock
    except OSError as exc:
        listener.close()
        with suppress(OSError):
            hidden.unlink()
        raise UserError(f"{shown(path)}: cannot listen there ({exc.strerror}); choose another --socket") from None
    finally:
        os.umask(mask)
    return listener


def _not_another_file(path: Path) -> None:
    """Refuse a ``--socket`` that names something other than a socket (a file of the user's)."""
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise UserError(f"{shown(path)}: exists and is not a socket; choose another --socket (nothing was changed)")


def _hidden(path: Path) -> Path:
    """Where ``_listen`` binds before the rename: beside ``path`` in its private folder, used only
    under ``path``'s lock, 5 bytes longer (sockets' paths take about 107; ``path`` is at most 100)."""
    return path.with_name(f".{path.name}.new")


def _remove_if_ours(path: Path, identity: int | None) -> None:
    """Remove the server's socket at ``path`` (the lock held). ``identity`` None: stopped before its
    inode was known (a SIGTERM inside ``_listen``), so a socket there is this server's or a stale
    one, and the hidden name it binds first may be left too."""
    for name in (path, _hidden(path)) if identity is None else (path,):
        try:
            info = os.lstat(name)
            if info.st_ino == identity or (identity is None and stat.S_ISSOCK(info.st_mode)):
                name.unlink()
        except OSError:
            pass


def _peer_uid(conn: sockets.socket) -> int | None:
    option = getattr(sockets, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(sockets.SOL_SOCKET, option, struct.calcsize("3i")))
    return uid


def _refused(error: str) -> dict:
    return {"status": "failed", "exit_code": 2, "error": error, "result": None}


def _read_line(conn: sockets.socket) -> bytes | None:
    """The request line, read within ``REQUEST_TIMEOUT_S`` in all; None when it did not come."""
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    data = b""
    try:
        while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            conn.settimeout(remaining)
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return None
    finally:
        conn.settimeout(None)
    return data.split(b"\n", 1)[0] + b"\n" if b"\n" in data else data


def _read_request(conn: sockets.socket, registry, started_with: dict[str, str | None] | None = None) -> dict | str:
    """The client's request, or why it cannot run (``started_with``: the server's ``PROCESS_ENV``)."""
    uid = _peer_uid(conn)
    if uid is not None and uid != os.getuid():
        return f"this server runs tasks for user id {os.getuid()} only"
    line = _read_line(conn)
    if line is None:
        return f"no request within {REQUEST_TIMEOUT_S:g} s; use the magicanimate client (--server)"
    if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
        return "the request is not one line of at most 1 MiB; use the magicanimate client (--server)"
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        return "the request is not JSON; use the magicanimate client (--server)"
    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        return f"the client speaks another protocol than this server ({PROTOCOL}); use the same magicanimate version for both"
    version = request.get("version", __version__)  # none from a client older than this check: not compared
    if version != __version__:
        return (f"this server runs magicanimate {__version__}, the client {version!s:.40}: a server keeps the code it started "
                "with; restart it (`magicanimate serve ...`), or run the command without --server")
    command, args, cwd = request.get("command"), request.get("args"), request.get("cwd")
    if not isinstance(command, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return "the request needs a command and a list of string arguments"
    refusal = _refusal(command, args, registry)
    if refusal is not None:
        return refusal
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isdir(cwd):
        return f"the client's folder {cwd!r} is not a folder this server can see; run the server on the same machine"
    if not isinstance(request.setdefault("debug", False), bool):
        return "the request's debug must be true or false"
    width = request.setdefault("width", DEFAULT_WIDTH)
    if not isinstance(width, int) or not 20 <= width <= 1000:
        return "the request's width must be a number of columns from 20 to 1000"
    umask = request.setdefault("umask", None)  # none from a client that did not say it: the server's
    if umask is not None and (not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777):
        return "the request's umask must be a number from 0 to 0o777"
    env = request.get("env", {})
    if not isinstance(env, dict) or not all(k in FORWARDED_ENV and isinstance(v, str) for k, v in env.items()):
        return f"the request's environment may only name {', '.join(FORWARDED_ENV)}"
    theirs = request.get("process_env", {})  # none from a client that did not say them: not compared
    if not isinstance(theirs, dict) or not all(k in PROCESS_ENV and (v is None or isinstance(v, str)) for k, v in theirs.items()):
        return f"the request's process environment may only name {', '.join(PROCESS_ENV)}"
    return (_env_refusal(theirs, started_with) if started_with is not None else None) or request


def _env_refusal(client: dict[str, str | None], server: dict[str, str | None]) -> str | None:
    """Why a task with the client's ``PROCESS_ENV`` values cannot run on a server started with
    ``server``'s (None: it can)."""
    differ = [name for name in PROCESS_ENV if client.get(name) is not None and client[name] != server.get(name)]  # unset: the server's
    if not differ:
        return None

    def value(text: str | None) -> str:
        return "unset" if text is None else shlex.quote(text)

    found = ", ".join(f"{name} is {value(client[name])} here but {value(server.get(name))} in the server" for name in differ)
    start = " ".join(f"{name}={value(client[name])}" for name in differ)
    return (f"{found}: a server reads {'it' if len(differ) == 1 else 'them'} once, when it starts; restart it as "
            f"`{start} magicanimate serve ...`, or run the command without --server")


def _environment(env: dict[str, str]):
    """The client's values of ``FORWARDED_ENV`` (unset where it has none) for one task."""
    return environment({name: env.get(name) for name in FORWARDED_ENV})


@contextmanager
def _umask_of(mask: int | None):
    """The client's umask (None: the server's) for one task: its files get the permissions a local run's would."""
    if mask is None:
        yield
        return
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _send(conn: sockets.socket, message: dict) -> None:
    conn.sendall(json.dumps(message, default=str).encode() + b"\n")


def _send_quietly(conn: sockets.socket, message: dict) -> None:
    """``_send``, for a client that may have left: its task stops at its next progress report."""
    with suppress(OSError):
        _send(conn, message)


def _serve_one(conn: sockets.socket, runner, counted: Callable[[dict], None], started_with: dict | None = None) -> dict | None:
    """Run one client's task in the client's folder; its record, given to ``counted`` and then
    sent to the client. None when the client left before its task began (nothing ran)."""
    try:
        request = _read_request(conn, runner.registry, started_with)
    except Exception as exc:  # noqa: BLE001 - no request may stop the server
        request = f"the request could not be read ({exc.__class__.__name__}: {first_line(exc)})"
    if isinstance(request, str):
        record = _refused(request)
    else:
        try:
            _send(conn, {"started": True})  # a client that left while queued gets no task run
        except OSError:
            return None

        def report(stage: str, done: int, total: int) -> None:
            try:
                _send(conn, {"progress": [stage, done, total]})
            except OSError as exc:
                raise _ClientGone("the client went away; the task stopped") from exc

        try:
            os.chdir(request["cwd"])  # the client's folder: its paths go to the task as typed, as a local run's do
            with _environment(request.get("env", {})), _umask_of(request["umask"]):
                record = runner.run({"command": request["command"], "args": request["args"]}, progress=report,
                                    summary_width=request["width"], debug=request["debug"],
                                    warned=lambda text: _send_quietly(conn, {"warning": text}),
                                    told=None if wants_json(request["args"]) else lambda text: _send_quietly(conn, {"say": text}))
        except OSError as exc:
            record = {**_refused(f"{shown(request['cwd'])}: cannot work in the client's folder ({exc.strerror}); run the command without --server"),
                      "command": request["command"], "args": request["args"]}
    counted(record)
    try:
        _send(conn, {"record": record})
    except OSError:
        pass  # the client is gone; the record still goes to on_task
    return record
