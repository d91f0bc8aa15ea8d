"""The exceptions a command ends with (``UserError``: a problem the user can fix, exit 2;
``StageFailed`` and ``NetworkError``: exit 1), the warning a run goes on after (``InputWarning``),
and the helpers that keep every message on one line.

A ``UserError`` message is a single line that names the file and the fix; the CLI prints it and
exits 2. Control characters in a message (a newline in a file name, say) are escaped when the error
is created, so no path can split a message. ``shown(path)`` quotes a path with ``repr`` when it
holds such characters (or leading/trailing spaces), and ``first_line(exc)`` gives the first
non-empty line of any exception's text, for ``f"...({first_line(exc)})"``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n`` stays visible but cannot break the line)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def shown(path) -> str:
    """A path as it should appear in a one-line message: as is, or ``repr``-quoted when unusual."""
    text = str(path)
    if _CONTROL.search(text) or text != text.strip():
        return repr(text)
    return text


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (stripped), else the exception's class name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return exc if isinstance(exc, str) else exc.__class__.__name__


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line (exit code 2)."""

    def __init__(self, message: object = "", *args) -> None:
        super().__init__(one_line(message), *args)


class MissingDependency(UserError):
    """An optional stage's library (detectron2, PaddleSeg, ...) is not installed; the message says how."""


class InputWarning(UserWarning):
    """An input that works but is probably not what was meant (a motion that is not DensePose).

    The run goes on; the stage warns as soon as it knows (``warnings.warn``, so a library caller
    can filter it or make it an error) and lists the message in its result's ``warnings``. The CLI
    prints it as one ``warning: ...`` line on stderr (``warn_in_one_line``).
    """


def warn_in_one_line(also=None, *, alone: bool = False) -> None:
    """Show every ``InputWarning`` as one ``warning: <message>`` line on stderr; other warnings as Python does.

    ``also`` (a function of the message's text) receives each one too: ``serve`` sends it to the
    client whose task warned, ``said_warnings`` lists it. Called again, it replaces the installed
    shower instead of stacking on it (still one line per warning), keeping the receivers it had
    (none with ``alone``: a batch task's warnings are its own) and adding ``also``;
    ``warnings.catch_warnings`` around the call restores the one before.
    """
    import sys
    import warnings

    original = warnings.showwarning
    receivers = ()
    if getattr(original, "in_one_line", False):
        if also is None:
            return
        original, receivers = original.shown_before, original.receivers
    receivers = () if alone else receivers
    receivers = (*receivers, also) if also is not None else receivers

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, InputWarning):
            return original(message, category, filename, lineno, file, line)
        print(f"warning: {one_line(message)}", file=file or sys.stderr, flush=True)
        for receiver in receivers:
            receiver(str(message))

    show.in_one_line, show.shown_before, show.receivers = True, original, receivers
    warnings.showwarning = show


@contextmanager
def said_warnings(said: list[str] | None = None, *, alone: bool = False):
    """Inside: every ``InputWarning`` is shown as ``warn_in_one_line`` shows it and its text is
    appended to ``said`` (a new list if none), which this yields: what a command's ``--json`` lists
    in ``warnings`` (``with_warnings``), so a batch job reads there what a person reads on stderr.
    With ``alone`` (a batch task) they are not passed on to the lists and receivers outside.

    Each is shown every time it is given, not once per place in the code (a server's second
    client is warned too), unless a filter of the caller's says otherwise: the rule is appended
    after the filters already there (``PYTHONWARNINGS=error`` or ``ignore``, a library caller's
    ``simplefilter``), which keep their word."""
    import warnings

    said = [] if said is None else said
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning, append=True)
        warn_in_one_line(also=said.append, alone=alone)
        yield said


def with_warnings(data: dict, said) -> dict:
    """``data`` (a result's ``to_dict()``) with ``warnings``: the ones it lists itself (``animate``,
    ``align``, always, ``[]`` for none), then each one ``said`` during the run that it does not
    list, once. Without either, ``data`` as it is (no empty ``warnings`` in every result)."""
    if not said and "warnings" not in data:
        return data
    listed = list(data.get("warnings") or ())
    listed += [text for text in dict.fromkeys(said) if text not in listed]
    return {**data, "warnings": listed}


class NetworkError(Exception):
    """The network failed (no connection, DNS, timeout, a transfer cut off): not bad input, so the
    CLI prints the one-line message and exits 1, and running the command again resumes. A source
    that answers with an error (a 404 for a pinned URL) is a ``UserError`` that says where to put
    the file instead."""


class StageFailed(Exception):
    """The work ran, but its result is not usable (e.g. DensePose found a person in too few frames).

    Not the input's fault in the sense of exit 2: the CLI prints the one-line message (which names
    the file and the fix) and exits 1.
    """


def debugging() -> bool:
    """Whether ``--debug`` asked for the libraries' own output (``show_library_logs`` ran): the
    stages that keep a library's stderr quiet (diffusers and transformers, detectron2) then leave
    it alone. (PaddleSeg's logger writes on stdout, which ``--json`` keeps for its one line.)"""
    import logging

    return logging.getLogger("magicanimate_cli").isEnabledFor(logging.DEBUG)


def show_library_logs() -> None:
    """``--debug``: let through what libraries keep quiet by default (huggingface_hub's download
    retries, the stages' own log lines and warnings, which stay off stderr below DEBUG)."""
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.INFO)
    logging.getLogger("magicanimate_cli").setLevel(logging.DEBUG)
