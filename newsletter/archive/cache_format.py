"""The parse cache's file formats: checked JSON files, and digests as JSON rows.

A checked file's first line holds a format version and the SHA-256 of the rest, which is the
JSON body. A file that fails the check (truncated, edited, written by another version) reads
as missing, so that its caller rebuilds it rather than trust it.

A parsed digest file is kept as ``[[day, [paper row, ...]], ...]``, each paper a flat array
(:func:`digest_rows`): the export writes its output from these rows without making model
objects of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from newsletter.files import PRIVATE_FILE, write_file
from newsletter.models import Digest, Media, Paper, Section

# The parse cache's logger: these warnings are about its files, and are filtered and read
# under its name.
log = logging.getLogger(__name__)

__all__ = ["FORMAT", "digest_rows", "digests_from_rows", "read_checked", "write_checked"]

# Bump when the parser's output or the cache's layout changes: older cache files are then
# rebuilt.
FORMAT = 1


def write_checked(path: Path, body: Any) -> None:
    """Write ``body`` as JSON under a header line with the format and its checksum,
    atomically (temporary file, rename): a reader sees the old file or the new one."""
    data = orjson.dumps(body)
    header = orjson.dumps({"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest()})
    write_file(path, header + b"\n" + data, mode=PRIVATE_FILE)


def read_checked(path: Path) -> Any:
    """The body of a file written by :func:`write_checked`, or None when it is missing,
    of another format, or fails its checksum."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cache file %s unreadable (%s): rebuilding it", path, exc)
        return None
    head, sep, data = raw.partition(b"\n")
    try:
        header = orjson.loads(head) if sep else None
        if (
            isinstance(header, dict)
            and header.get("format") == FORMAT
            and header.get("sha256") == hashlib.sha256(data).hexdigest()
        ):
            return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    log.warning("cache file %s is damaged or of another version: rebuilding it", path)
    return None


def _paper_row(paper: Paper) -> list[Any]:
    media = paper.media
    return [
        paper.arxiv_id,
        paper.title,
        media.kind if media else None,
        media.url if media else None,
        paper.votes,
        list(paper.authors),
        [list(s) for s in paper.sections],
        paper.line,
    ]


def _paper(row: list[Any]) -> Paper:
    arxiv_id, title, kind, url, votes, authors, sections, line = row
    return Paper(
        arxiv_id,
        title,
        Media(kind, url) if kind else None,
        votes,
        tuple(authors),
        tuple([Section(*s) for s in sections]),
        line,
    )


def digest_rows(digests: Iterable[Digest]) -> list[Any]:
    """What the parser made of a file, as the body of its checked file."""
    return [[d.date.isoformat(), [_paper_row(p) for p in d.papers]] for d in digests]


def digests_from_rows(body: Any, path: str) -> list[Digest]:
    """The digests of :func:`digest_rows`' ``body``, read from the file ``path``; TypeError
    or ValueError when ``body`` does not hold digests."""
    return [
        Digest(dt.date.fromisoformat(day), tuple([_paper(p) for p in papers]), (path,))
        for day, papers in body
    ]
