"""Writing the public folder's files: only those whose bytes change, so a rebuild with
nothing new leaves the files (and their ETags) alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from newsletter.files import PUBLIC_FILE, public_folder, write_file

log = logging.getLogger(__name__)

__all__ = ["write_if_changed", "write_public"]


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write a public file atomically unless it already holds exactly these bytes."""
    return write_file(path, data, mode=PUBLIC_FILE, if_changed=True)


def write_public(out: Path, files: Iterable[tuple[str, bytes]], what: str) -> list[Path]:
    """Write each ``(name, bytes)`` into the public folder ``out`` unless the file already
    holds those bytes. Returns the files that changed; ``what`` says what they hold, for
    the log."""
    public_folder(out)
    written = []
    for name, data in files:
        path = out / name
        if write_if_changed(path, data):
            written.append(path)
            log.info("wrote %s (%s, %d bytes)", path, what, len(data))
        else:
            log.info("%s unchanged", path)
    return written
