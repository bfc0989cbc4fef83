"""The site's search index: static JSON files in ``public/search/`` that the search page
reads with no server behind it, built with the site and only where the archive changed.

- ``search/days/DATE.json``: the day's papers (id, title, authors, votes, summary as
  plain text), what results show and their snippets come from. Rewritten when the day's
  digests change.
- ``search/YEAR/``: one segment per year, its terms spread over ``SHARDS`` files by a
  hash of the term (``N.json``: term -> postings) and ``docs.json`` (its days with their
  number of papers, each paper's votes, and ``same``: [doc, earlier doc] for a paper
  listed again on a later day of the year, so a count of results counts it once). A
  segment is made again from its days' files when one of them changed, so a new day
  rebuilds its year and nothing else.
- ``search/index.json``: the segments, each with its paper count and a version that
  changes with its content (the client asks for ``?v=``, so a cache never mixes two).

A query reads ``index.json``, each segment's ``docs.json``, the one shard per segment
that holds each of its terms, and the day files of the results it shows: a small part of
a ten-year archive. Postings are doc numbers within the segment, delta-encoded, each
times two plus one when the term is in the heading (title, authors, id).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from newsletter.archive.cache import Catalog
from newsletter.files import public_folder
from newsletter.models import Archive, Digest
from newsletter.publish import inline
from newsletter.publish.manifest import Manifest, _hash
from newsletter.publish.public_files import write_if_changed
from newsletter.publish.search_text import Entry, shard_of, terms

log = logging.getLogger(__name__)

__all__ = ["FOLDER", "INDEX_NAME", "SHARDS", "entries_of", "read_day", "refresh_index"]

FOLDER = "search"
INDEX_NAME = f"{FOLDER}/index.json"
SHARDS = 256
# Changes whenever what the files hold, or how terms are made, changes.
REVISION = "search-2"
# Days parsed at once while writing day files: bounds memory on a first build.
_BATCH = 60


def entries_of(digests: Iterable[Digest]) -> list[Entry]:
    """The papers of one day's digests, each once, in the order the digests give them."""
    seen: set[str] = set()
    entries = []
    for digest in digests:
        for paper in digest.papers:
            if paper.arxiv_id in seen:
                continue
            seen.add(paper.arxiv_id)
            summary = " ".join(inline.to_text(section.text) for section in paper.sections)
            entries.append(
                Entry(
                    digest.date.isoformat(),
                    paper.arxiv_id,
                    inline.to_text(paper.title),
                    ", ".join(paper.authors),
                    paper.votes or 0,
                    summary,
                )
            )
    return entries


def _day_name(day: str) -> str:
    return f"{FOLDER}/days/{day}.json"


def _dump(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _write(public: Path, name: str, body: object) -> None:
    path = public / name
    public_folder(path.parent)
    write_if_changed(path, _dump(body))


def read_day(public: Path, day: str) -> list[Entry]:
    """The entries of a day file (empty when it is missing or damaged: the segment is
    then made without that day, and the day file rewritten at the next build)."""
    try:
        rows = json.loads((public / _day_name(day)).read_bytes())
        return [Entry.from_json(day, row) for row in rows]
    except (OSError, ValueError, TypeError):
        log.warning("search: %s is missing or damaged", public / _day_name(day))
        return []


def _by_day(archive: Archive) -> dict[dt.date, list[Digest]]:
    found: dict[dt.date, list[Digest]] = {}
    for digest in archive.digests:
        found.setdefault(digest.date, []).append(digest)
    return found


def _batches(items: list[dt.date], size: int) -> Iterator[list[dt.date]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_days(
    catalog: Catalog, manifest: Manifest, days: list[dt.date], stopped: Callable[[], bool]
) -> set[int] | None:
    """Write the stale day files; the years they are in (None when stopped)."""
    stale = []
    for day in days:
        inputs = _hash(REVISION, catalog.fingerprint([day]))
        if not manifest.current(_day_name(day.isoformat()), inputs):
            stale.append((day, inputs))
    inputs_of = dict(stale)
    for batch in _batches([day for day, _ in stale], _BATCH):
        if stopped():
            return None
        by_day = _by_day(catalog.load(batch))
        for day in batch:
            name = _day_name(day.isoformat())
            _write(manifest.public, name, [e.to_json() for e in entries_of(by_day.get(day, []))])
            manifest.record(name, inputs_of[day])
    return {day.year for day, _ in stale}


def _segment(public: Path, year: int, days: list[dt.date]) -> int:
    """Make the year's shards and ``docs.json`` from its day files; its paper count."""
    postings: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    counts: list[list[object]] = []
    votes: list[int] = []
    first: dict[str, int] = {}
    same: list[list[int]] = []
    doc = 0
    for day in days:
        entries = read_day(public, day.isoformat())
        counts.append([day.isoformat(), len(entries)])
        for entry in entries:
            earlier = first.setdefault(entry.arxiv_id, doc)
            if earlier != doc:
                same.append([doc, earlier])
            heading = terms(entry.heading())
            for term in heading | terms(entry.summary):
                gap = doc - last.get(term, 0)
                last[term] = doc
                postings.setdefault(term, []).append(gap * 2 + (term in heading))
            votes.append(entry.votes)
            doc += 1
    shards: list[dict[str, list[int]]] = [{} for _ in range(SHARDS)]
    for term in sorted(postings):
        shards[shard_of(term, SHARDS)][term] = postings[term]
    folder = f"{FOLDER}/{year}"
    written = set()
    for number, shard in enumerate(shards):
        if shard:
            _write(public, f"{folder}/{number}.json", shard)
            written.add(f"{number}.json")
    for name in os.listdir(public / folder):
        # Hidden names are files being written (newsletter.files), maybe by another
        # process building the same site: `newsletter feed` beside a starting service.
        if name not in written and name != "docs.json" and not name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                (public / folder / name).unlink()
    _write(public, f"{folder}/docs.json", {"days": counts, "votes": votes, "same": same})
    return doc


def refresh_index(
    catalog: Catalog, manifest: Manifest, days: list[dt.date], stopped: Callable[[], bool]
) -> bool:
    """Bring ``public/search/`` up to date with ``days`` (every day with papers, oldest
    first); False when stopped (what is done stays recorded)."""
    public = manifest.public
    changed = _write_days(catalog, manifest, days, stopped)
    if changed is None:
        return False
    years: dict[int, list[dt.date]] = {}
    for day in days:
        years.setdefault(day.year, []).append(day)
    segments = []
    for year, in_year in sorted(years.items()):
        name = f"{FOLDER}/{year}/docs.json"
        inputs = _hash(REVISION, str(SHARDS), catalog.fingerprint(in_year))
        count = _recorded_count(public, name)
        if year in changed or count is None or not manifest.current(name, inputs):
            if stopped():
                return False
            count = _segment(public, year, in_year)
            manifest.record(name, inputs)
            log.info("search: indexed %d papers of %d", count, year)
        segments.append([str(year), count, inputs[:12]])
    _write(public, INDEX_NAME, {"v": REVISION, "shards": SHARDS, "segments": segments})
    if not any(entry.sha256.startswith("!") for entry in catalog.entries):
        _remove_gone(manifest, {d.isoformat() for d in days}, {str(y) for y in years})
    return True


def _recorded_count(public: Path, name: str) -> int | None:
    try:
        body = json.loads((public / name).read_bytes())
        return len(body["votes"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _remove_gone(manifest: Manifest, days: set[str], years: set[str]) -> None:
    """Remove the files of days and years the archive no longer holds."""
    root = manifest.public / FOLDER
    with contextlib.suppress(OSError):
        for name in os.listdir(root / "days"):
            if name.removesuffix(".json") not in days:
                (root / "days" / name).unlink()
                manifest.forget(f"{FOLDER}/days/{name}")
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            if name.isdigit() and name not in years:
                shutil.rmtree(root / name, ignore_errors=True)
                manifest.forget(f"{FOLDER}/{name}/docs.json")
