"""A digest caught while another program rewrites it in place.

A program that rewrites a file without a rename (truncate, then write) leaves moments when
a reader sees an empty file or only its beginning. Taken as it reads then, the day would
drop out of the feed and the site until the next scan. So a file that read well before and
now reads like a cut-off copy of itself (:func:`cut_short`) is given a moment to settle:
while its stat keeps changing it is read again. If it still reads cut off, two cases:

- its own content says so (it no longer parses, a line or a paper is cut off where the
  last good version had none, or no paper is left) and it changed within
  :data:`FRESH_SECONDS`: a writer's half. Its last good parse is kept, with a warning, and
  the file is read again on every scan until it is whole;
- it only holds fewer papers, or it was left that way for longer: what a person made of
  it (a paper removed on purpose, a file saved without its last line break), read as it
  is, with its problems reported.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from newsletter.archive.digest import CUT_OFF

if TYPE_CHECKING:
    from newsletter.archive.cache import FileEntry

log = logging.getLogger(__name__)

__all__ = ["FRESH_SECONDS", "SETTLE_LOOKS", "SETTLE_SECONDS", "cut_short", "settle"]

# A file whose stat holds this long is taken as no longer being written.
SETTLE_SECONDS = 0.2
# At most this many looks (about two seconds) for a file that keeps changing.
SETTLE_LOOKS = 10
# A file that still reads cut off is a writer's half only while this fresh.
FRESH_SECONDS = 60.0


def _papers(entry: FileEntry) -> int:
    return sum(len(papers) for _, papers in entry.days)


def _marks(entry: FileEntry) -> Counter[str]:
    return Counter(p.message for p in entry.problems if p.message in CUT_OFF)


def cut_short(new: FileEntry, old: FileEntry) -> tuple[str, bool] | None:
    """Why ``new`` reads like a cut-off copy of the file ``old`` was, and whether its own
    content says it is cut off (else it only holds fewer papers); None when it does not."""
    had = _papers(old)
    if not had or new.sha256.startswith("!"):
        return None  # nothing good to keep, or a file that cannot be read at all
    if not new.days:
        return (new.problems[0].message if new.problems else "no digest in it"), True
    extra = _marks(new) - _marks(old)
    if extra:
        return next(iter(extra)), True
    has = _papers(new)
    if has == 0:
        return "no paper in it", True
    if has < had:
        return f"{has} papers where it had {had}", False
    return None


def settle(
    found: list[tuple[FileEntry, FileEntry | None]],
    read_again: Callable[[str], FileEntry],
    keepable: Callable[[FileEntry], bool],
) -> list[FileEntry]:
    """What to take for each file just read (``new``, and ``old``, how it read well before,
    or None): ``new``; or, for a file that reads cut off, what ``read_again`` gives once it
    stops changing; or ``old`` while the file is a fresh half and ``keepable(old)`` (its
    parse is still in the cache). All the files settle together: a scan waits at most
    :data:`SETTLE_LOOKS` times :data:`SETTLE_SECONDS`, however many there are."""
    taken = [new for new, _ in found]
    waiting = [(i, old) for i, (new, old) in enumerate(found) if old and cut_short(new, old)]
    for _ in range(SETTLE_LOOKS if waiting else 0):
        time.sleep(SETTLE_SECONDS)
        still = []
        for i, old in waiting:
            new = taken[i]
            try:
                st = os.stat(new.path)
            except OSError:
                continue  # gone: the next scan says so
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != new.stat_key():
                taken[i] = read_again(new.path)
                if cut_short(taken[i], old):
                    still.append((i, old))  # changed, and still cut off: being written
        if not still:
            break
        waiting = still
    return [
        _kept(new, old, keepable) if old else new
        for new, (_, old) in zip(taken, found, strict=True)
    ]


def _kept(new: FileEntry, old: FileEntry, keepable: Callable[[FileEntry], bool]) -> FileEntry:
    """``old`` for a file whose settled content still says it is cut off and that changed
    moments ago; otherwise ``new``, as it is."""
    why = cut_short(new, old)
    if why is None:
        return new
    reason, certain = why
    age = time.time() - new.mtime_ns / 1e9
    if not (certain and age < FRESH_SECONDS and keepable(old)):
        return new
    log.warning(
        "%s looks half-written (%s), changed %.0fs ago: keeping its last good version, "
        "%d papers, until it is whole",
        new.path,
        reason,
        max(age, 0.0),
        _papers(old),
    )
    return old
