"""Folders a step creates, and takes back when the step fails (no empty folders left behind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def created_folders(folder: Path | str) -> Iterator[Path]:
    """Create ``folder`` (and its missing parents) for the body; if the body raises, remove the
    folders this created that are still empty (a resumable partial download inside keeps them).
    Folders that existed before are never touched."""
    folder = Path(folder)
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for candidate in missing:  # deepest first
            try:
                candidate.rmdir()
            except OSError:  # not empty (or gone): keep it and everything above it
                break
        raise
