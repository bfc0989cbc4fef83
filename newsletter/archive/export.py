"""``newsletter digests --json``: the whole archive as JSON, written as it is read.

The parse cache already holds each file's papers as JSON arrays, so a day that comes from
one file goes from the cache to the output without becoming model objects at all; only a
day spread over several files is merged through :func:`~newsletter.archive.digest.merge_digests`.
One digest a line keeps the output greppable and lets it stream: memory follows one
file, not the archive.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import Any, BinaryIO

import orjson

from newsletter.archive.cache import Catalog, FileEntry, read_checked
from newsletter.archive.digest import merge_digests
from newsletter.models import HF_BASE, Digest

log = logging.getLogger(__name__)

__all__ = ["write_archive_json"]


def _paper_json(row: list[Any]) -> dict[str, Any]:
    """:meth:`Paper.to_json` of a cached paper row."""
    arxiv_id, title, kind, url, votes, authors, sections, _line = row
    return {
        "arxiv_id": arxiv_id,
        "title": title,
        "url": f"https://arxiv.org/abs/{arxiv_id}",
        "hf_url": f"{HF_BASE}/papers/{arxiv_id}",
        "votes": votes,
        "authors": authors,
        "media": {"kind": kind, "url": url} if kind else None,
        "sections": [{"label": s[0], "text": s[1], "level": s[2]} for s in sections],
    }


def _rows(catalog: Catalog, entry: FileEntry) -> dict[dt.date, list[Any]]:
    body = read_checked(catalog.store.parsed_path(entry.sha256))
    if not isinstance(body, list):
        # Gone or damaged: the catalog parses the file again and keeps the result.
        catalog.parsed(entry)
        body = read_checked(catalog.store.parsed_path(entry.sha256)) or []
    return {dt.date.fromisoformat(day): papers for day, papers in body}


def write_archive_json(catalog: Catalog, out: BinaryIO) -> None:
    """``{"digests": [...], "errors": [...]}`` in the shape of :meth:`Archive.to_json`."""
    by_date: dict[dt.date, list[FileEntry]] = defaultdict(list)
    for entry in catalog.entries:
        for day, _ in entry.days:
            by_date[day].append(entry)
    # A file's rows are kept only until its last day has been written.
    last_use: dict[str, dt.date] = {}
    for day in sorted(by_date):
        for entry in by_date[day]:
            last_use[entry.path] = day
    held: dict[str, dict[dt.date, list[Any]]] = {}
    out.write(b'{"digests":[')
    first = True
    for day in sorted(by_date):
        entries = by_date[day]
        if len(entries) == 1:
            entry = entries[0]
            rows = held.get(entry.path) or held.setdefault(entry.path, _rows(catalog, entry))
            data: dict[str, Any] = {
                "date": day.isoformat(),
                "source": entry.path,
                "papers": [_paper_json(p) for p in rows.get(day, [])],
            }
        else:
            parts: list[Digest] = []
            for entry in entries:
                parts.extend(d for d in catalog.parsed(entry) if d.date == day)
            (merged,) = merge_digests(parts)
            data = merged.to_json()
        out.write(b"\n" if first else b",\n")
        first = False
        out.write(orjson.dumps(data))
        for entry in entries:
            if last_use[entry.path] == day:
                held.pop(entry.path, None)
    out.write(b'\n],"errors":')
    out.write(orjson.dumps([p.to_json() for p in catalog.problems]))
    out.write(b"}\n")
    out.flush()
