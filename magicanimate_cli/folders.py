"""Folders a step creates, and takes back when the step fails (no empty folders left behind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def missing_folders(folder: Path | str) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what a step that
    writes into ``folder`` would create (``take_back`` removes them again)."""
    missing = []
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def take_back(missing: list[Path]) -> None:
    """Remove the folders of ``missing_folders`` that are still empty, deepest first (a folder
    with something in it, such as a resumable partial result, keeps itself and those above it)."""
    for candidate in missing:
        try:
            candidate.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above it
            break


@contextmanager
def taking_back(folder: Path | str, *, always: bool = False) -> Iterator[list[Path]]:
    """For a body that writes into ``folder``: when it raises (or, with ``always``, whenever it
    ends), remove the folders it created on the way to ``folder`` that are still empty
    (``missing_folders`` before it, then ``take_back``). Yields that list. Folders that existed
    before are never touched."""
    missing = missing_folders(folder)
    try:
        yield missing
    except BaseException:
        take_back(missing)
        raise
    if always:
        take_back(missing)


@contextmanager
def created_folders(folder: Path | str) -> Iterator[Path]:
    """Create ``folder`` (and its missing parents) for the body; if the body raises, remove the
    folders this created that are still empty (``taking_back``)."""
    folder = Path(folder)
    with taking_back(folder):
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
