"""The summary a command prints for a person when it ends (without ``--json``).

A result's ``for_humans()`` (a dict of lines, or a Rich renderable such as a table) when it has one,
else its ``to_dict()`` fields, one ``key: value`` line each (a newline in a value, say in a file
name, is shown escaped). A ``for_humans()`` value that is a list is a block: the key on its own
line, then one line per item (doctor's checks, the files of ``models list``, a run's warnings); a list of numbers
(a size, a box) and a dict (a transform) are one line each, and an empty list is left out. ``show`` prints it on the terminal;
``as_text`` renders the same into plain text of a given width, which a ``magicanimate serve`` sends
to the client that asked for it (``server.py``), so a command prints the same lines either way.
"""

from __future__ import annotations

import io


def show(result, file=None, width: int | None = None, color: bool = True) -> None:
    """Print ``result``'s summary to ``file`` (default stdout)."""
    from rich.console import Console
    from rich.markup import escape

    from .errors import one_line

    console = Console(file=file, soft_wrap=True, width=width, no_color=None if color else True)
    shown = result.for_humans() if hasattr(result, "for_humans") else result.to_dict()
    if not isinstance(shown, dict):
        console.print(shown)
        return
    for key, value in shown.items():
        if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):  # a size, a box: one line
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):  # a transform: one line of name=value
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, (list, tuple)) and not value:  # nothing to list: no empty heading
            continue
        if isinstance(value, (list, tuple)):  # a block: the key, then one line per item
            console.print(f"[bold]{escape(one_line(key))}[/bold]:", highlight=False)
            for line in value:
                console.print(escape(one_line(line)), highlight=False)
        elif value is not None:
            console.print(f"[bold]{escape(one_line(key))}[/bold]: {escape(one_line(value))}", highlight=False)  # a line per field


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_text(result, width: int = 80) -> str:
    """``result``'s summary as plain text, ``width`` columns wide (tables are laid out for it)."""
    buffer = io.StringIO()
    show(result, file=buffer, width=width, color=False)
    return buffer.getvalue()
