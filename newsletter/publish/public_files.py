"""Writing the public folder's files: only those whose bytes change, so a rebuild with
nothing new leaves the files (and their ETags) alone; and removing the pages of days and
weeks the archive no longer holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from newsletter.files import PUBLIC_FILE, public_folder, write_file
from newsletter.select import IsoWeek

log = logging.getLogger(__name__)

__all__ = ["remove_pages", "write_if_changed", "write_public"]


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write a public file atomically unless it already holds exactly these bytes."""
    return write_file(path, data, mode=PUBLIC_FILE, if_changed=True)


def write_public(out: Path, files: Iterable[tuple[str, bytes]], what: str) -> list[Path]:
    """Write each ``(name, bytes)`` into the public folder ``out`` unless the file already
    holds those bytes, and its gzip copy ``NAME.gz`` beside it. Returns the files that
    changed (not the copies); ``what`` says what they hold, for the log.

    The copy is for a web server in front (nginx's ``gzip_static``, Caddy's
    ``precompressed``): compressing a large feed for each request would cost it more than
    serving it. It is written first, so it is never older than its file."""
    public_folder(out)
    written = []
    for name, data in files:
        path = out / name
        # mtime=0: the same bytes always compress the same, so the copy is left alone too.
        write_if_changed(out / f"{name}.gz", gzip.compress(data, compresslevel=9, mtime=0))
        if write_if_changed(path, data):
            written.append(path)
            log.info("wrote %s (%s, %d bytes)", path, what, len(data))
        else:
            log.info("%s unchanged", path)
    return written


def remove_pages(public: Path, days: set[dt.date], weeks: set[IsoWeek]) -> list[str]:
    """Remove the day pages (``days/``) and week copies (``issues/``) of any day or week not
    in ``days`` and ``weeks``: the shipped samples once a site has digests of its own, a
    digest deleted. Files named otherwise are left alone. Returns the names removed,
    relative to ``public``."""
    removed: list[str] = []
    for folder, keep in (("days", _day_kept), ("issues", _week_kept)):
        try:
            names = sorted(os.listdir(public / folder))
        except OSError:
            continue
        for name in names:
            if keep(name.split(".", 1)[0], days, weeks) is not False:
                continue
            with contextlib.suppress(FileNotFoundError):
                (public / folder / name).unlink()
            removed.append(f"{folder}/{name}")
            log.info("removed %s: the archive no longer holds it", public / folder / name)
    return removed


def _day_kept(stem: str, days: set[dt.date], weeks: set[IsoWeek]) -> bool | None:
    """Whether the day page ``stem`` stays (None: not a day page)."""
    try:
        return dt.date.fromisoformat(stem) in days
    except ValueError:
        return None


def _week_kept(stem: str, days: set[dt.date], weeks: set[IsoWeek]) -> bool | None:
    """Whether the week copy ``stem`` stays (None: not a week copy)."""
    try:
        return IsoWeek.parse(stem) in weeks
    except ValueError:
        return None
